"""The multilabel task: a set of labels per text, through the same seam as the other tasks (data,
model head, BCE, metrics, tfidf one-vs-rest, predictions, report, early stopping, packing)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from sweeper.data import DatasetError, load_splits
from sweeper.records import PREDICTIONS_NAME
from sweeper.tasks.multilabel import multilabel_metrics, row_f1
from sweeper.train.pack import run_packed
from sweeper.worker import run_point

TINY = ("model=tiny_llama", "train.max_steps=3", "train.eval_size=48", "train.batch_size=8", "train.max_length=32")
ANIMALS = ["cat", "dog", "bird"]


def tagged_rows(n: int = 90) -> list[tuple[str, str]]:
    """Texts naming one to three animals; their tags say which (';'-joined)."""
    rows = []
    for i in range(n):
        present = [a for k, a in enumerate(ANIMALS) if (i >> k) & 1] or [ANIMALS[i % 3]]
        rows.append((f"note {i} about the {' and the '.join(present)}", ";".join(present)))
    return rows


def own_spec(tmp_path: Path, rows, **extra) -> dict:
    path = tmp_path / "tagged.csv"
    pd.DataFrame(rows, columns=["text", "tags"]).to_csv(path, index=False)
    return {"name": "tagged", "family": "own", "task": "multilabel", "source": "files", "path": str(path),
            "label_field": "tags", "label_sep": ";", **extra}  # fmt: skip


def test_metrics_match_their_definitions():
    from sklearn.metrics import f1_score

    truth = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]]
    preds = [[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0]]
    scores = multilabel_metrics(truth, preds, ["a", "b", "c"])
    assert scores["micro_f1"] == pytest.approx(f1_score(truth, preds, average="micro"))
    assert scores["macro_f1"] == pytest.approx(f1_score(truth, preds, average="macro", zero_division=0))
    assert scores["subset_accuracy"] == 0.5 and scores["n"] == 4
    assert scores["micro_f1"] == pytest.approx(0.8)  # 4 right labels, 1 too many, 1 missed
    assert scores["per_label_f1"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.0})
    assert row_f1(np.array(truth, bool), np.array(preds, bool)).tolist() == pytest.approx([2 / 3, 2 / 3, 1.0, 1.0])


def test_bring_your_own_csv_builds_label_lists(tmp_path):
    ds = load_splits(own_spec(tmp_path, tagged_rows()), tmp_path / "cache")
    names = ds["train"].features["label"].feature.names
    assert names == sorted(ANIMALS)
    rows = [r for split in ds.values() for r in split]
    assert sum(len(split) for split in ds.values()) == 90
    for row in rows:  # every label a text names is in its set, and no other
        assert sorted(names[i] for i in row["label"]) == sorted(a for a in ANIMALS if f"the {a}" in row["text"])
    assert any(len(row["label"]) > 1 for row in rows)


@pytest.mark.parametrize(
    "case, words",
    [
        ("empty_set", ["dataset 'tagged'", "row 3 of column 'tags' has an empty label set", "allow_empty"]),
        ("single_label", ["dataset 'tagged'", "a single label (cat)", "classification"]),
        ("separator_nowhere", ["dataset 'tagged'", "label_sep '|' appears in no row of column 'tags'"]),
    ],
)
def test_bad_multilabel_input_is_one_line_in_the_record(case, words, make_cfg, tmp_path):
    rows = tagged_rows()
    extra = {}
    if case == "empty_set":
        rows[3] = (rows[3][0], "")
    elif case == "single_label":
        rows = [(text, "cat") for text, _ in rows]  # and one dog, under min_count=2
        rows[0] = (rows[0][0], "cat;dog")
    else:
        extra = {"label_sep": "|"}
    cfg = make_cfg(*TINY)
    cfg.dataset = OmegaConf.create(own_spec(tmp_path, rows, **extra))
    record = run_point(cfg)
    assert record["status"] == "failed" and record["error_type"] == "DatasetError", record
    assert "\n" not in record["error"]
    for word in words:
        assert word in record["error"], (word, record["error"])


def test_allow_empty_keeps_rows_without_a_label(tmp_path):
    """A blank cell, and a cell holding only labels outside `labels` (a fish): examples of no label
    with allow_empty; without it, the fish row is simply no example of the task."""
    rows = tagged_rows()
    rows[3] = (rows[3][0], "")
    rows[5] = ("a note about the fish", "fish;eel")
    kept = load_splits(own_spec(tmp_path, rows, labels=ANIMALS, allow_empty=True), tmp_path / "cache")
    assert sum(row["label"] == [] for split in kept.values() for row in split) == 2
    rows[3] = (rows[3][0], "cat")
    dropped = load_splits(own_spec(tmp_path, rows, labels=ANIMALS), tmp_path / "cache")
    assert sum(len(split) for split in dropped.values()) == 89
    assert all(row["label"] for split in dropped.values() for row in split)


def test_a_sweep_point_per_method_scores_micro_f1_and_saves_row_scores(make_cfg):
    records = {}
    for method in ("lora", "full", "tfidf"):
        record = run_point(make_cfg(*TINY, "dataset=debian_tags_culture", f"method={method}"))
        assert record["status"] == "ok", record.get("error")
        records[method] = record
        for split in ("validation", "test"):
            scores = record["metrics"][split]
            assert 0 <= scores["micro_f1"] <= 1 and 0 <= scores["subset_accuracy"] <= 1
            assert len(scores["per_label_f1"]) == 6
        predictions = pd.read_parquet(Path(record["record_path"]).with_name(PREDICTIONS_NAME))
        assert list(predictions.columns) == ["row", "label", "pred", "f1"]
        assert predictions["f1"].between(0, 1).all() and len(predictions) == record["metrics"]["n_test"]
    assert records["tfidf"]["model"] == "none"

    from sweeper.results import baselines, collect, tables

    summary = tables.summarize(collect.load_records(Path(records["lora"]["record_path"]).parents[2]))
    assert set(summary["metric"]) == {"micro_f1"} and set(summary["task"]) == {"multilabel"}
    table = baselines.comparisons(tables.method_points(summary), summary, "tfidf")
    assert len(table) == 2 and set(table["test"]) == {"paired-t"}  # tfidf is their baseline; row F1s pair up
    assert set(table["outcome"]) <= {"win", "tie", "loss"}


def test_early_stopping_watches_micro_f1(make_cfg):
    record = run_point(make_cfg(*TINY, "dataset=debian_tags_culture", "train.max_steps=6", "train.eval_every=2"))
    assert record["status"] == "ok", record.get("error")
    assert record["train"]["best_step"] in (2, 4, 6)
    # the best step's weights are the ones scored at the end: validation's micro-F1 is the watched one
    assert record["train"]["best_validation"] == pytest.approx(record["metrics"]["validation"]["micro_f1"])


def test_label_sets_of_different_widths_share_a_pack(make_cfg, tmp_path):
    """culture (6 labels) and game (5): one base, heads and label rows zero-padded to the widest."""
    cfgs = [
        make_cfg(*TINY, f"dataset={name}", f"sweeper.results_dir={tmp_path}", "method.dropout=0")
        for name in ("debian_tags_culture", "debian_tags_game")
    ]
    packed = run_packed(cfgs)
    alone = [
        run_point(make_cfg(*TINY, f"dataset={n}", "method.dropout=0"))
        for n in ("debian_tags_culture", "debian_tags_game")
    ]
    for p, a in zip(packed, alone):
        assert p["status"] == a["status"] == "ok", (p.get("error"), a.get("error"))
        assert p["pack"]["size"] == 2
        assert p["metrics"]["test"]["loss"] == pytest.approx(a["metrics"]["test"]["loss"], abs=1e-5)
        assert p["metrics"]["micro_f1"] == pytest.approx(a["metrics"]["micro_f1"], abs=1e-9)


def test_two_ranks_train_a_multilabel_point_as_one_process(make_cfg, tmp_path):
    """DDP (train.nproc=2, gloo): the float label rows split over the ranks like class labels do."""
    steps = ("dataset=debian_tags_culture", "method.dropout=0", "train.max_steps=4", "train.batch_size=7")
    solo = run_point(make_cfg(*TINY, *steps, f"sweeper.results_dir={tmp_path}/one"))
    ranks = run_point(make_cfg(*TINY, *steps, "train.nproc=2", f"sweeper.results_dir={tmp_path}/two"))
    assert solo["status"] == ranks["status"] == "ok", ranks.get("error")
    assert ranks["worker"]["world_size"] == 2
    for split in ("validation", "test"):
        assert ranks["metrics"][split]["loss"] == pytest.approx(solo["metrics"][split]["loss"], abs=1e-5)
        assert ranks["metrics"][split]["micro_f1"] == pytest.approx(solo["metrics"][split]["micro_f1"], abs=0.01)


def test_halving_ranks_multilabel_points_by_validation_micro_f1(tmp_path):
    from sweeper.launch.halving import Entry, promote
    from sweeper.records import append_rung

    entries = []
    for name, micro_f1, accuracy in [("low", 0.2, 0.9), ("high", 0.7, 0.1)]:  # accuracy is no multilabel score
        (tmp_path / name).mkdir()
        append_rung(tmp_path / name, 0, 2, {"micro_f1": micro_f1, "accuracy": accuracy, "loss": 1.0})
        entries.append(Entry(["seed=0"], tmp_path / name, ("d", "m"), name, "multilabel", 6))
    survivors, waiting = promote(entries, rung=0, budget=2, eta=2)
    assert [e.run_dir.name for e in survivors] == ["high"] and not waiting


def test_a_label_left_without_train_rows_is_one_line(tmp_path):
    """The eel's two rows say one text twice with two label sets: dedupe drops both, so after the
    split no train row holds the eel although the input had min_count of it."""
    rows = [*tagged_rows(), ("a note about the eel", "eel;cat"), ("a note about the eel", "eel")]
    with pytest.raises(DatasetError, match=r"dataset 'tagged': label\(s\) eel have no train row after the split"):
        load_splits(own_spec(tmp_path, rows), tmp_path / "cache")


def test_tfidf_counts_weights_when_a_label_is_constant_in_train():
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from sweeper.train.methods.tfidf import classifier_size

    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])  # the second label is never true: a constant predictor
    with pytest.warns(UserWarning, match="present in all training examples"):
        model = OneVsRestClassifier(LogisticRegression()).fit(x, y)
    assert classifier_size(model) == (3, 2)  # one label's 2 weights + intercept; the constant has none


def test_fsdp_early_stopping_shares_the_numeric_scores(make_cfg, tmp_path):
    """FSDP ranks agree on rank 0's validation scores; per_label_f1 (a dict) is not sent."""
    overrides = ("dataset=debian_tags_culture", "method=full", "train.max_steps=4", "train.eval_every=2")
    record = run_point(make_cfg(*TINY, *overrides, "train.nproc=2", "train.parallel=fsdp"))
    assert record["status"] == "ok", record.get("error")
    assert record["worker"]["parallel"] == "fsdp" and record["train"]["best_step"] in (2, 4)
