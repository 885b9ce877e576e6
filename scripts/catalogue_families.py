"""The dataset families of the catalogue: one function per source pool returns its specs.

Used by scripts/make_catalogue.py, which writes them to conf/dataset/*.yaml.
"""

from __future__ import annotations

import itertools
import re

import pandas as pd

CAPS = {"train": 2000, "validation": 300, "test": 500}
BIG = 140  # a class needs this many texts to get its own one-vs-rest / pair dataset
FEW_SHOT = (64, 256)


def slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", value.lower().replace("++", "pp").replace("+", "p")).strip("_")


def clf(name: str, description: str, pool: str, label_field: str, rule: str = "multiclass", **extra) -> dict:
    spec = {
        "name": name,
        "family": name.split("_")[0],
        "task": "classification",
        "description": description,
        "source": "pool",
        "pool": pool,
        "text_field": "text",
        "label_field": label_field,
        "rule": rule,
        "caps": dict(CAPS),
        "balance": rule != "multiclass",
        "min_count": 20,
        "seed": 0,
        **extra,
    }
    return spec


def counts(pool: pd.DataFrame, col: str, sep: str | None = None) -> pd.Series:
    values = pool[col].str.split(sep).explode() if sep else pool[col]
    return values[values != ""].value_counts()


def fortune_specs(pool: pd.DataFrame) -> list[dict]:
    big = sorted(c for c, n in counts(pool, "category").items() if n >= BIG)
    specs = [
        clf(
            "fortune_topic",
            f"which of {len(big)} fortune files a fortune comes from",
            "fortunes",
            "category",
            rule="subset",
            classes=big,
            balance=False,
        )
    ]
    specs += [
        clf(
            f"fortune_topic_train{k}",
            f"fortune_topic with {k} training texts",
            "fortunes",
            "category",
            rule="subset",
            classes=big,
            balance=False,
            caps={**CAPS, "train": k},
            min_count=20,
        )
        for k in FEW_SHOT
    ]
    specs += [
        clf(
            f"fortune_{slug(c)}_vs_rest",
            f"fortune from the '{c}' file or not",
            "fortunes",
            "category",
            "one_vs_rest",
            positive=c,
        )
        for c in big
    ]
    for a, b in [
        ("computers", "linux"),
        ("politics", "law"),
        ("people", "wisdom"),
        ("men-women", "love"),
        ("science", "education"),
        ("songs-poems", "literature"),
        ("cookie", "fortunes"),
        ("platitudes", "wisdom"),
        ("zippy", "humorists"),
        ("perl", "linux"),
    ]:
        specs.append(
            clf(
                f"fortune_{slug(a)}_vs_{slug(b)}",
                f"fortune file '{a}' vs '{b}'",
                "fortunes",
                "category",
                "pair",
                classes=[a, b],
            )
        )
    return specs


def wordnet_specs(pool: pd.DataFrame) -> list[dict]:
    specs = [
        clf("wordnet_pos", "part of speech of the word a WordNet gloss defines", "wordnet", "pos", balance=True),
        clf(
            "wordnet_adj_pertainym",
            "adjective gloss: relational (adj.pert) or descriptive",
            "wordnet",
            "lexname",
            "pair",
            classes=["adj.all", "adj.pert"],
            where={"pos": "adj"},
        ),
    ]
    for pos in ["noun", "verb"]:
        sub = pool[pool["pos"] == pos]
        specs.append(
            clf(
                f"wordnet_{pos}_supersense",
                f"supersense (lexicographer file) of a {pos} gloss",
                "wordnet",
                "lexname",
                where={"pos": pos},
                balance=True,
            )
        )
        specs.append(
            clf(
                f"wordnet_{pos}_supersense_train256",
                f"wordnet_{pos}_supersense with 256 training texts",
                "wordnet",
                "lexname",
                where={"pos": pos},
                balance=True,
                caps={**CAPS, "train": 256},
            )
        )
        for lex, n in sorted(counts(sub, "lexname").items()):
            if n >= 300:
                specs.append(
                    clf(
                        f"wordnet_{slug(lex)}_vs_rest",
                        f"{pos} gloss in {lex} or another {pos} supersense",
                        "wordnet",
                        "lexname",
                        "one_vs_rest",
                        positive=lex,
                        where={"pos": pos},
                    )
                )
    return specs


