"""Readers of the file formats the pools come in, without their tools: Debian deb822 indexes,
gettext .mo catalogues, R lazy-load databases. Used by scripts/build_pools.py."""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import warnings
import zlib
from pathlib import Path


def deb822(path: Path):
    """Paragraphs of a Packages / Translation file as dicts (continuation lines kept)."""
    para, key = {}, None
    for line in path.read_text("utf-8", errors="replace").split("\n"):
        if not line:
            if para:
                yield para
            para, key = {}, None
        elif line[0] in " \t" and key:
            para[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            para[key] = value.strip()
    if para:
        yield para


def mo_strings(path: Path) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of one .mo file (plural entries: first forms; msgctxt dropped).
    A small parser: gettext.GNUTranslations rejects some real catalogues' headers."""
    data = path.read_bytes()
    order = "<" if data[:4] == b"\xde\x12\x04\x95" else ">"
    _, _, n, orig, trans = struct.unpack(order + "5I", data[:20])

    def entry(table: int, i: int) -> bytes:
        length, offset = struct.unpack(order + "2I", data[table + 8 * i : table + 8 * i + 8])
        return data[offset : offset + length]

    pairs = [(entry(orig, i), entry(trans, i)) for i in range(n)]
    header = dict(pairs).get(b"", b"").decode("ascii", errors="replace")
    charset = (re.search(r"charset=([\w-]+)", header) or [None, "utf-8"])[1]
    out = []
    for msgid, msgstr in pairs:
        if msgid:
            msgid = msgid.split(b"\x00")[0].split(b"\x04")[-1]
            out.append(
                (msgid.decode(charset, errors="replace"), msgstr.split(b"\x00")[0].decode(charset, errors="replace"))
            )
    return out


def read_rdb(base: Path, names: list[str]) -> dict:
    """Objects of an R lazy-load DB (.rdx index + .rdb chunks) without R, via PyPI `rdata`."""
    import rdata

    index = rdata.conversion.convert(rdata.parser.parse_file(base.with_suffix(".rdx")))
    raw, out = base.with_suffix(".rdb").read_bytes(), {}
    for name in names:
        off, length = (int(x) for x in index["variables"][name])
        chunk = raw[off : off + length]
        kind, body = chunk[4:5], chunk[5:]  # 4-byte big-endian length, then a type byte
        if kind == b"Z":
            data = lzma.decompress(
                body, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
            )
        elif kind == b"2":
            data = bz2.decompress(body)
        elif kind == b"0":
            data = body
        else:  # b"1" or old-style zlib without a type byte
            data = zlib.decompress(body if kind == b"1" else chunk[4:])
        assert struct.unpack(">I", chunk[:4])[0] == len(data), f"{base}:{name}: bad length"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tibble classes fall back to data.frame: fine
            out[name] = rdata.conversion.convert(rdata.parser.parse_data(data))
    return out
