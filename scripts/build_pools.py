"""Rebuild the committed source pools in data/pools/ from Debian packages (`make data`).

Needs the network (apt-get download, apt-get update into a private lists folder); CI never runs
it: the pools are committed and the Debian snapshot moves. Each package's name, version and
sha256 is recorded in data/pools/sources.json and rendered to data/pools/SOURCES.md.

    python scripts/build_pools.py                     # all pools
    python scripts/build_pools.py --only fortunes wordnet
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import pandas as pd
from pool_formats import deb822, mo_strings, read_rdb  # scripts/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parents[1]
POOLS = REPO / "data" / "pools"
I18N_CAP = 1500  # translated descriptions kept per language
GETTEXT_CAP = 2500  # UI strings kept per language
GETTEXT_MIN = 300  # languages with fewer strings are dropped
I18N_MIN = 200
MAX_CHARS = 2000  # a few package descriptions run to 80k characters: cut at a word boundary
GETTEXT_PACKAGES = {"coreutils": "coreutils", "libglib2.0-data": "glib20", "libgtk2.0-common": "gtk20"}
I18N_LANGS = [
    "cs",
    "da",
    "de",
    "es",
    "fi",
    "fr",
    "hu",
    "it",
    "ja",
    "ko",
    "nl",
    "pl",
    "pt",
    "pt_BR",
    "ru",
    "sk",
    "sr",
    "sv",
    "uk",
    "zh_CN",
    "zh_TW",
    "vi",
    "hr",
    "tr",
]
# WordNet lex_filenum -> lexicographer file ("supersense"), from WordNet's lexnames(5WN).
LEXNAMES = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession
noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time
verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption
verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social
verb.stative verb.weather adj.ppl""".split()
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean(text: str) -> str:
    """NFC, no overstrike/control characters, no trailing blanks: equal texts compare equal."""
    text = re.sub(r".\x08", "", text)  # fortune files use backspace overstrike for bold/underline
    text = unicodedata.normalize("NFC", _CTRL.sub("", text.replace("\r\n", "\n")))
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), field], check=True, capture_output=True, text=True
    ).stdout.strip()


