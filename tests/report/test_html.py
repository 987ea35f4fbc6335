"""attnedit-report: the static HTML report, checked in a real headless Chromium (DevTools
protocol over a pipe, tests/support/browser.py): it loads without console errors, every file it
references exists inside the report folder, filters change the cases shown and survive the
section links, an unknown filter value gets a notice, the run picker hides a run, tables and
cases sort on numbers, compact cells match numpy, a failed case shows its error; a screenshot
is kept in test-artifacts/."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnedit.config import compose
from attnedit.errors import DataError
from attnedit.cli.report import main
from attnedit.report.html import facet_values, write_html_report
from attnedit.run.runner import Runner
from attnedit.store.run_store import RunStore
from attnedit.report.marks import RANDOM_MODEL_MARK
from browser import Browser, find_chromium
from harness import REPO, run_overrides

ARTIFACTS = REPO / "test-artifacts"
FAILED_ERROR = "OutOfMemoryError: CUDA out of memory (planted)"


@pytest.fixture(scope="module")
def runs(tiny_ddpm_dir, tmp_path_factory):
    """Two tiny runs (sad, random: 1 sample x 1 direction x 2 alphas each) and a failed
    case planted in the random run the way the runner records one (failed, error, NaN metrics)."""
    root = tmp_path_factory.mktemp("report_runs")
    small = ("dataset.num_samples=1", "method.directions=1", "numerical_floor.samples=0")
    sad = Runner(compose("config", run_overrides(root, tiny_ddpm_dir, *small))).run()
    random = Runner(compose("config", run_overrides(root, tiny_ddpm_dir, "method=random", *small))).run()
    # its image_path names a file that exists (a stale one): a failed case must still show no edit
    RunStore(random).append([{"case_id": "seed000000|random|planted", "sample_id": "seed000000", "method": "random",
                              "direction": 0, "label": "dir0", "alpha": 0.4, "ssim": float("nan"),
                              "psnr": float("nan"), "failed": True, "error": FAILED_ERROR,
                              "image_path": "images/seed000000/reference.png",
                              "reference_path": "images/seed000000/reference.png"}])
    return sad, random


STALE = "a stale comparison"


@pytest.fixture(scope="module")
def html_index(runs, tmp_path_factory):
    """The report's index.html; the first run's tables/ holds a stale comparison, as an earlier
    ``attnedit-tables R1 R2`` without --out left it there."""
    tables = runs[0] / "tables"
    tables.mkdir(exist_ok=True)
    (tables / "comparison.md").write_text(f"### {STALE} — comparison\n\n| method |\n|:--|\n| sad |\n")
    (tables / "comparison.csv").write_text("method\nsad\n")
    (tables / "comparison_tables.md").write_text((tables / "comparison.md").read_text())
    out = tmp_path_factory.mktemp("report") / "site"
    return write_html_report(list(runs), out)


def rows(runs) -> pd.DataFrame:
    return pd.concat([RunStore(r).read() for r in runs], ignore_index=True)


def cases_data(index: Path) -> dict:
    text = (index.parent / "cases.js").read_text()
    return json.loads(text[text.index("=") + 1:].rstrip().rstrip(";"))


def test_every_referenced_file_is_inside_the_report_and_exists(runs, html_index):
    out = html_index.parent
    page = html_index.read_text()
    links = re.findall(r'(?:src|href)="([^"#][^"]*)"', page)
    assert "assets/report.js" in links and "cases.js" in links and any(l.endswith(".png") for l in links)
    data = cases_data(html_index)
    images = [c[k] for c in data["cases"] for k in ("reference", "image") if c[k]]
    for link in [l for l in links if not l.startswith("data:")] + images:
        assert "://" not in link and not link.startswith("/") and ".." not in link, link  # no CDN, no server
        assert (out / link).is_file(), link
    # every figure file of the runs and of the comparison, each with a caption
    figures = re.findall(r'<figure class="plot"><a href="[^"]+"><img src="([^"]+)" alt="[^"]*"></a>'
                         r"<figcaption>([^<]+)<", page)
    pngs = [p.relative_to(out).as_posix() for top in ("study", "figures") for p in (out / top).rglob("*.png")]
    assert sorted(src for src, _ in figures) == sorted(pngs) and all(caption.strip() for _, caption in figures)
    assert {Path(p).name for p in pngs} >= {p.name for r in runs for p in (r / "figures").rglob("*.png")}
    frame = rows(runs)
    assert len(data["cases"]) == len(frame)
    # every saved edit of the runs is in the report, byte for byte
    saved = frame[~frame.failed.fillna(False).astype(bool)]
    assert len(saved) == len(frame) - 1
    by_case = {c["case"]: c for c in data["cases"]}
    assert by_case["seed000000|random|planted"]["image"] is None
    for case_id, method, path in zip(saved.case_id, saved.method, saved.image_path):
        run = runs[0] if method == "sad" else runs[1]
        assert (out / by_case[case_id]["image"]).read_bytes() == (run / path).read_bytes()


def test_tables_are_the_ones_attnedit_tables_writes(runs, html_index):
    page = html_index.read_text()
    for name in ("summary", "by_direction", "editing_time", "comparison"):
        assert f"— {name}" in page, name
    assert (html_index.parent / "study" / "comparison.csv").is_file()  # several runs: the comparison table
    # the comparison once, from the report's own folder: not the stale copy in the first run's tables/
    assert page.count('data-table="comparison"') == 1 and STALE not in page
    # the tiny model's random weights are said at the top and on every case
    assert RANDOM_MODEL_MARK in html.unescape(page.split("</header>")[0])
    assert all("random model weights" in c["marks"] for c in cases_data(html_index)["cases"][:-1])


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium found (chromium / chromium-browser / google-chrome): `make test` installs Debian's "
                    "chromium with apt; where apt or root is unavailable this browser test cannot run")
    page = Browser(executable)
    yield page
    page.close()


VISIBLE = "document.querySelectorAll('#case-grid .case').length"


def test_page_loads_cleanly_and_filters_change_the_cases(runs, html_index, browser):
    frame = rows(runs)
    browser.open(html_index.as_uri())
    assert browser.problems == []
    assert browser.evaluate(VISIBLE) == len(frame)
    broken = browser.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                              ".map(i => i.getAttribute('src'))")
    assert broken == [] and browser.evaluate("document.images.length") > len(frame)
    # choose a method in its filter, as a user does
    browser.evaluate("(() => { const s = document.querySelector('select[name=method]'); s.value = 'random';"
                     " s.dispatchEvent(new Event('change')); })()")
    assert browser.evaluate(VISIBLE) == (frame.method == "random").sum() < len(frame)
    assert browser.evaluate("location.hash") == "#method=random"
    # a filter in the address is applied on load (links to a filtered view)
    browser.open(html_index.as_uri() + "#alpha=-0.4")
    assert browser.evaluate(VISIBLE) == np.isclose(frame.alpha, -0.4).sum() < len(frame)
    browser.open(html_index.as_uri() + "#status=failed")
    assert browser.evaluate(VISIBLE) == 1
    failed = browser.evaluate("(() => { const c = document.querySelector('#case-grid .case');"
                              " return [c.className, c.querySelector('.error').textContent,"
                              " c.querySelectorAll('img').length, c.closest('.group').querySelectorAll('img').length];"
                              " })()")
    assert failed == ["case failed", FAILED_ERROR, 0, 1]  # no edited image; its reference once, at the group's head
    assert browser.problems == []


def js(function: str, *args) -> str:
    """A call of a JavaScript function expression with JSON arguments."""
    return f"({function})({', '.join(json.dumps(a) for a in args)})"


COLUMN = """(table, header) => { const t = document.querySelector(table + ' table');
  const i = Array.from(t.tHead.rows[0].cells).findIndex(h => h.textContent === header);
  return i < 0 ? null : Array.from(t.tBodies[0].rows).filter(r => !r.closest('[hidden]'))
    .map(r => ({text: r.cells[i].textContent, title: r.cells[i].title, sort: r.cells[i].dataset.sort}));
}"""
HEADERS = "t => Array.from(document.querySelector(t + ' table').tHead.rows[0].cells).map(h => h.textContent)"
CLICK = """(selector) => new Promise(done => {  // a link, as a user follows it: resolves after the page's handler
  addEventListener('hashchange', () => setTimeout(done, 0), {once: true});
  document.querySelector(selector).click(); })"""
CHOOSE = """(name, value) => { const c = document.querySelector(`[name="${name}"]`);
  if (c.type === 'checkbox') c.checked = value; else c.value = value; c.dispatchEvent(new Event('change')); }"""


def compact(mean: float, low: float, high: float) -> str:
    """numpy's rounding of "mean [low, high]": 4 significant figures on the largest, all at its decimals."""
    decimals = 3 - int(np.floor(np.log10(np.max(np.abs([mean, low, high])))))
    return "{0:.{3}f} [{1:.{3}f}, {2:.{3}f}]".format(*np.round([mean, low, high], decimals), decimals)


