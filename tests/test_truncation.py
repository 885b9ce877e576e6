"""train.truncation: what a classification text longer than train.max_length keeps, on real tokenizers."""

from sweeper.config import compose
from sweeper.train import run_point
from sweeper.train.batches import encode_classification
from sweeper.train.models import build_tokenizer

LONG = "alpha beta gamma " + "filler " * 300 + "this package contains the development files"
SHORT = "a short package description"


def tokenizer_of(model: str):
    return build_tokenizer(compose(f"model={model}").model)


def encode(tokenizer, texts, max_length, truncation):
    return encode_classification({"text": texts, "label": [0] * len(texts)}, tokenizer, max_length, truncation)


def test_head_tail_keeps_the_start_and_the_end_within_max_length():
    tokenizer = tokenizer_of("minilm")
    ids = encode(tokenizer, [LONG], 16, "head_tail").input_ids[0]
    assert len(ids) == 16
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    words = tokenizer.decode(ids[1:-1]).split()
    assert words[:3] == ["alpha", "beta", "gamma"]  # the head: first 7 of the 14 body tokens
    assert words[-4:] == ["contains", "the", "development", "files"]  # the tail: last 7
    head = encode(tokenizer, [LONG], 16, "head").input_ids[0]
    assert len(head) == 16 and "files" not in tokenizer.decode(head)


def test_texts_that_fit_are_encoded_alike_by_both_rules():
    tokenizer = tokenizer_of("minilm")
    assert encode(tokenizer, [SHORT], 64, "head_tail").input_ids == encode(tokenizer, [SHORT], 64, "head").input_ids
    assert encode(tokenizer, [SHORT], 64, "head").input_ids == [tokenizer(SHORT)["input_ids"]]


def test_head_tail_on_a_tokenizer_without_cls_and_sep():
    tokenizer = tokenizer_of("smollm2")  # Llama-style: whatever it adds around a text stays around it
    plain = tokenizer(SHORT)["input_ids"]
    ids = encode(tokenizer, [LONG], 12, "head_tail").input_ids[0]
    assert len(ids) == 12
    assert tokenizer.decode(ids).strip().endswith("development files")
    assert encode(tokenizer, [SHORT], 64, "head_tail").input_ids == [plain]


def test_an_unknown_truncation_is_a_one_line_failed_record(make_cfg):
    cfg = make_cfg("dataset=fortune_computers_vs_rest", "model=tiny_llama", "train.max_steps=1",
                   "train.truncation=middle")  # fmt: skip
    record = run_point(cfg)
    assert record["status"] == "failed"
    assert "train.truncation" in record["error"] and "'middle'" in record["error"] and "\n" not in record["error"]


def test_truncation_enters_the_run_id(make_cfg):
    from sweeper.runs import make_run_id

    assert make_run_id(make_cfg("train.truncation=head")) != make_run_id(make_cfg("train.truncation=head_tail"))
    assert make_cfg().train.truncation == "head_tail"  # the default recipe (BENCHMARKS.md)
