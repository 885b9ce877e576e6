"""summary.html: the report as one self-contained page that works offline.

No CDN, no external file: the plots are inline (base64 PNG), the style and the script are in the
page. Every table sorts by a click on a column header (numbers as numbers, empty cells last) and
filters by a text box (any cell: dataset, family, method) and, where the table has a family
column, a family menu. A table of 300 datasets stays readable: a scroll box with a sticky header.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from .collect import MISSING

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:110em}
h1{font-size:1.5em} h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd} h3{font-size:1.05em}
p.text{white-space:pre-wrap;max-width:80em;line-height:1.35}
.tools{margin:.4em 0;font-size:13px} .tools input{width:22em} .tools .count{color:#666;margin-left:1em}
.scroll{max-height:36em;overflow:auto;border:1px solid #ccc;display:inline-block;max-width:100%}
table{border-collapse:collapse;font-size:12.5px}
th{position:sticky;top:0;background:#f2f2f2;cursor:pointer;user-select:none;white-space:nowrap}
th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right} td.text{text-align:left}
td.failed{background:#f8d0d0} td.missing{color:#999}
tr:nth-child(even) td{background-color:#fafafa}
img{max-width:100%;border:1px solid #eee;margin:.4em 0;display:block}
"""

_SCRIPT = """
(function () {
  function value(cell) {
    var text = cell.textContent.trim();
    var plain = text.replace(/,/g, "");  // 1,234,567 trainable parameters
    var number = /^[-+]?\\.?\\d[\\d.e+-]*( |$)/.test(plain) ? parseFloat(plain) : NaN;
    return {empty: text === "", number: isNaN(number) ? null : number, text: text};
  }
  function compare(a, b) {
    if (a.number !== null && b.number !== null) { return a.number - b.number; }
    if (a.number !== null) { return -1; }
    if (b.number !== null) { return 1; }
    return a.text.localeCompare(b.text, undefined, {numeric: true});  // 4/287/9 before 15/283/2
  }
  function sortBy(table, column, header) {
    var ascending = !header.classList.contains("asc");
    table.querySelectorAll("th").forEach(function (th) { th.classList.remove("asc", "desc"); });
    header.classList.add(ascending ? "asc" : "desc");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = value(r1.cells[column]), b = value(r2.cells[column]);
      if (a.empty || b.empty) { return a.empty === b.empty ? 0 : (a.empty ? 1 : -1); }  // last either way
      var order = compare(a, b);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  function filter(box) {
    var table = document.getElementById(box.dataset.table);
    var query = box.querySelector("input").value.toLowerCase();
    var menu = box.querySelector("select");
    var family = menu ? menu.value : "";
    var column = menu ? parseInt(menu.dataset.column, 10) : -1;
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var text = Array.prototype.map.call(row.cells, function (c) { return c.textContent; }).join("\\t");
      var ok = text.toLowerCase().indexOf(query) >= 0;  // within a cell, never across two
      if (ok && family) { ok = row.cells[column].textContent.trim() === family; }
      row.style.display = ok ? "" : "none";
      if (ok) { shown += 1; }
    });
    box.querySelector(".count").textContent = shown + " of " + table.tBodies[0].rows.length + " rows";
  }
  document.querySelectorAll("table.data").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.addEventListener("click", function () { sortBy(table, column, header); });
    });
  });
  document.querySelectorAll(".tools").forEach(function (box) {
    box.querySelector("input").addEventListener("input", function () { filter(box); });
    var menu = box.querySelector("select");
    if (menu) { menu.addEventListener("change", function () { filter(box); }); }
    filter(box);
  });
})();
"""


def render(blocks, title: str, intro: str, images: dict[str, Path]) -> str:
    """The page: a title, the intro, then each block's heading, text, inline plots and table."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f'<p class="text">{html.escape(part)}</p>' for part in intro.split("\n\n") if part]
    for number, block in enumerate(blocks):
        level = min(block.level, 4)
        body.append(f"<h{level}>{html.escape(block.title)}</h{level}>")
        if block.text:
            body.append(f'<p class="text">{html.escape(block.text)}</p>')
        body += [_image(name, images.get(name)) for name in block.images]
        if block.table is not None:
            body.append(table_html(block.table, f"t{number}", block.index))
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}<script>{_SCRIPT}</script></body></html>\n"
    )


def _image(name: str, path: Path | None) -> str:
    if path is None or not Path(path).exists():
        return f"<p>({html.escape(name)} not written)</p>"
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(name)}" title="{html.escape(name)}" src="data:image/png;base64,{data}">'


def table_html(table: pd.DataFrame, table_id: str, index: bool = False) -> str:
    """A sortable, filterable table (or "(none)")."""
    if table.empty:
        return "<p><em>(none)</em></p>"
    frame = table.reset_index() if index else table
    columns = [str(c) for c in frame.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return (
        _tools(frame, table_id)
        + f'<div class="scroll"><table class="data" id="{table_id}"><thead><tr>{head}</tr></thead>'
        + f"<tbody>{rows}</tbody></table></div>"
    )


def _tools(frame: pd.DataFrame, table_id: str) -> str:
    menu = ""
    if "family" in frame and frame["family"].nunique() > 1:
        column = list(frame.columns).index("family")
        options = "".join(
            f'<option value="{html.escape(str(f))}">{html.escape(str(f))}</option>'
            for f in sorted(frame["family"].dropna().astype(str).unique())
        )
        menu = f' family <select data-column="{column}"><option value="">all</option>{options}</select>'
    return (
        f'<div class="tools" data-table="{table_id}">filter <input type="search" '
        f'placeholder="dataset, family, method ...">{menu}<span class="count"></span></div>'
    )


def _cell(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "<td></td>"
    if isinstance(value, float):
        return f"<td>{value:.4g}</td>"
    text = str(value)
    if text == "FAILED":
        return '<td class="failed">FAILED</td>'
    if text == MISSING:
        return f'<td class="missing">{html.escape(text)}</td>'
    numeric = text[:1].isdigit() or text[:1] in "+-." and text[1:2].isdigit()
    shown = html.escape(text, quote=False)  # cells are element text: quotes stay as written
    return f"<td>{shown}</td>" if numeric else f'<td class="text">{shown}</td>'
