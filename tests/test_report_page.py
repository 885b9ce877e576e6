"""summary.html in a real browser (Debian's headless chromium): the page loads with no console
error, its per-dataset table has the expected rows, a click on a column header sorts the rows by
that column (again: the other way), and the filter box and family menu hide the other rows.

The probe is two small scripts added to a copy of the page: one before the page's own script
records errors and console.error calls, one after it clicks and types as a reader would and
writes what it saw into the DOM, which `chromium --dump-dom` returns."""

from __future__ import annotations

import json
import re
import subprocess

from sweeper.results import collect, report
from tests.test_across import write_known_sweep

ERRORS_HOOK = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
var __consoleError = console.error;
console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, " ")); __consoleError.apply(console, arguments); };
</script>"""

PROBE = """<script>
(function () {
  function column(table, name) {
    return Array.prototype.map.call(table.tHead.rows[0].cells, function (c) { return c.textContent; }).indexOf(name);
  }
  function cells(table, index) {
    return Array.prototype.filter.call(table.tBodies[0].rows, function (r) { return r.style.display !== "none"; })
      .map(function (r) { return r.cells[index].textContent; });
  }
  var tables = Array.prototype.filter.call(document.querySelectorAll("table.data"), function (t) {
    return column(t, "dataset") === 0 && column(t, "family") === 1;
  });
  var table = tables[0];
  var score = column(table, "m/lora/r8");
  var out = {tables: document.querySelectorAll("table.data").length, before: cells(table, 0)};
  table.tHead.rows[0].cells[score].click();
  out.ascending = cells(table, 0);
  out.ascendingScores = cells(table, score);
  table.tHead.rows[0].cells[score].click();
  out.descending = cells(table, 0);
  var box = document.querySelector('.tools[data-table="' + table.id + '"]');
  var input = box.querySelector("input");
  input.value = "d0";
  input.dispatchEvent(new Event("input"));
  out.filtered = cells(table, 0);
  out.count = box.querySelector(".count").textContent;
  input.value = "";
  input.dispatchEvent(new Event("input"));
  var menu = box.querySelector("select");
  menu.value = "fb";
  menu.dispatchEvent(new Event("change"));
  out.family = cells(table, 0);
  out.images = document.querySelectorAll("img[src^='data:image/png;base64,']").length;
  out.errors = window.__errors;
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def test_report_page_sorts_and_filters_in_headless_chromium(tmp_path, chromium):
    write_known_sweep(tmp_path / "runs")
    written = report.write_report(collect.load_records(tmp_path), tmp_path / "report")
    page = written["summary.html"].read_text()
    assert "http://" not in page and "https://" not in page  # offline: nothing fetched from anywhere
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.replace("<head>", "<head>" + ERRORS_HOOK, 1).replace("</body>", PROBE + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-dev-shm-usage", "--virtual-time-budget=5000"]  # fmt: skip
    proc = subprocess.run(
        [chromium, *flags, "--dump-dom", probe_page.as_uri()], capture_output=True, text=True, timeout=120
    )
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stdout[-2000:] + proc.stderr[-2000:]
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert seen["errors"] == []
    datasets = [f"{'fa' if i < 6 else 'fb'}_d{i:02d}" for i in range(12)]
    assert seen["before"] == datasets  # grouped by family, then by name
    scores = [float(s.split()[0]) for s in seen["ascendingScores"]]
    assert scores == sorted(scores) and seen["ascending"] != seen["before"]
    assert seen["descending"] == seen["ascending"][::-1]
    assert sorted(seen["filtered"]) == [d for d in datasets if "d0" in d] and seen["count"] == "10 of 12 rows"
    assert sorted(seen["family"]) == datasets[6:]
    assert seen["images"] >= 5  # the plots are inline