def debian_specs(pool: pd.DataFrame) -> list[dict]:
    sections = sorted(c for c, n in counts(pool, "section").items() if n >= 300)
    specs = [
        clf(
            "debian_section",
            f"archive section of a package from its long description ({len(sections)} sections)",
            "debian",
            "section",
            rule="subset",
            classes=sections,
            balance=True,
        ),
        clf(
            "debian_section_train256",
            "debian_section with 256 training texts",
            "debian",
            "section",
            rule="subset",
            classes=sections,
            balance=True,
            caps={**CAPS, "train": 256},
        ),
    ]
    specs += [
        clf(
            f"debian_section_{slug(c)}_vs_rest",
            f"package description in section '{c}' or another",
            "debian",
            "section",
            "one_vs_rest",
            positive=c,
        )
        for c in sections
    ]
    tagged = pool[pool["tags"] != ""]
    specs += debian_tags_specs(tagged)
    for tag, n in sorted(counts(tagged, "tags", ";").items()):
        if n >= 300:
            specs.append(
                clf(
                    f"debian_tag_{slug(tag)}_vs_rest",
                    f"Debtag '{tag}' vs other tagged packages",
                    "debian",
                    "tags",
                    "one_vs_rest",
                    positive=tag,
                    label_sep=";",
                    negative_name="other_tagged",
                )
            )
    return specs


TAG_PACKAGES = 50  # a Debtag needs this many packages to be a label of its facet's multilabel dataset
FACET_LABELS, FACET_PACKAGES = 3, 400  # a facet needs this many such tags, and of packages with one of them


def debian_tags_specs(tagged: pd.DataFrame) -> list[dict]:
    """multilabel: per Debtags facet, the facet's tags a package carries (role::program and
    role::shared-lib at once), for facets with enough tags of enough packages."""
    tag_counts = counts(tagged, "tags", ";")
    rows = tagged["tags"].str.split(";").map(set)
    specs = []
    for facet in sorted({tag.split("::")[0] for tag in tag_counts.index}):
        labels = sorted(t for t, n in tag_counts.items() if t.split("::")[0] == facet and n >= TAG_PACKAGES)
        packages = int(rows.map(lambda tags, chosen=set(labels): bool(tags & chosen)).sum())
        if len(labels) < FACET_LABELS or packages < FACET_PACKAGES:
            continue
        specs.append({
            "name": f"debian_tags_{slug(facet)}",
            "family": "debian",
            "task": "multilabel",
            "description": f"the Debtags of facet '{facet}' of a package, from its description "
                           f"({len(labels)} tags, {packages} packages)",
            "source": "pool",
            "pool": "debian",
            "text_field": "text",
            "label_field": "tags",
            "label_sep": ";",
            "labels": labels,
            "caps": dict(CAPS),
            "min_count": 20,
            "seed": 0,
        })  # fmt: skip
    return specs


# fmt: off
DEBIAN_PAIRS = [("pt", "pt_BR"), ("cs", "sk"), ("ru", "uk"), ("da", "nl"), ("de", "nl"), ("es", "pt"), ("es", "it"),
                ("fr", "it"), ("pl", "cs"), ("zh_CN", "ja"), ("ru", "sr"), ("da", "de")]
# fmt: on
# fmt: off
GETTEXT_PAIRS = [("pt", "pt_BR"), ("hr", "bs"), ("hr", "sr@latin"), ("bs", "sr@latin"), ("id", "ms"),
                 ("zh_CN", "zh_TW"), ("zh_TW", "zh_HK"), ("es", "gl"), ("es", "ca"), ("ca", "gl"),
                 ("ca", "ca@valencia"), ("es", "ast"), ("da", "nb"), ("nb", "nn"), ("da", "sv"), ("nb", "sv"),
                 ("ru", "uk"), ("ru", "be"), ("uk", "be"), ("ru", "bg"), ("bg", "mk"), ("sr", "mk"),
                 ("sr", "sr@ije"), ("cs", "sk"), ("sl", "hr"), ("ca", "oc"), ("nl", "af"), ("de", "nds"),
                 ("hi", "mr"), ("hi", "ne"), ("hi", "mai"), ("bn", "as"), ("ar", "fa"), ("fa", "ps"), ("lt", "lv"),
                 ("et", "fi"), ("tr", "az"), ("it", "fur"), ("fr", "wa"), ("es", "an")]
