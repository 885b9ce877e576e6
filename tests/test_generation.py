"""Text to text: generation datasets, T5 as an encoder-decoder, causal LMs fine-tuned on a prompt,
greedy decoding scored by exact match and chrF, and the tables that read those records."""

import json

import numpy as np
import pandas as pd
import pytest

from sweeper.data import DatasetError, load_spec, load_splits
from sweeper.records import PREDICTIONS_NAME
from sweeper.runs import run_dir_of
from sweeper.tasks import get as get_task
from sweeper.train import run_point

DATASETS = ("gettext_en_to_de", "wordnet_reverse_dictionary_noun")
TINY = ("train.max_steps=2", "train.eval_size=8", "train.batch_size=4", "train.max_length=24")


def test_catalogue_generation_splits_are_deduplicated_and_deterministic(tmp_path):
    spec = load_spec("gettext_en_to_de")
    first = load_splits(spec, cache_dir=tmp_path / "a")
    again = load_splits(spec, cache_dir=tmp_path / "b")
    assert set(first) == {"train", "validation", "test"}
    assert first["train"].column_names == ["source", "target"]
    assert (len(first["train"]), len(first["validation"]), len(first["test"])) == (2000, 100, 200)
    for split in first:
        assert first[split]["source"] == again[split]["source"]
    sources = {s: {t.lower() for t in first[s]["source"]} for s in first}
    assert not sources["train"] & sources["test"] and not sources["train"] & sources["validation"]
    assert not sources["validation"] & sources["test"]


