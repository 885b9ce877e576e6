"""Write the dataset catalogue conf/dataset/*.yaml from the committed pools (deterministic).

Every spec is named `<family>_<what>` so Hydra globs select families: `dataset=glob(fortune_*)`,
`glob(*langid*)`, `glob(*_vs_rest)`. Re-running rewrites the generated specs and removes generated
ones that no longer apply; hand-written specs (no `generated: true`) are left alone.

    python scripts/make_catalogue.py
"""
from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
POOLS = REPO / "data" / "pools"
OUT = REPO / "conf" / "dataset"
CAPS = {"train": 2000, "validation": 300, "test": 500}
BIG = 140         # a class needs this many texts to get its own one-vs-rest / pair dataset
FEW_SHOT = (64, 256)
KEY_ORDER = ["name", "family", "task", "description", "source", "pool", "where", "text_field",
             "label_field", "label_sep", "split_field", "validation", "rule", "positive",
             "classes", "transform", "caps", "balance", "min_count", "seed", "generated"]


def slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", value.lower().replace("++", "pp").replace("+", "p")).strip("_")


def clf(name: str, description: str, pool: str, label_field: str, rule: str = "multiclass",
        **extra) -> dict:
    spec = {"name": name, "family": name.split("_")[0], "task": "classification",
            "description": description, "source": "pool", "pool": pool, "text_field": "text",
            "label_field": label_field, "rule": rule, "caps": dict(CAPS),
            "balance": rule != "multiclass", "min_count": 20, "seed": 0, **extra}
    return spec


def counts(pool: pd.DataFrame, col: str, sep: str | None = None) -> pd.Series:
    values = pool[col].str.split(sep).explode() if sep else pool[col]
    return values[values != ""].value_counts()


def fortune_specs(pool: pd.DataFrame) -> list[dict]:
    big = sorted(c for c, n in counts(pool, "category").items() if n >= BIG)
    specs = [clf("fortune_topic", f"which of {len(big)} fortune files a fortune comes from",
                 "fortunes", "category", rule="subset", classes=big, balance=False)]
    specs += [clf(f"fortune_topic_train{k}", f"fortune_topic with {k} training texts",
                  "fortunes", "category", rule="subset", classes=big, balance=False,
                  caps={**CAPS, "train": k}, min_count=20) for k in FEW_SHOT]
    specs += [clf(f"fortune_{slug(c)}_vs_rest", f"fortune from the '{c}' file or not",
                  "fortunes", "category", "one_vs_rest", positive=c) for c in big]
    for a, b in [("computers", "linux"), ("politics", "law"), ("people", "wisdom"),
                 ("men-women", "love"), ("science", "education"), ("songs-poems", "literature"),
                 ("cookie", "fortunes"), ("platitudes", "wisdom"), ("zippy", "humorists"),
                 ("perl", "linux")]:
        specs.append(clf(f"fortune_{slug(a)}_vs_{slug(b)}", f"fortune file '{a}' vs '{b}'",
                         "fortunes", "category", "pair", classes=[a, b]))
    return specs


def wordnet_specs(pool: pd.DataFrame) -> list[dict]:
    specs = [clf("wordnet_pos", "part of speech of the word a WordNet gloss defines", "wordnet",
                 "pos", balance=True),
             clf("wordnet_adj_pertainym", "adjective gloss: relational (adj.pert) or descriptive",
                 "wordnet", "lexname", "pair", classes=["adj.all", "adj.pert"],
                 where={"pos": "adj"})]
    for pos in ["noun", "verb"]:
        sub = pool[pool["pos"] == pos]
        specs.append(clf(f"wordnet_{pos}_supersense", f"supersense (lexicographer file) of a {pos} "
                         "gloss", "wordnet", "lexname", where={"pos": pos}, balance=True))
        specs.append(clf(f"wordnet_{pos}_supersense_train256", f"wordnet_{pos}_supersense with "
                         "256 training texts", "wordnet", "lexname", where={"pos": pos},
                         balance=True, caps={**CAPS, "train": 256}))
        for lex, n in sorted(counts(sub, "lexname").items()):
            if n >= 300:
                specs.append(clf(f"wordnet_{slug(lex)}_vs_rest", f"{pos} gloss in {lex} or another "
                                 f"{pos} supersense", "wordnet", "lexname", "one_vs_rest",
                                 positive=lex, where={"pos": pos}))
    return specs


FAMILIES = {"fortunes": fortune_specs, "wordnet": wordnet_specs}


def to_yaml(spec: dict) -> str:
    """Flow-style small YAML, keys in a fixed order (readable diffs, no PyYAML quirks)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {val(x)}" for k, x in v.items()) + "}"
        s = str(v)
        plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", s) and s.lower() not in (
            "true", "false", "yes", "no", "on", "off", "null", "none", "y", "n")
        return s if plain else '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    keys = sorted(spec, key=lambda k: KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER))
    return "".join(f"{k}: {val(spec[k])}\n" for k in keys)


def main() -> None:
    specs = []
    for pool, make in FAMILIES.items():
        path = POOLS / f"{pool}.parquet"
        if path.exists():
            specs += make(pd.read_parquet(path))
    names = [s["name"] for s in specs]
    assert len(names) == len(set(names)), "duplicate dataset names"
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.yaml"):
        if "generated: true" in old.read_text() and old.stem not in names:
            old.unlink()
    for spec in specs:
        (OUT / f"{spec['name']}.yaml").write_text(to_yaml({**spec, "generated": True}))
    fams = pd.Series([s["family"] for s in specs]).value_counts().sort_index()
    print(f"{len(specs)} specs: " + ", ".join(f"{f} {n}" for f, n in fams.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
