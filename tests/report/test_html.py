"""attnedit-report: the static HTML report, checked in a real headless Chromium (DevTools
protocol over a pipe, tests/support/browser.py): it loads without console errors, every file it
references exists inside the report folder, filters change the cases shown, a failed
case shows its error; a screenshot is kept in test-artifacts/."""

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


@pytest.fixture(scope="module")
def html_index(runs, tmp_path_factory):
    """The report's index.html."""
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
    frame = rows(runs)
    sad = frame[(frame.method == "sad") & (frame.alpha.abs() == 0.4)].ssim.to_numpy(np.float64)
    # the summary CSV's numeric cells (mean, population std over the cases) as the page shows them
    assert f"<td>{sad.mean():.6g}</td>" in page and f"<td>{sad.std():.6g}</td>" in page
    for name in ("summary", "by_direction", "editing_time", "comparison"):
        assert f"— {name}" in page, name
    assert (html_index.parent / "study" / "comparison.csv").is_file()  # several runs: the comparison table
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
                              " c.querySelectorAll('img').length]; })()")
    assert failed == ["case failed", FAILED_ERROR, 1]  # its reference, no edited image
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