def fetch_debs(names: list[str], tmp: Path) -> tuple[Path, list[dict]]:
    """apt-get download + dpkg-deb -x (no install); returns the unpack root and provenance."""
    subprocess.run(["apt-get", "download", *names], cwd=tmp, check=True, capture_output=True)
    root, sources = tmp / "root", []
    for deb in sorted(tmp.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        package, version = (deb_field(deb, f) for f in ("Package", "Version"))
        sources.append({"package": package, "version": version, "file": deb.name, "sha256": sha256(deb)})
    return root, sources


def dedupe(df: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """Drop empty and repeated texts (per `keys` group, e.g. per language), keeping the first."""
    df = df[df["text"].str.len() > 0]
    return df.drop_duplicates(subset=["text", *(keys or [])]).reset_index(drop=True)


# ---------------------------------------------------------------- fortunes
def build_fortunes(tmp: Path) -> tuple[pd.DataFrame, list[dict]]:
    root, sources = fetch_debs(["fortunes", "fortunes-min"], tmp)
    rows = []
    for f in sorted((root / "usr/share/games/fortunes").iterdir()):
        if f.suffix or f.is_symlink() or not f.is_file():
            continue  # .dat indexes and .u8 symlinks
        body = f.read_bytes().decode("utf-8", errors="replace")
        for item in re.split(r"^%\s*$", body, flags=re.M):
            rows.append({"text": clean(item), "category": f.name})
    df = pd.DataFrame(rows)
    # A fortune filed under two categories has no single label: drop every copy.
    df = df[df["text"].str.len() > 0]
    return df.drop_duplicates("text", keep=False).reset_index(drop=True), sources


# ---------------------------------------------------------------- wordnet
def build_wordnet(tmp: Path) -> tuple[pd.DataFrame, list[dict]]:
    root, sources = fetch_debs(["wordnet-base"], tmp)
    rows = []
    for pos in ["noun", "verb", "adj", "adv"]:
        for line in (root / f"usr/share/wordnet/data.{pos}").read_text("latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # licence header
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            lemma = fields[4].replace("_", " ")
            lemma = re.sub(r"\((a|p|ip)\)$", "", lemma)  # adjective position markers
            rows.append(
                {
                    "text": clean(gloss),
                    "pos": pos,
                    "lexname": LEXNAMES[int(fields[1])],
                    "lemma": lemma,
                    "n_lemmas": int(fields[3], 16),
                }
            )
    return dedupe(pd.DataFrame(rows)), sources


# ---------------------------------------------------------------- debian index
APT_CONF = """Dir::Etc::parts "{d}/parts";
Dir::State::Lists "{d}/lists";
Acquire::Languages {{ "en"; {langs} }};
"""


def apt_lists(tmp: Path) -> Path:
    """apt-get update into a private folder with translations on (the image disables them)."""
    for sub in ["parts", "lists/partial"]:
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    conf = tmp / "apt.conf"
    conf.write_text(APT_CONF.format(d=tmp, langs=" ".join(f'"{x}";' for x in I18N_LANGS)))
    subprocess.run(
        ["apt-get", "update"], env={"APT_CONFIG": str(conf), "PATH": "/usr/bin:/bin"}, check=True, capture_output=True
    )
    return tmp / "lists"


def long_description(field: str) -> str:
    """Description body without the one-line synopsis; ' .' lines are paragraph breaks."""
    lines = field.split("\n")[1:]
    text = clean("\n".join("" if ln.strip() == "." else ln[1:] for ln in lines))
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS].rsplit(None, 1)[0]


def index_file(lists: Path, suffix: str) -> Path:
    [path] = [p for p in lists.glob(f"*_dists_bookworm_main_{suffix}")]
    return path


def translations(lists: Path, lang: str) -> dict[str, str]:
    path = index_file(lists, f"i18n_Translation-{lang.replace('_', '%5f')}")
    key = f"Description-{lang}"
    return {p["Description-md5"]: long_description(p[key]) for p in deb822(path) if key in p}


def index_sources(lists: Path, files: list[Path]) -> list[dict]:
    """Index files have no package version: record the Release date of the snapshot instead."""
    release = next(lists.glob("*_dists_bookworm_InRelease")).read_text("utf-8", errors="replace")
    date = re.search(r"^Date: (.*)$", release, flags=re.M).group(1)
    return [
        {"package": f.name.split("_dists_")[1], "version": f"Release {date}", "file": f.name, "sha256": sha256(f)}
        for f in files
    ]


def build_debian(tmp: Path, lists: Path) -> tuple[pd.DataFrame, list[dict]]:
    packages = index_file(lists, "binary-amd64_Packages")
    english = translations(lists, "en")
    rows = []
    for p in deb822(packages):
        text = english.get(p.get("Description-md5", ""))
        if text and "Section" in p:
            tags = re.sub(r"\s+", "", p.get("Tag", "")).replace(",", ";")
            rows.append({"text": text, "package": p["Package"], "section": p["Section"].split("/")[-1], "tags": tags})
    # Many -dev/-doc/-dbg siblings share one description: the first package keeps it.
    src = index_sources(lists, [packages, index_file(lists, "i18n_Translation-en")])
    return dedupe(pd.DataFrame(rows).sort_values("package", kind="stable")), src


def build_debian_i18n(tmp: Path, lists: Path) -> tuple[pd.DataFrame, list[dict]]:
    frames, files = [], []
    for lang in ["en", *I18N_LANGS]:
        try:
            texts = translations(lists, lang)
        except ValueError:
            continue  # this language has no Translation file in the snapshot
        files.append(index_file(lists, f"i18n_Translation-{lang.replace('_', '%5f')}"))
        df = pd.DataFrame({"md5": list(texts), "text": list(texts.values()), "lang": lang})
        df = dedupe(df).sort_values("md5").head(I18N_CAP)  # md5 order = a fixed pseudo-random pick
        if len(df) >= I18N_MIN:
            frames.append(df)
    df = pd.concat(frames).reset_index(drop=True)
    return df[["text", "lang", "md5"]], index_sources(lists, files)


# ---------------------------------------------------------------- gettext catalogues


def build_gettext(tmp: Path) -> tuple[pd.DataFrame, list[dict]]:
    root, sources = fetch_debs(list(GETTEXT_PACKAGES), tmp)
    rows = []
    for domain in sorted(GETTEXT_PACKAGES.values()):
        for mo in sorted((root / "usr/share/locale").glob(f"*/LC_MESSAGES/{domain}.mo")):
            lang = mo.parts[-3]
            if lang.startswith("en"):
                continue  # en_GB, en@quot: copies of the English msgids
            for msgid, msgstr in mo_strings(mo):
                text = clean(msgstr.replace("_", "") if "_" in msgid else msgstr)
                if text != clean(msgid) and len(text) >= 3 and any(c.isalpha() for c in text):
                    rows.append({"text": text, "lang": lang, "domain": domain, "msgid": clean(msgid)})
    df = dedupe(pd.DataFrame(rows), ["lang"])
    df = df.sort_values(["lang", "domain", "msgid"], kind="stable")
    keep = df.groupby("lang")["text"].transform("size") >= GETTEXT_MIN
    df = df[keep].sample(frac=1, random_state=0)
    df = df[df.groupby("lang").cumcount() < GETTEXT_CAP]
    return df.sort_values(["lang", "domain", "msgid"]).reset_index(drop=True), sources


AUSTEN = ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"]


def austen_paragraphs(lines) -> list[str]:
    """Blank-line separated paragraphs, without chapter/volume headings and front matter."""
    paras, cur = [], []
    for line in [*map(str, lines), ""]:
        if line.strip():
            cur.append(line.strip())
            continue
        text = clean(" ".join(cur))
        cur = []
        if len(text) >= 20 and not re.match(r"^(CHAPTER|Chapter|VOLUME|Volume)\b", text):
            paras.append(text)
    return paras


def build_austen(tmp: Path) -> tuple[pd.DataFrame, list[dict]]:
    root, sources = fetch_debs(["r-cran-janeaustenr"], tmp)
    books = read_rdb(root / "usr/lib/R/site-library/janeaustenr/data/Rdata", AUSTEN)
    rows = [{"text": p, "book": b, "para": i} for b in AUSTEN for i, p in enumerate(austen_paragraphs(books[b]))]
    return dedupe(pd.DataFrame(rows)), sources


def build_finefood(tmp: Path) -> tuple[pd.DataFrame, list[dict]]:
    root, sources = fetch_debs(["r-cran-modeldata"], tmp)
    objs = read_rdb(root / "usr/lib/R/site-library/modeldata/data/Rdata", ["training_data", "testing_data"])
    frames = [objs[k].assign(origin=k.split("_")[0]) for k in ["training_data", "testing_data"]]
    df = pd.concat(frames, ignore_index=True)
    df = pd.DataFrame(
        {
            "text": [clean(re.sub(r"<br\s*/?>", "\n", str(t))) for t in df["review"]],
            "label": df["score"].astype(str).to_numpy(),
            "product": df["product"].astype(str).to_numpy(),
            "origin": df["origin"].to_numpy(),
        }
    )
    return df.drop_duplicates("text", keep=False).reset_index(drop=True), sources


# ---------------------------------------------------------------- output
BUILDERS = {
    "fortunes": build_fortunes,
    "wordnet": build_wordnet,
    "austen": build_austen,
    "finefood": build_finefood,
    "gettext": build_gettext,
    "debian": build_debian,
    "debian_i18n": build_debian_i18n,
}
LICENCES = {
    "fortunes": "BSD-style (fortune-mod); content: quotations, jokes",
    "wordnet": "WordNet 3.0 licence (permissive, attribution)",
    "austen": "public domain texts (Project Gutenberg via janeaustenr, MIT)",
    "finefood": "RESEARCH USE ONLY: Amazon Fine Food reviews (SNAP, McAuley & Leskovec 2013), "
    "redistributed in R modeldata (MIT)",
    "gettext": "GPL-3+ (coreutils), LGPL-2.1+ (glib, gtk) translations",
    "debian": "DFSG: Debian package descriptions (each package's own licence)",
    "debian_i18n": "DFSG: Debian DDTP translations of package descriptions",
}


def write_pool(name: str, df: pd.DataFrame) -> Path:
    path = POOLS / f"{name}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    df.to_parquet(tmp, compression="zstd", compression_level=19, index=False)
    tmp.replace(path)
    return path


def write_sources(record: dict) -> None:
    (POOLS / "sources.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    lines = [
        "# Source pools: provenance",
        "",
        "Generated by `scripts/build_pools.py` (`make data`); do not edit by hand.",
        "",
        "| pool | rows | MB | licence |",
        "|---|---|---|---|",
    ]
    for name, r in sorted(record.items()):
        lines.append(f"| `{name}.parquet` | {r['rows']:,} | {r['mb']:.2f} | {LICENCES[name]} |")
    lines += ["", "## Inputs", "", "| pool | package / index file | version | sha256 |", "|---|---|---|---|"]
    for name, r in sorted(record.items()):
        for s in r["sources"]:
            lines.append(f"| {name} | `{s['package']}` | {s['version']} | `{s['sha256']}` |")
    (POOLS / "SOURCES.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    args = ap.parse_args(argv)
    POOLS.mkdir(parents=True, exist_ok=True)
    record_path = POOLS / "sources.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    with tempfile.TemporaryDirectory(prefix="pools-") as d:
        lists = None
        for name in args.only:
            tmp = Path(d) / name
            tmp.mkdir()
            if name.startswith("debian"):
                lists = lists or apt_lists(Path(d) / "apt")
                df, sources = BUILDERS[name](tmp, lists)
            else:
                df, sources = BUILDERS[name](tmp)
            path = write_pool(name, df)
            record[name] = {"rows": len(df), "mb": round(path.stat().st_size / 1e6, 2), "sources": sources}
            print(f"{name}: {len(df):,} rows, {record[name]['mb']} MB", file=sys.stderr)
            write_sources(record)  # after each pool: a later failure keeps the earlier records


if __name__ == "__main__":
    main()
