"""The data layer: the committed catalogue, bring-your-own files, the hub path, validation errors
and the cache. Caches live in tmp_path; nothing here needs the network."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from sweeper import paths
from sweeper.data import DatasetError, load_spec, load_splits, resolve_dataset_name, spec_names
from sweeper.data.pools import text_key


def texts(ds) -> set[str]:
    """The dedupe keys of a split (case and whitespace folded), computed with arrow kernels."""
    return set(text_key(pd.Series(ds.data.column("text").to_pylist(), dtype=object)))


# ---------------------------------------------------------------- the catalogue
def test_catalogue_materialises(tmp_path):
    """Every committed spec builds: non-empty splits, >= 2 labels, no text in both train and test."""
    names = spec_names()
    specs = {name: load_spec(name) for name in names}
    families = Counter()
    for name, spec in specs.items():
        assert spec["name"] == name and name.startswith(spec["family"] + "_"), name
        families[spec["family"]] += 1
        ds = load_splits(spec, tmp_path)
        if spec["task"] == "lm":
            assert list(ds) == ["train", "validation", "test"], name
            held = texts(ds["validation"]) | texts(ds["test"])
            assert len(ds["test"]) > 0 and not texts(ds["train"]) & held, name
            continue
        if spec["task"] == "generation":  # one split per source text; sizes within the generation caps
            sources = {s: {t.lower() for t in ds[s]["source"]} for s in ds}
            assert all(len(ds[s]) > 0 for s in ds) and len(ds["test"]) <= 200, name
            assert not sources["train"] & (sources["validation"] | sources["test"]), name
            continue
        assert list(ds) == ["train", "validation", "test"], name
        assert all(len(ds[s]) > 0 for s in ds), name
        assert len(ds["test"]) <= 500 and len(ds["train"]) <= 2000, name
        assert not texts(ds["train"]) & texts(ds["test"]), name
        if spec["task"] == "multilabel":  # a list of labels per row: >= 2 labels seen in train
            label_names = ds["train"].features["label"].feature.names
            assert len(label_names) >= 2 and len({i for row in ds["train"]["label"] for i in row}) >= 2, name
            continue
        label_names = ds["train"].features["label"].names
        assert len(label_names) >= 2 and len(set(ds["train"]["label"])) >= 2, name
    n_clf = sum(spec["task"] == "classification" for spec in specs.values())
    assert n_clf >= 200, n_clf
    assert sum(spec["task"] == "multilabel" for spec in specs.values()) >= 15
    assert {"fortune_computers_vs_rest", "austen_lm"} <= set(names)
    assert set(families) >= {"fortune", "wordnet", "debian", "langid", "austen", "food"}


def test_default_dataset_and_globs():
    spec = load_spec("fortune_computers_vs_rest")
    assert (spec["family"], spec["task"], spec["rule"], spec["positive"]) == (
        "fortune",
        "classification",
        "one_vs_rest",
        "computers",
    )
    assert len(spec_names("fortune_*")) >= 29 and len(spec_names("wordnet_*")) >= 30
    assert len(spec_names("*langid*")) >= 10 and len(spec_names("*_vs_rest")) >= 100


def test_lm_holds_out_persuasion(tmp_path):
    ds = load_splits(load_spec("austen_lm"), tmp_path)
    assert list(ds) == ["train", "validation", "test"] and list(ds["train"].features) == ["text"]
    assert any("Anne Elliot" in t for t in ds["validation"]["text"][:50])
    assert not texts(ds["validation"]) & texts(ds["test"])  # Persuasion, first half / second half
    assert not any("Anne Elliot" in t for t in ds["train"]["text"])


def test_deterministic_given_seed(tmp_path):
    spec = load_spec("fortune_computers_vs_rest")
    a = load_splits(spec, tmp_path / "a")["test"]["text"]
    b = load_splits(spec, tmp_path / "b")["test"]["text"]
    c = load_splits({**spec, "seed": 1}, tmp_path / "a")["test"]["text"]
    assert a == b and a != c


def test_accepts_dictconfig(tmp_path):
    from omegaconf import OmegaConf

    ds = load_splits(OmegaConf.create(load_spec("wordnet_pos")), tmp_path)
    assert ds["train"].features["label"].names == ["adj", "adv", "noun", "verb"]


# ---------------------------------------------------------------- cache
def test_second_load_served_from_cache(tmp_path, monkeypatch):
    spec = load_spec("fortune_linux_vs_rest")
    first = load_splits(spec, tmp_path)
    [folder] = [p for p in tmp_path.iterdir() if p.name.startswith("fortune_linux_vs_rest-")]
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    import sweeper.data.cache

    def boom(*a, **k):
        raise AssertionError("re-materialised")

    monkeypatch.setattr(sweeper.data.cache, "build_frames", boom)
    second = load_splits(spec, tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert second["test"]["text"] == first["test"]["text"]
    with pytest.raises(AssertionError, match="re-materialised"):  # a changed spec is a new key
        load_splits({**spec, "seed": 7}, tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


# ---------------------------------------------------------------- bring your own
def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    pd.DataFrame(rows, columns=list(header)).to_csv(path, index=False)
    return path


def review_rows(n: int = 120) -> list[tuple[str, str]]:
    words = ["good", "bad", "fine"]
    return [(f"review number {i} says it was {words[i % 3]}", words[i % 3]) for i in range(n)]


def test_files_single_csv_carves_splits(tmp_path):
    path = write_csv(tmp_path / "mine.csv", review_rows() + review_rows(6))  # 6 repeats: deduped
    spec = {"name": "mine", "family": "custom", "task": "classification", "source": "files", "path": str(path)}
    ds = load_splits(spec, tmp_path / "cache")
    assert ds["train"].features["label"].names == ["bad", "fine", "good"]
    assert sum(len(ds[s]) for s in ds) == 120
    assert len(ds["test"]) == 24 and len(ds["validation"]) == 12
    assert not texts(ds["train"]) & texts(ds["test"])
    again = load_splits(spec, tmp_path / "cache2")
    assert again["test"]["text"] == ds["test"]["text"]


def test_files_data_files_jsonl_and_custom_fields(tmp_path):
    rows = [{"body": f"sentence {i} " + ("yes" if i % 2 else "no"), "y": i % 2} for i in range(60)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    spec = {
        "name": "jl",
        "family": "custom",
        "task": "classification",
        "source": "files",
        "text_field": "body",
        "label_field": "y",
        "data_files": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl")},
    }
    ds = load_splits(spec, tmp_path / "cache")
    assert ds["train"].features["label"].names == ["0", "1"]
    assert len(ds["test"]) == 10  # given splits are kept whole
    assert len(ds["train"]) + len(ds["validation"]) == 50  # test texts left train
    assert not texts(ds["train"]) & texts(ds["test"])


def test_hub_path_on_a_local_folder(tmp_path):
    folder = tmp_path / "hubby"
    folder.mkdir()
    write_csv(folder / "train.csv", review_rows(90))
    write_csv(folder / "test.csv", [(f"held out {i} was {w}", w) for i, (_, w) in enumerate(review_rows(30))])
    spec = {"name": "hubby", "family": "custom", "task": "classification", "source": "hub", "path": str(folder)}
    ds = load_splits(spec, tmp_path / "cache")
    assert len(ds["test"]) == 30 and len(ds["train"]) + len(ds["validation"]) == 90
    assert ds["train"].features["label"].names == ["bad", "fine", "good"]


# ---------------------------------------------------------------- validation errors
def files_spec(tmp_path, name="bad", **files) -> dict:
    return {
        "name": name,
        "family": "custom",
        "task": "classification",
        "source": "files",
        "data_files": {k: str(v) for k, v in files.items()},
    }


def error_cases(tmp_path: Path) -> dict[str, tuple[dict, str]]:
    rows = review_rows(60)
    ok = write_csv(tmp_path / "ok.csv", rows)
    cases = {
        "missing_column": (
            files_spec(tmp_path, train=write_csv(tmp_path / "c.csv", rows, ("body", "label"))),
            "missing text column 'text'; available: body, label",
        ),
        "empty_split": (
            files_spec(tmp_path, train=ok, validation=write_csv(tmp_path / "e.csv", [])),
            "split 'validation' is empty",
        ),
        "single_label": (
            files_spec(tmp_path, train=write_csv(tmp_path / "s.csv", [(t, "good") for t, _ in rows])),
            "a single label in train (good)",
        ),
        "unseen_test_label": (
            files_spec(tmp_path, train=ok, test=write_csv(tmp_path / "u.csv", [("odd one", "weird")])),
            "labels in test unseen in train: weird",
        ),
        "unknown_pool": (
            {**load_spec("fortune_computers_vs_rest"), "name": "bad", "pool": "nope"},
            "unknown pool 'nope'; available: ",
        ),
        "unknown_label_value": (
            {**load_spec("fortune_computers_vs_rest"), "name": "bad", "positive": "computerz"},
            "unknown label value(s) computerz in column 'category'",
        ),
    }
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\xe9 cr\xe8me,good\n".encode("latin-1"))
    cases["non_utf8"] = (files_spec(tmp_path, train=tmp_path / "latin1.csv"), "is not UTF-8")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    cases["unreadable"] = (files_spec(tmp_path, train=tmp_path / "broken.parquet"), "cannot read")
    cases["missing_file"] = (files_spec(tmp_path, train=tmp_path / "absent.csv"), "file not found")
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "missing_column",
        "empty_split",
        "single_label",
        "unseen_test_label",
        "unknown_pool",
        "unknown_label_value",
        "non_utf8",
        "unreadable",
        "missing_file",
    ],
)
def test_validation_errors(tmp_path, case):
    spec, expected = error_cases(tmp_path)[case]
    with pytest.raises(DatasetError) as err:
        load_splits(spec, tmp_path / "cache")
    message = str(err.value)
    assert message.startswith("dataset 'bad': ") and "\n" not in message, message
    assert expected in message, message


def test_unknown_name_suggests_close_ones():
    assert (
        resolve_dataset_name("fortune_computers_vs_rest")
        == paths.CONF_DIR / "dataset" / "fortune_computers_vs_rest.yaml"
    )
    with pytest.raises(
        DatasetError,
        match=r"^dataset 'fortune_computer_vs_rest': unknown dataset; "
        r"did you mean fortune_computers_vs_rest",
    ):
        resolve_dataset_name("fortune_computer_vs_rest")


def test_listing_cli(tmp_path, capsys):
    from sweeper.data.catalogue import main

    assert main(["--glob", "fortune_computers_*", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "family", "task", "labels", "train", "validation", "test", "majority"]
    row = next(line.split() for line in out if line.startswith("fortune_computers_vs_rest "))
    assert row[1:4] == ["fortune", "classification", "2"] and float(row[7]) == pytest.approx(0.5, abs=0.05)
    assert main(["--glob", "no_such_*"]) == 1


def test_drop_in_custom_file(tmp_path, monkeypatch):
    monkeypatch.setattr("sweeper.data.spec.CUSTOM_DIR", tmp_path)
    write_csv(tmp_path / "my_reviews.csv", review_rows(90))
    assert resolve_dataset_name("my_reviews") == tmp_path / "my_reviews.csv"
    ds = load_splits(load_spec("my_reviews"), tmp_path / "cache")
    assert sum(len(ds[s]) for s in ds) == 90 and len(ds["train"].features["label"].names) == 3


def test_unknown_where_value_and_lm_from_files(tmp_path):
    spec = {**load_spec("wordnet_noun_supersense"), "name": "bad", "where": {"pos": "nounz"}}
    with pytest.raises(DatasetError, match=r"^dataset 'bad': unknown value\(s\) nounz in where column 'pos'"):
        load_splits(spec, tmp_path)
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(50)))
    ds = load_splits(
        {"name": "corpus", "family": "custom", "task": "lm", "source": "files", "path": str(tmp_path / "corpus.jsonl")},
        tmp_path / "cache",
    )
    assert (len(ds["train"]), len(ds["validation"]), len(ds["test"])) == (45, 2, 3)
