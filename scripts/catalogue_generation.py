"""The generation (text in, text out) family of the catalogue: English -> language X (gettext),
reverse dictionary and definitions (WordNet), package description -> name (Debian).

Used by scripts/make_catalogue.py beside catalogue_families.py (the classification and lm families).
"""

from __future__ import annotations

import pandas as pd
from catalogue_families import counts, slug

from sweeper.data.spec import GENERATION_DEFAULT_CAPS

GETTEXT_TARGETS = {
    "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese", "pt_BR": "Brazilian Portuguese",
    "nl": "Dutch", "sv": "Swedish", "da": "Danish", "nb": "Norwegian Bokmal", "fi": "Finnish", "pl": "Polish",
    "cs": "Czech", "sk": "Slovak", "sl": "Slovenian", "hr": "Croatian", "hu": "Hungarian", "tr": "Turkish",
    "ru": "Russian", "uk": "Ukrainian", "bg": "Bulgarian", "ja": "Japanese", "zh_CN": "Simplified Chinese",
    "ko": "Korean", "vi": "Vietnamese", "id": "Indonesian",
}  # fmt: skip
DEBIAN_NAME_SECTIONS = ["python", "perl", "rust", "libdevel", "games"]


def gen(name: str, description: str, pool: str, source_field: str, target_field: str, prompt: str, **extra) -> dict:
    return {
        "name": name,
        "family": name.split("_")[0],
        "task": "generation",
        "description": description,
        "source": "pool",
        "pool": pool,
        "source_field": source_field,
        "target_field": target_field,
        "prompt": prompt,
        "caps": dict(GENERATION_DEFAULT_CAPS),  # greedy decoding is what a CPU pays for
        "seed": 0,
        **extra,
    }


def generation_specs(gettext: pd.DataFrame, wordnet: pd.DataFrame, debian: pd.DataFrame) -> list[dict]:
    """English -> language X (gettext UI strings), gloss -> lemma and lemma -> gloss (WordNet),
    package description -> package name (Debian)."""
    langs = set(counts(gettext, "lang").index)
    specs = [
        gen(
            f"gettext_en_to_{slug(lang)}",
            f"translate an English UI string (coreutils, glib, gtk) into {language}",
            "gettext",
            "msgid",
            "text",
            f"Translate into {language}: {{source}}",
            where={"lang": lang},
            max_new_tokens=48,
        )
        for lang, language in GETTEXT_TARGETS.items()
        if lang in langs
    ]
    for pos in ("noun", "verb", "adj", "adv"):
        if pos in set(wordnet["pos"]):
            specs.append(
                gen(
                    f"wordnet_reverse_dictionary_{pos}",
                    f"reverse dictionary: the {pos} (a WordNet lemma) a gloss defines",
                    "wordnet",
                    "text",
                    "lemma",
                    "Which word means: {source}",
                    where={"pos": pos},
                    max_new_tokens=12,
                )
            )
    for pos in ("noun", "verb"):
        specs.append(
            gen(
                f"wordnet_define_{pos}",
                f"dictionary: a WordNet gloss of a {pos} (its first sense in the pool)",
                "wordnet",
                "lemma",
                "text",
                "Define the word: {source}",
                where={"pos": pos},
                max_new_tokens=40,
            )
        )
    sections = set(debian["section"])
    specs.append(
        gen(
            "debian_package_name",
            "the Debian package a description belongs to",
            "debian",
            "text",
            "package",
            "Name the Debian package: {source}",
            max_new_tokens=16,
        )
    )
    specs += [
        gen(
            f"debian_package_name_{slug(section)}",
            f"the Debian package (section {section}) a description belongs to",
            "debian",
            "text",
            "package",
            "Name the Debian package: {source}",
            where={"section": section},
            max_new_tokens=16,
        )
        for section in DEBIAN_NAME_SECTIONS
        if section in sections
    ]
    return specs