def test_catalogue_lists_at_least_30_generation_datasets(capsys):
    from sweeper.data.catalogue import main

    assert main(["--task", "generation"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()[1:] if line.strip()]
    assert len(rows) >= 30
    assert all(row.split()[2] == "generation" for row in rows)


def test_own_files_name_their_two_columns(tmp_path):
    pairs = pd.DataFrame({"en": [f"word {i}" for i in range(40)], "fr": [f"mot {i}" for i in range(40)]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    spec = {"name": "own_pairs", "task": "generation", "source": "files", "path": str(tmp_path / "pairs.csv")}
    splits = load_splits({**spec, "source_field": "en", "target_field": "fr"}, cache_dir=tmp_path / "cache")
    assert sum(len(splits[s]) for s in splits) == 40
    row = splits["test"][0]
    assert row["target"] == row["source"].replace("word", "mot")
    with pytest.raises(DatasetError, match=r"dataset 'own_pairs': missing source column 'source'; available: en, fr"):
        load_splits(spec, cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetError, match="prompt must be a text holding {source}"):
        load_splits({**spec, "source_field": "en", "target_field": "fr", "prompt": "no slot"}, cache_dir=tmp_path)


def test_hub_path_on_a_local_folder_keeps_its_splits(tmp_path):
    """The hub code path (datasets.load_dataset) on local files: given splits kept, validation carved."""
    folder = tmp_path / "hub_pairs"
    folder.mkdir()
    for split, n in (("train", 60), ("test", 12)):
        rows = pd.DataFrame({"question": [f"{split} q{i}" for i in range(n)], "answer": [f"a{i}" for i in range(n)]})
        rows.to_csv(folder / f"{split}.csv", index=False)
    spec = {"name": "hub_pairs", "task": "generation", "source": "hub", "path": str(folder)}
    splits = load_splits({**spec, "source_field": "question", "target_field": "answer"}, tmp_path / "cache")
    assert len(splits["test"]) == 12 and set(splits["test"]["source"]) == {f"test q{i}" for i in range(12)}
    assert len(splits["train"]) + len(splits["validation"]) == 60 and len(splits["validation"]) == 6


def encoded(make_cfg, model: str, max_length: int = 24):
    from sweeper.train.batches import encode_splits
    from sweeper.train.models import build_model

    tiny = [o for o in TINY if not o.startswith("train.max_length=")]
    cfg = make_cfg("dataset=gettext_en_to_de", f"model={model}", *tiny, f"train.max_length={max_length}")
    _, tokenizer = build_model(cfg.model, get_task("generation"))
    train, evals = encode_splits(load_splits(cfg.dataset), tokenizer, cfg, get_task("generation"))
    return train, evals, tokenizer


def test_causal_prompt_takes_no_loss_and_targets_end_in_eos(make_cfg):
    from sweeper.train.batches import collate

    train, _, tokenizer = encoded(make_cfg, "tiny_llama", max_length=64)
    short = [j for j, t in enumerate(train.targets) if t[-1] == tokenizer.sep_token_id][:2]
    batch = collate(train, short, tokenizer.pad_token_id, get_task("generation"))
    for k, j in enumerate(short):
        prompt, length = len(train.prompts[j]), len(train.input_ids[j])
        assert batch["labels"][k, :prompt].eq(-100).all()  # the prompt is given, not learnt
        # HF shifts causal labels itself: labels equal the input ids where the loss counts
        assert batch["labels"][k, prompt:length].tolist() == batch["input_ids"][k, prompt:length].tolist()
        assert batch["labels"][k, length:].eq(-100).all() and batch["attention_mask"][k, length:].eq(0).all()
        reference = tokenizer(train.references[j], add_special_tokens=False)["input_ids"]
        assert len(reference) <= 64  # rows picked short: the whole target, then [SEP] (a BERT text's end)
        assert train.input_ids[j][prompt:] == reference + [tokenizer.sep_token_id]
        assert train.input_ids[j][:prompt] == train.prompts[j]


def test_seq2seq_labels_are_the_target_and_a_cut_target_has_no_eos(make_cfg):
    from sweeper.train.batches import collate

    train, _, tokenizer = encoded(make_cfg, "tiny_t5", max_length=4)
    batch = collate(train, list(range(8)), tokenizer.pad_token_id, get_task("generation"))
    for j in range(8):
        reference = tokenizer(train.references[j], add_special_tokens=False)["input_ids"]
        expected = reference + [tokenizer.sep_token_id] if len(reference) <= 4 else reference[:4]
        assert train.targets[j] == expected  # cut at max_length: no EOS (stopping there is not the answer)
        assert batch["labels"][j, : len(expected)].tolist() == expected
        assert train.input_ids[j] == train.prompts[j]  # the encoder reads the prompt only
    assert any(len(t) == 4 and t[-1] != tokenizer.sep_token_id for t in train.targets[:8])


def test_decoding_keeps_only_the_new_tokens_up_to_eos(make_cfg):
    """A stand-in model whose generate() appends known tokens, then EOS and padding: the outputs
    are exactly those tokens' text (no prompt, nothing after EOS), in row order, batch after batch."""
    import torch

    from sweeper.train.evaluate import generate
    from sweeper.train.runtime import setup_runtime

    _, evals, tokenizer = encoded(make_cfg, "tiny_llama")
    test = evals["test"]
    answers = [f"answer {i}" for i in range(len(test.prompts))]

    pad, eos = tokenizer.pad_token_id, tokenizer.sep_token_id
    seen: list = []

    class Echo:
        def generate(self, input_ids, attention_mask, **kwargs):
            assert attention_mask[:, -1].eq(1).all()  # left padding: every prompt ends at the last column
            assert (kwargs["eos_token_id"], kwargs["pad_token_id"]) == (eos, pad)
            rows = []
            for ids in input_ids:
                answer = tokenizer(answers[len(seen)], add_special_tokens=False)["input_ids"]
                seen.append(answer)
                rows.append(ids.tolist() + answer + [eos, pad, pad])
            width = max(map(len, rows))
            return torch.tensor([r + [pad] * (width - len(r)) for r in rows])

    runtime = setup_runtime(make_cfg().train)
    outputs = generate(Echo(), test, range(0, 3), tokenizer.pad_token_id, runtime)
    outputs += generate(Echo(), test, range(3, 5), tokenizer.pad_token_id, runtime)
    assert outputs == answers[:5]


@pytest.mark.parametrize("model", ["minilm", "lstm"])
def test_a_model_that_produces_no_text_is_a_one_line_error(make_cfg, model):
    record = run_point(make_cfg("dataset=gettext_en_to_de", f"model={model}", *TINY))
    assert record["status"] == "failed"
    assert f"model '{model}'" in record["error"] and "cannot do task generation" in record["error"]
    assert "\n" not in record["error"]


def test_tiny_grid_writes_generation_records_and_the_report_reads_them(make_cfg, tmp_path):
    """The issue's grid (2 datasets x tiny_t5, tiny_llama x lora, full) plus qlora and relora."""
    from sweeper.results.report import main as report

    points = [(d, m, method) for d in DATASETS for m in ("tiny_t5", "tiny_llama") for method in ("lora", "full")]
    points += [(DATASETS[1], "tiny_t5", "qlora"), (DATASETS[1], "tiny_llama", "relora")]
    for dataset, model, method in points:
        extra = ["method.merge_every=1", "train.max_steps=3"] if method == "relora" else []
        record = run_point(make_cfg(f"dataset={dataset}", f"model={model}", f"method={method}", *TINY, *extra))
        assert record["status"] == "ok", (dataset, model, method, record.get("error"))
        for split in ("validation", "test"):
            scores = record["metrics"][split]
            assert 0 <= scores["exact_match"] <= 1 and 0 <= scores["chrf"] <= 100 and scores["n"] == 8
        assert record["metrics"]["chrf"] == record["metrics"]["test"]["chrf"]
        assert len(record["examples"]) == 5 and set(record["examples"][0]) == {"source", "reference", "output"}
        run_dir = tmp_path / "results" / "runs" / record["run_id"]
        predictions = pd.read_parquet(run_dir / PREDICTIONS_NAME)
        assert list(predictions.columns) == ["row", "label", "pred", "chrf"]
        assert predictions["pred"].tolist()[:5] == [e["output"] for e in record["examples"]]
        if method in ("lora", "qlora"):
            config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
            assert config["task_type"] == ("SEQ_2_SEQ_LM" if model == "tiny_t5" else "CAUSAL_LM")
    assert report([str(tmp_path / "results"), "--out", str(tmp_path / "report")]) == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "## generation: test chrf" in summary and "paired-t" in summary
    best = pd.read_csv(tmp_path / "report" / "best.csv")
    assert set(best["dataset"]) == set(DATASETS) and set(best["metric"]) == {"chrf"}
    assert (tmp_path / "report" / "heatmap_generation.png").exists()


def test_generation_points_are_never_packed_and_fsdp_refuses_them(make_cfg, capsys):
    from sweeper.train.errors import TrainingError
    from sweeper.train.methods import build_method
    from sweeper.train.pack import group_points, pack_key
    from sweeper.train.sharding import check_parallel

    cfgs = [make_cfg("dataset=gettext_en_to_de", "model=tiny_llama", f"method.r={r}") for r in (2, 4)]
    assert pack_key(cfgs[0]) is None
    assert group_points(cfgs, size=2) == [[0], [1]]
    assert "sweeper.pack=2: 2 point(s) train alone: task generation is not packable" in capsys.readouterr().err
    cfg = make_cfg("dataset=gettext_en_to_de", "model=tiny_llama", "train.nproc=2", "train.parallel=fsdp")
    with pytest.raises(TrainingError, match="fsdp does not decode"):
        check_parallel(cfg.train, build_method(cfg.method, cfg.model, get_task("generation")), cfg.model)


def test_paired_test_on_sentence_chrf(tmp_path):
    from sweeper.results.significance import Side, compare_points

    rng = np.random.default_rng(0)
    references = [f"ref {i}" for i in range(60)]
    for name, chrf in [("good", rng.uniform(60, 90, 60)), ("poor", rng.uniform(10, 40, 60))]:
        (tmp_path / name).mkdir()
        frame = pd.DataFrame({"row": np.arange(60), "label": references, "pred": references, "chrf": chrf})
        frame.to_parquet(tmp_path / name / PREDICTIONS_NAME)
    good = Side(mean=75.0, seeds=(0,), run_dirs=(str(tmp_path / "good"),))
    poor = Side(mean=25.0, seeds=(0,), run_dirs=(str(tmp_path / "poor"),))
    outcome = compare_points(good, poor, higher_is_better=True, tol=0.005)
    assert (outcome.outcome, outcome.test) == ("win", "paired-t") and outcome.p_value < 1e-6
    assert (
        compare_points(good, good, True, 0.005).outcome == "tie"
    )  # every pred equals every label: EM is no tie-breaker


@pytest.mark.slow
def test_lora_on_smollm2_learns_an_easy_generation_task_and_its_adapter_reloads(make_cfg):
    """Untuned SmolLM2 answers a package description with prose; 12 LoRA steps teach it the
    package name (chrF 15 -> ~60 when measured). The saved adapter, reloaded on a fresh base with
    PeftModel.from_pretrained, regenerates the test outputs with the record's chrF."""
    from peft import PeftModel

    from sweeper.train.batches import encode_splits
    from sweeper.train.evaluate import evaluate
    from sweeper.train.models import build_model
    from sweeper.train.runtime import setup_runtime

    settings = ("dataset=debian_package_name_python", "model=smollm2", "train.batch_size=4", "train.max_length=32")
    settings += ("train.eval_size=16", "train.warmup_steps=2", "method.lr=5e-3")
    untuned = run_point(make_cfg(*settings, "train.max_steps=0"))  # LoRA's B starts at 0: the base model
    cfg = make_cfg(*settings, "train.max_steps=12")
    tuned = run_point(cfg)
    assert untuned["status"] == "ok" and tuned["status"] == "ok", (untuned.get("error"), tuned.get("error"))
    assert tuned["metrics"]["test"]["chrf"] >= untuned["metrics"]["test"]["chrf"] + 20, (untuned, tuned)

    base, tokenizer = build_model(cfg.model, get_task("generation"))
    model = PeftModel.from_pretrained(base, run_dir_of(cfg) / "adapter")
    _, evals = encode_splits(load_splits(cfg.dataset), tokenizer, cfg, get_task("generation"))
    runtime = setup_runtime(cfg.train)
    scores = evaluate(
        model, evals["test"], get_task("generation"), tokenizer.pad_token_id, cfg.train.eval_batch_size, runtime
    )
    assert scores["chrf"] == pytest.approx(tuned["metrics"]["test"]["chrf"], abs=1e-6)
    assert scores["exact_match"] == tuned["metrics"]["test"]["exact_match"]


def test_two_ranks_weigh_generation_losses_by_target_tokens(make_cfg, tmp_path):
    """Targets of uneven length: each rank's mean over its own target tokens is weighed by its share
    of the global batch's tokens, so two ranks make the one-process updates."""
    from tests.test_distributed import LOSS_TOL, losses

    point = (
        "dataset=gettext_en_to_de",
        "model=tiny_llama",
        "method.dropout=0",
        *TINY,
        "train.batch_size=7",
        "train.log_every=1",
    )
    solo = run_point(make_cfg(*point, "train.max_steps=4", f"sweeper.results_dir={tmp_path}/one"))
    ranks = run_point(make_cfg(*point, "train.max_steps=4", "train.nproc=2", f"sweeper.results_dir={tmp_path}/two"))
    assert solo["status"] == ranks["status"] == "ok", ranks.get("error")
    assert ranks["worker"]["world_size"] == 2
    assert losses(ranks) == pytest.approx(losses(solo), abs=LOSS_TOL)
    for split in ("validation", "test"):
        assert ranks["metrics"][split]["loss"] == pytest.approx(solo["metrics"][split]["loss"], abs=LOSS_TOL)
