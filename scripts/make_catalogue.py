"""Write the dataset catalogue conf/dataset/*.yaml from the committed pools (deterministic).

Every spec is named `<family>_<what>` so Hydra globs select families: `dataset=glob(fortune_*)`,
`glob(*langid*)`, `glob(*_vs_rest)`. Re-running rewrites the generated specs and removes generated
ones that no longer apply; hand-written specs (no `generated: true`) are left alone.

    python scripts/make_catalogue.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
from catalogue_families import (  # scripts/ is sys.path[0] when run as a script
    austen_specs,
    debian_specs,
    food_specs,
    fortune_specs,
    langid_specs,
    wordnet_specs,
)
from catalogue_generation import generation_specs  # scripts/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parents[1]
POOLS = REPO / "data" / "pools"
OUT = REPO / "conf" / "dataset"
# fmt: off
KEY_ORDER = ["name", "family", "task", "description", "source", "pool", "where", "text_field", "source_field",
             "target_field", "prompt", "max_new_tokens", "label_field",
             "label_sep", "labels", "split_field", "validation", "rule", "positive", "classes", "transform", "caps",
             "balance", "min_count", "seed", "generated"]
# fmt: on


FAMILIES = {
    "fortunes": fortune_specs,
    "wordnet": wordnet_specs,
    "debian": debian_specs,
    "austen": austen_specs,
    "finefood": food_specs,
}


def read(pool: str) -> pd.DataFrame | None:
    path = POOLS / f"{pool}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def all_specs() -> list[dict]:
    specs = []
    for pool, make in FAMILIES.items():
        df = read(pool)
        if df is not None:
            specs += make(df)
    i18n, gettext = read("debian_i18n"), read("gettext")
    if i18n is not None and gettext is not None:
        specs += langid_specs(i18n, gettext)
    wordnet, debian = read("wordnet"), read("debian")
    if gettext is not None and wordnet is not None and debian is not None:
        specs += generation_specs(gettext, wordnet, debian)
    return specs


YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "none", "y", "n"}  # plain, they would not be strings


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
        plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", s) and s.lower() not in YAML_WORDS
        return s if plain else '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    keys = sorted(spec, key=lambda k: KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER))
    return "".join(f"{k}: {val(spec[k])}\n" for k in keys)


def main() -> None:
    specs = all_specs()
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