# fmt: on
GETTEXT_GROUPS = {
    "romance": ["es", "pt", "it", "fr", "ca", "gl", "ro", "oc", "ast"],
    "cyrillic": ["ru", "uk", "be", "bg", "mk", "sr", "kk"],
    "slavic_latin": ["cs", "sk", "pl", "sl", "hr", "bs", "sr@latin"],
    "nordic": ["da", "nb", "nn", "sv", "is"],
    "indic": ["hi", "mr", "ne", "mai", "gu", "pa", "bn", "as", "or"],
    "cjk": ["zh_CN", "zh_TW", "zh_HK", "ja", "ko"],
}


def langid_specs(debian_i18n: pd.DataFrame, gettext: pd.DataFrame) -> list[dict]:
    specs = []
    for src, pool, pairs in [("debian", debian_i18n, DEBIAN_PAIRS), ("gettext", gettext, GETTEXT_PAIRS)]:
        langs = set(counts(pool, "lang").index)
        what = "package description" if src == "debian" else "UI string"
        pool_name = "debian_i18n" if src == "debian" else "gettext"
        specs.append(
            clf(f"langid_{src}", f"language of a {what} ({len(langs)} languages)", pool_name, "lang", balance=True)
        )
        for a, b in pairs:
            if a in langs and b in langs:
                specs.append(
                    clf(
                        f"langid_{src}_{slug(a)}_vs_{slug(b)}",
                        f"language of a {what}: {a} or {b}",
                        pool_name,
                        "lang",
                        "pair",
                        classes=[a, b],
                    )
                )
    langs = set(counts(gettext, "lang").index)
    for group, members in GETTEXT_GROUPS.items():
        members = [m for m in members if m in langs]
        specs.append(
            clf(
                f"langid_gettext_{group}",
                f"language of a UI string among {group} languages ({', '.join(members)})",
                "gettext",
                "lang",
                "subset",
                classes=members,
            )
        )
    return specs


AUSTEN_BOOKS = ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"]


def austen_specs(pool: pd.DataFrame) -> list[dict]:
    specs = [
        clf("austen_book", "which Austen novel a paragraph comes from", "austen", "book", balance=True),
        clf(
            "austen_book_masked",
            "austen_book with names masked (capitalised words never seen in lower case become _)",
            "austen",
            "book",
            balance=True,
            transform="mask_proper_nouns",
        ),
        clf(
            "austen_book_train256",
            "austen_book with 256 training texts",
            "austen",
            "book",
            balance=True,
            caps={**CAPS, "train": 256},
        ),
    ]
    specs += [
        clf(f"austen_{a}_vs_{b}", f"paragraph from {a} or {b}", "austen", "book", "pair", classes=[a, b])
        for a, b in itertools.combinations(AUSTEN_BOOKS, 2)
    ]
    specs.append(
        {
            "name": "austen_lm",
            "family": "austen",
            "task": "lm",
            "description": "language modelling on five Austen novels; Persuasion held out as validation",
            "source": "pool",
            "pool": "austen",
            "text_field": "text",
            "split_field": "book",
            "validation": ["persuasion"],
            "seed": 0,
        }
    )
    return specs


def food_specs(pool: pd.DataFrame) -> list[dict]:
    desc = "Amazon fine-food review: score great (5 stars) or other (RESEARCH USE ONLY)"
    return [
        clf("food_sentiment", desc, "finefood", "label", "pair", classes=["other", "great"], balance=False),
        clf("food_sentiment_balanced", desc + ", balanced", "finefood", "label", "pair", classes=["other", "great"]),
        clf(
            "food_sentiment_train64",
            desc + ", 64 training texts",
            "finefood",
            "label",
            "pair",
            classes=["other", "great"],
            caps={**CAPS, "train": 64},
        ),
    ]