def test_tables_cells_runs_sorting_notices_and_links(runs, html_index, browser):
    frame = rows(runs)
    keys = cases_data(html_index)["runs"]
    browser.open(html_index.as_uri())
    # a compact cell: the mean over the rows (numpy), the CI from the CSV, the full values on hover
    summary = f'details[data-run="{keys[0]}"] figure[data-table="summary"]'
    csv = pd.read_csv(html_index.parent / "tables" / keys[0] / "summary.csv")
    ssim = frame[(frame.method == "sad") & (frame.alpha.abs() == 0.4)].ssim.to_numpy(np.float64)
    [cell] = browser.evaluate(js(COLUMN, summary, "ssim"))
    assert cell["text"] == compact(ssim.mean(), csv.ssim_ci_low[0], csv.ssim_ci_high[0])
    assert f"mean {float(csv.ssim_mean[0])!r}" in cell["title"] and f"std {float(csv.ssim_std[0])!r}" in cell["title"]
    assert float(cell["sort"]) == pytest.approx(ssim.mean(), rel=1e-12)
    # n once per row; failure counts only where a case failed (the random run's planted one)
    headers = browser.evaluate(js(HEADERS, summary))
    assert headers.count("n") == 1 and "failed" not in headers
    failures = browser.evaluate(js(COLUMN, f'details[data-run="{keys[1]}"] figure[data-table="summary"]', "failed"))
    assert [c["text"] for c in failures] == ["", str(frame.failed.fillna(False).astype(bool).sum())]
    # the footnotes under each table: the "[k] note" lines of its Markdown
    md = (html_index.parent / "study" / "comparison.md").read_text()
    notes = browser.evaluate("Array.from(document.querySelectorAll('figure[data-table=\"comparison\"] ol.notes li'))"
                             ".map(li => `[${li.value}] ${li.textContent}`)")
    assert notes == re.findall(r"^\[\d+\] .*$", md, re.M) and notes
    # the summary fits the page at 1280 px: no horizontal scrollbar
    assert browser.evaluate("Array.from(document.querySelectorAll('figure[data-table=\"summary\"] .scroll'))"
                            ".every(s => s.scrollWidth <= s.clientWidth)")
    # a click on a header sorts the rows on the numbers, twice: descending
    table = 'figure[data-table="comparison_by_alpha"]'
    browser.evaluate(f"document.querySelectorAll('{table} th')[{browser.evaluate(js(HEADERS, table)).index('ssim')}]"
                     ".click()")
    means = [float(c.get("sort", "nan")) for c in browser.evaluate(js(COLUMN, table, "ssim"))]
    expected = pd.read_csv(html_index.parent / "study" / "comparison_by_alpha.csv").ssim_mean.sort_values()
    assert len(means) > 2 and np.array_equal(means, expected, equal_nan=True)  # NaN (the failed case's) last
    # cases sorted by a metric across samples (NaN of the failed case last), the reference on hover
    browser.evaluate(js(CHOOSE, "sort", "psnr") + ";" + js(CHOOSE, "order", "desc") + ";" + js(CHOOSE, "group", False))
    shown = browser.evaluate("Array.from(document.querySelectorAll('#case-grid .case')).map(c => c.dataset.case)")
    ranked = frame.assign(key=frame.psnr.fillna(-np.inf)).sort_values("key", ascending=False, kind="stable")
    assert shown == ranked.case_id.tolist()
    assert browser.evaluate("location.hash") == "#sort=psnr&order=desc&group=off"
    # figures grouped: each run's under its run, the comparison's apart
    groups = browser.evaluate("Array.from(document.querySelectorAll('#figures figure.plot')).map(f =>"
                              " [f.closest('details[data-run]')?.dataset.run ?? null, f.querySelector('img')"
                              ".getAttribute('src')])")
    assert all(src.startswith(f"figures/{run}/") if run else src.startswith("study/") for run, src in groups)
    assert {run for run, _ in groups} == {*keys, None}
    # the run picker: one run's cases, tables and figures; the comparison stays
    browser.evaluate(js(CHOOSE, "run", False))  # the first box: the first run
    assert browser.evaluate(VISIBLE) == (frame.method == "random").sum()
    assert browser.evaluate(f"document.querySelector('details[data-run=\"{keys[0]}\"]').offsetParent") is None
    assert browser.evaluate("document.querySelector('details.comparison').offsetParent") is not None
    assert browser.evaluate("location.hash").startswith(f"#run={keys[1]}&")
    # filters survive the section links: Tables, then Cases
    browser.open(html_index.as_uri() + "#method=random")
    browser.evaluate(js(CLICK, 'nav a[data-section="tables"]'))
    assert browser.evaluate("location.hash") == "#tables&method=random"
    browser.evaluate(js(CLICK, 'nav a[data-section="cases"]'))
    assert browser.evaluate("location.hash") == "#cases&method=random"
    assert browser.evaluate(VISIBLE) == (frame.method == "random").sum() < len(frame)
    top = browser.evaluate("document.getElementById('cases').getBoundingClientRect().top")
    assert browser.evaluate("scrollY") > 0 and 0 <= top < browser.evaluate("innerHeight")  # scrolled to Cases
    # values the report does not hold: a notice naming the key and its valid values, nothing filtered away
    direction = f"{frame.direction[0]} ({frame.label[0]})"
    browser.open(html_index.as_uri() + "#direction=0&method=x&sample=50%")  # "%": not percent-encoding, kept as typed
    notices = browser.evaluate("Array.from(document.querySelectorAll('#notices .notice')).map(n => n.textContent)")
    assert len(notices) == 3 and browser.evaluate(VISIBLE) == len(frame)
    assert "direction" in notices[0] and f"“{direction}”" in notices[0]  # one direction: its filter is hidden
    assert "method" in notices[1] and "“random”, “sad”" in notices[1]
    assert "sample" in notices[2] and "50%" in notices[2] and f"“{frame.sample_id[0]}”" in notices[2]
    assert browser.problems == []
    browser.open(html_index.as_uri())
    shot = browser.screenshot(ARTIFACTS / "html_report.png")
    assert shot.stat().st_size > 10_000


def test_grid_points_and_unedited_runs_are_one_facet():
    assert facet_values({"method": "dcag", "dk": 1.1, "dv": 1.15, "bk": 1.0}, "r")["point"] == "dk=1.1 dv=1.15"
    assert facet_values({"method": "grag", "dk": 1.1, "dv": 1.0, "dq": 1.2}, "r")["point"] == "dk=1.1 dv=1 dq=1.2"
    assert facet_values({"method": "none", "dk": float("nan")}, "r")["point"] == "dk=1 dv=1"
    assert "point" not in facet_values({"method": "sad", "alpha": 0.4, "direction": 3, "label": "smile"}, "r")


def test_bad_input_is_one_clear_error(runs, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not an attnedit report folder"):
        write_html_report([runs[0]], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2 and "is not a run directory" in capsys.readouterr().err
