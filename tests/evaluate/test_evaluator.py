"""attnedit-evaluate on a fixture in the official format: CSV format, values equal to the
official per-image formulas, "nan" for an empty region as the official CSV, per-category
summary, resume, errors, NaN/inf images and output paths in real processes."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnedit.errors import ConfigError, DataError
from harness import evaluate
from piebench_fixture import (
    ENTRIES,
    official_scores,
    one_thread,  # noqa: F401 (an autouse fixture: one torch thread)
    write_edited,
    write_piebench_fixture,
)
from table_files import notes_text


METRICS = ["psnr_unedit_part", "ssim_unedit_part", "mse_unedit_part", "lpips_unedit_part"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluate")
    root = base / "PIE-Bench"
    write_piebench_fixture(root, size=64)
    edited = write_edited(root, base / "mine", png=("911000000000",))
    return root, base / "mine", edited


def args(root, edited, out, *extra):
    return [
        f"dataset.root={root}",
        f"edited={edited}",
        f"metrics=[{','.join(METRICS)}]",
        f"out={out}",
        "name=mine",
        "weights=random",
        "seed=7",
        "batch_size=3",
        "progress=false",
        *extra,
    ]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_matches_official_formulas(bench, tmp_path, capsys):
    root, edited_dir, edited = bench
    out = tmp_path / "scores.csv"
    assert evaluate(args(root, edited_dir, out)) == 0
    rows = read_rows(out)
    assert rows[0] == ["file_id"] + [f"mine|{m}" for m in METRICS]
    assert [r[0] for r in rows[1:]] == sorted(ENTRIES)
    expected = official_scores(root, edited, METRICS, lpips_seed=7)
    for row in rows[1:]:
        for metric, cell in zip(METRICS, row[1:]):
            want = expected[row[0]][metric]
            if want == "nan":
                assert cell == "nan", (row[0], metric)  # the official script's token, not an empty cell
            else:
                assert float(cell) == pytest.approx(want, abs=1e-5, rel=1e-6), (row[0], metric)
    assert [r[1] for r in rows if r[0] == "000000000001"] == ["nan"]  # the all-ones mask

    summary = (tmp_path / "scores_summary.md").read_text()
    assert summary in capsys.readouterr().out
    assert "RANDOM-BACKBONE" in notes_text(tmp_path / "scores_summary.md")
    assert max(map(len, summary.splitlines())) <= 120 and "| failed" not in summary  # no image failed
    assert "background" in summary and "(1 - mask)" in summary
    for header in ("psnr_unedit_part [dB]", "ssim_unedit_part [x10^2]", "mse_unedit_part [x10^4]"):
        assert header in summary
    assert "lpips_unedit_part [x10^3]" in summary
    table = {r[0]: r for r in read_rows(tmp_path / "scores_summary.csv")}
    assert table["category_id"][:4] == ["category_id", "category", "n", "failed"]
    assert table["0"][1:4] == ["random editing", "2", "0"] and table["all"][2:4] == ["7", "0"]
    psnr_cat0 = float(table["0"][4])  # the NaN row of category 0 is skipped
    assert psnr_cat0 == pytest.approx(expected["000000000000"]["psnr_unedit_part"], abs=1e-4)
    lpips_cat1 = float(table["1"][7])
    want = sum(expected[k]["lpips_unedit_part"] for k in ("111000000000", "111000000001")) / 2 * 1e3
    assert lpips_cat1 == pytest.approx(want, abs=1e-3)


def test_resume_appends_only_missing_ids(bench, tmp_path):
    root, edited_dir, _ = bench
    out = tmp_path / "resume.csv"
    evaluate(args(root, edited_dir, out, "dataset.categories=[0,1]"))
    first = read_rows(out)
    assert len(first) == 5
    with open(out, "w", newline="") as f:  # a crash after the first batch
        csv.writer(f).writerows(first[:3])
    evaluate(args(root, edited_dir, out))
    rows = read_rows(out)
    ids = [r[0] for r in rows[1:]]
    assert sorted(ids) == sorted(ENTRIES) and len(ids) == len(set(ids))
    assert rows[3:5] == first[3:5]  # rescored rows are identical
    evaluate(args(root, edited_dir, out))
    assert read_rows(out) == rows
    with pytest.raises(ConfigError, match="other settings for \\['weights'\\]"):
        evaluate(args(root, edited_dir, out, "seed=8"))  # rows of another backbone never mix


def test_missing_edited_image(bench, tmp_path):
    root, _, _ = bench
    partial = tmp_path / "partial"
    paths = write_edited(root, partial)
    paths["211000000000"].unlink()
    with pytest.raises(DataError, match="211000000000: method 'mine' has no edited image .*211000000000.jpg"):
        evaluate(args(root, partial, tmp_path / "a.csv"))
    with pytest.warns(UserWarning, match="211000000000"):
        evaluate(args(root, partial, tmp_path / "b.csv", "missing=skip"))
    assert "211000000000" not in [r[0] for r in read_rows(tmp_path / "b.csv")]


def test_selection_by_ids_keeps_leading_zeros(bench, tmp_path):
    root, edited_dir, _ = bench
    evaluate(args(root, edited_dir, tmp_path / "ids.csv", "dataset.ids=[000000000000,111000000001]"))
    assert [r[0] for r in read_rows(tmp_path / "ids.csv")[1:]] == ["000000000000", "111000000001"]


def test_edited_size_modes(bench, tmp_path, capsys):
    root, _, _ = bench
    doubled = tmp_path / "doubled"
    write_edited(root, doubled, double=("811000000000",))
    evaluate(args(root, doubled, tmp_path / "r.csv", "dataset.categories=[8]"))
    assert len(read_rows(tmp_path / "r.csv")) == 2
    assert "1 edited image(s) of another size than the source resized" in capsys.readouterr().out
    with pytest.raises(DataError, match="128x128, the source is 64x64"):
        evaluate(args(root, doubled, tmp_path / "e.csv", "dataset.categories=[8]", "edited_size=error"))


def test_side_by_side_output_is_cropped_as_the_official_script(bench, tmp_path):
    """A non-square edited image (source | edit, PnPInversion's layout) is scored on its
    bottom-right corner by default, as the official evaluate.py does; resize squashes it."""
    root, _, _ = bench
    folder = tmp_path / "side"
    edited = write_edited(root, folder, side_by_side=("111000000000",))
    assert Image.open(edited["111000000000"]).size == (128, 64)
    evaluate(args(root, folder, tmp_path / "auto.csv", "dataset.categories=[1]"))
    expected = official_scores(root, edited, METRICS, lpips_seed=7)  # crops the non-square image
    for row in read_rows(tmp_path / "auto.csv")[1:]:
        for metric, cell in zip(METRICS, row[1:]):
            assert float(cell) == pytest.approx(expected[row[0]][metric], abs=1e-5, rel=1e-6), (row[0], metric)
    evaluate(args(root, folder, tmp_path / "resize.csv", "dataset.categories=[1]", "edited_size=resize"))
    squashed = {r[0]: r for r in read_rows(tmp_path / "resize.csv")}
    assert float(squashed["111000000000"][1]) < float(expected["111000000000"]["psnr_unedit_part"]) - 3


SSIMS = ["ssim", "ssim_whole", "ssim_unedit_part", "ssim_edit_part"]  # every SSIM: the official whole "ssim" too
OTHER_CONVENTION = {"current": "torchmetrics_legacy_crop", "torchmetrics_legacy_crop": "current"}


def test_ssim_convention_is_an_option_recorded_in_meta_and_title(bench, tmp_path):
    """ssim_convention=current gives the installed torchmetrics' SSIM, for every SSIM metric
    (the plain whole-image ``ssim`` included); the default, the published numbers' (the
    torchmetrics map with its 5-pixel border cropped); each CSV's _meta.json and summary
    title say which."""
    root, edited_dir, edited = bench
    for convention in ("current", "torchmetrics_legacy_crop"):
        out = tmp_path / f"{convention}.csv"
        extra = [f"ssim_convention={convention}"] if convention == "current" else []
        evaluate(args(root, edited_dir, out, f"metrics=[{','.join(SSIMS)}]", *extra))
        expected = official_scores(root, edited, SSIMS, ssim_convention=convention)
        other = official_scores(root, edited, ["ssim"], ssim_convention=OTHER_CONVENTION[convention])
        rows = read_rows(out)
        assert rows[0] == ["file_id"] + [f"mine|{m}" for m in SSIMS]
        for key, *cells in rows[1:]:
            for metric, cell in zip(SSIMS, cells):
                want = expected[key][metric]
                assert cell == want if want == "nan" else float(cell) == pytest.approx(want, abs=1e-5), \
                    (convention, metric, key)
            assert abs(float(cells[0]) - other[key]["ssim"]) > 1e-4, key  # the conventions differ on these images
        assert json.loads(out.with_name(f"{convention}_meta.json").read_text())["ssim_convention"] == convention
        title = notes_text(out.with_name(f"{convention}_summary.md"))
        assert ("5-pixel border (torchmetrics < 1.4.2" in title) == (convention != "current"), title
    # The plain ssim alone is an SSIM too: its convention is recorded.
    evaluate(args(root, edited_dir, tmp_path / "plain.csv", "metrics=[ssim]", "ssim_convention=current"))
    assert json.loads((tmp_path / "plain_meta.json").read_text())["ssim_convention"] == "current"
    assert "SSIM map averaged whole" in notes_text(tmp_path / "plain_summary.md")
    with pytest.raises(ConfigError, match="other settings for \\['ssim_convention'\\]"):
        evaluate(args(root, edited_dir, tmp_path / "current.csv", f"metrics=[{','.join(SSIMS)}]"))


def test_parallel_decoding_gives_the_serial_rows(bench, tmp_path):
    """Entries decoded by worker threads ahead of scoring: the same CSV as decoding in the
    main thread, rows in order; an error in a worker surfaces at its entry, in order."""
    root, edited_dir, _ = bench
    fast = ["metrics=[psnr_unedit_part,ssim_unedit_part]", "batch_size=2"]
    evaluate(args(root, edited_dir, tmp_path / "serial.csv", *fast, "workers=0"))
    evaluate(args(root, edited_dir, tmp_path / "threads.csv", *fast, "workers=3"))
    assert (tmp_path / "threads.csv").read_text() == (tmp_path / "serial.csv").read_text()
    broken = tmp_path / "broken"
    paths = write_edited(root, broken)
    paths["811000000000"].write_bytes(b"not an image")
    paths["911000000000"].unlink()
    with pytest.raises(DataError, match="811000000000: cannot read image"):
        evaluate(args(root, broken, tmp_path / "b.csv", *fast, "workers=3"))
    assert [r[0] for r in read_rows(tmp_path / "b.csv")[1:]] == sorted(ENTRIES)[:4]  # the batches before it
    with pytest.raises(ConfigError, match="workers=-1 must be null"):
        evaluate(args(root, edited_dir, tmp_path / "w.csv", "workers=-1"))


def test_queued_batches_are_written_when_a_later_entry_fails(bench, tmp_path, monkeypatch):
    """On a GPU batch N's rows wait until batch N+1 is queued (Staging.ahead = 1); run that
    order here: the same CSV as writing at once, and an error in a later entry still
    writes every batch scored before it."""
    from attnedit.evaluate import inputs as evaluate_module

    root, edited_dir, _ = bench
    fast = ["metrics=[psnr_unedit_part,ssim_unedit_part]", "batch_size=2", "workers=0"]
    evaluate(args(root, edited_dir, tmp_path / "at_once.csv", *fast))
    init = evaluate_module.Staging.__init__

    def one_ahead(self, device):
        init(self, device)
        self.ahead = 1

    monkeypatch.setattr(evaluate_module.Staging, "__init__", one_ahead)
    evaluate(args(root, edited_dir, tmp_path / "queued.csv", *fast))
    assert (tmp_path / "queued.csv").read_text() == (tmp_path / "at_once.csv").read_text()
    broken = tmp_path / "broken"
    write_edited(root, broken)["811000000000"].write_bytes(b"not an image")
    with pytest.raises(DataError, match="811000000000: cannot read image"):
        evaluate(args(root, broken, tmp_path / "b.csv", *fast))
    # entries before 811000000000 in order, two per batch: both batches before it are written
    assert [r[0] for r in read_rows(tmp_path / "b.csv")[1:]] == sorted(ENTRIES)[:4]


# Real attnedit-evaluate processes --------------------------------------------------------
def float_tiff(source: Path, path: Path, bad: float, count: int) -> Path:
    """The source as a 32-bit float grey TIFF (PIL mode "F", 0-255) with ``count`` pixels set to ``bad``."""
    values = np.asarray(Image.open(source).convert("L"), dtype=np.float32).copy()
    values.reshape(-1)[:count] = bad
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "F"
    return path


def test_processes_nonfinite_images_and_output_paths(bench, tmp_path, zygote):
    """Six attnedit-evaluate processes, run side by side, forked from the zygote (the console
    script's own process, exit code and stderr, without importing torch six times).
    NaN / inf pixels: one error line naming the file (default), or cells left empty and
    counted as failed (nonfinite=nan), never a made-up finite score. out=: a missing
    folder is made; a path under a file and an unwritable folder fail with one line before
    any work; a damaged _meta.json fails with one line naming it, the CSV kept as it was."""
    root, _, _ = bench
    key = "111000000000"
    source = root / "annotation_images" / ENTRIES[key][1]
    folders = {}
    for name, bad, count in (("nanmethod", float("nan"), 3), ("infmethod", float("inf"), 2)):
        edited = write_edited(root, tmp_path / name)
        edited[key].unlink()
        folders[name] = float_tiff(source, edited[key].with_suffix(".tiff"), bad, count)
    common = [f"dataset.root={root}", "dataset.categories=[1]", "metrics=[psnr_unedit_part,mse_unedit_part]",
              "progress=false"]
    one = lambda name, out: [*common, f"edited={tmp_path / name}", f"name={name}", f"out={out}"]  # noqa: E731
    both = f"edited={{nanmethod: {tmp_path / 'nanmethod'}, infmethod: {tmp_path / 'infmethod'}}}"
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    new = tmp_path / "new" / "deeper" / "scores.csv"
    pool = ThreadPoolExecutor(6)
    start = lambda *argv: pool.submit(zygote.run, ["attnedit-evaluate", *argv], tmp_path)  # noqa: E731
    runs = {
        "nan": start(*one("nanmethod", tmp_path / "nan.csv")),
        "inf": start(*one("infmethod", tmp_path / "inf.csv")),
        "failed": start(*common, both, f"out={new}", "nonfinite=nan"),
        "under_file": start(*one("nanmethod", blocker / "scores.csv")),
    }
    # Root may write anywhere chmod allows; sysfs refuses new files even to root (EACCES, or EROFS read-only).
    if Path("/sys").is_dir():
        runs["read_only"] = start(*one("nanmethod", "/sys/attnedit-scores.csv"))
    finished = {name: future.result() for name, future in runs.items()}
    done = {name: (p.returncode, (p.stderr.strip().splitlines() or [""])[-1]) for name, p in finished.items()}

    code, line = done["nan"]
    assert code == 2 and line == (
        f"attnedit: error: PIE-Bench entry {key}: image {folders['nanmethod']} holds 3 NaN and 0 infinite pixel "
        "values, which have no 8-bit equivalent; re-save it from finite values, or pass nonfinite=nan to record "
        "its scores as NaN (failed)."
    )
    code, line = done["inf"]
    assert code == 2 and f"image {folders['infmethod']} holds 0 NaN and 2 infinite pixel values" in line
    assert not (tmp_path / "nan.csv").exists() or len(read_rows(tmp_path / "nan.csv")) == 1  # nothing scored

    code, line = done["failed"]
    assert code == 0, line
    warned = finished["failed"].stderr
    assert f"image {folders['nanmethod']} holds 3 NaN and 0 infinite pixel values" in warned
    assert "its cells are left empty (failed); to score it once fixed, delete its row from the CSV" in warned
    rows = {r[0]: r[1:] for r in read_rows(new)}
    assert rows[key] == [""] * 4  # not scored, for both methods: no number, no "nan" (an empty region)
    assert all(np.isfinite(float(v)) for v in rows["111000000001"])
    summary = {(r[0], r[1]): r for r in read_rows(new.with_name("scores_summary.csv"))}
    assert summary[("nanmethod", "1")][3:5] == ["2", "1"] and summary[("infmethod", "all")][3:5] == ["2", "1"]
    assert json.loads(new.with_name("scores_meta.json").read_text())["nonfinite"] == "nan"

    code, line = done["under_file"]
    assert code == 2 and line == (
        f"attnedit: error: out={blocker / 'scores.csv'}: {blocker} is a file, not a folder; "
        "choose an out= path in a folder you can write to."
    )
    if "read_only" in done:
        code, line = done["read_only"]
        assert code == 2 and line.startswith("attnedit: error: out=/sys/attnedit-scores.csv: cannot write in /sys ("), line
        assert line.endswith("); choose an out= path in a folder you can write to.")

    meta = new.with_name("scores_meta.json")
    meta.write_text(meta.read_text()[:40])  # a crash mid-write of an older version, a full disk ...
    before = new.read_text()
    again = start(*common, both, f"out={new}", "nonfinite=nan").result()
    code, line = again.returncode, again.stderr.strip().splitlines()[-1]
    assert code == 2 and line.startswith(f"attnedit: error: {meta} is damaged (")
    assert f"the rows in {new}, which stay as they are" in line and "delete scores_meta.json and rerun" in line
    assert new.read_text() == before


def test_bad_arguments(bench, tmp_path):
    root, edited_dir, _ = bench
    with pytest.raises(ConfigError, match="batchsize is not a key.*did you mean batch_size"):
        evaluate(args(root, edited_dir, tmp_path / "x.csv", "batchsize=2"))
    with pytest.raises(ConfigError, match="out=... is required"):
        evaluate([f"dataset.root={root}", f"edited={edited_dir}", "name=x"])
    with pytest.raises(ConfigError, match="missing="):
        evaluate(args(root, edited_dir, tmp_path / "x.csv", "missing=maybe"))
    with pytest.raises(ConfigError, match="unknown metric 'psnr_background'"):
        evaluate(args(root, edited_dir, tmp_path / "x.csv", "metrics=[psnr_background]"))
    assert not (tmp_path / "x.csv").exists()


def several_args(root, folders: dict, out, *extra):
    """args() with edited={method: folder, ...} in place of edited= and name=."""
    mapping = ", ".join(f"{name}: {folder}" for name, folder in folders.items())
    base = [a for a in args(root, None, out, *extra) if not a.startswith(("edited=", "name="))]
    return [*base, f"edited={{{mapping}}}"]


def test_several_methods_in_one_call(bench, tmp_path):
    """edited={a: folder, b: folder}: the official multi-method CSV (method-major columns),
    each method's values those of the official formulas and of a run of its own."""
    root, edited_dir, edited = bench
    other_dir = tmp_path / "other"
    other = write_edited(root, other_dir, seed=2)
    both = {"mine": edited_dir, "other": other_dir}
    out = tmp_path / "both.csv"
    assert evaluate(several_args(root, both, out)) == 0
    rows = read_rows(out)
    assert rows[0] == ["file_id"] + [f"{name}|{m}" for name in both for m in METRICS]
    expected = {"mine": official_scores(root, edited, METRICS, 7), "other": official_scores(root, other, METRICS, 7)}
    evaluate([a.replace("name=mine", "name=other") for a in args(root, other_dir, tmp_path / "alone.csv")])
    alone = {r[0]: r[1:] for r in read_rows(tmp_path / "alone.csv")[1:]}
    assert sorted(alone) == [r[0] for r in rows[1:]] == sorted(ENTRIES)
    for row in rows[1:]:
        assert row[1 + len(METRICS) :] == alone[row[0]]  # the second method's cells equal its own run's
        for cell, (name, metric) in zip(row[1:], [(n, m) for n in both for m in METRICS]):
            want = expected[name][row[0]][metric]
            if want == "nan":
                assert cell == "nan", (row[0], name, metric)
            else:
                assert float(cell) == pytest.approx(want, abs=1e-5, rel=1e-6), (row[0], name, metric)
    summary = read_rows(tmp_path / "both_summary.csv")
    assert summary[0][:5] == ["method", "category_id", "category", "n", "failed"]
    groups = len({category for category, _, _ in ENTRIES.values()}) + 1  # the fixture's categories, "all"
    assert [r[0] for r in summary[1:]] == ["mine"] * groups + ["other"] * groups
    mine_all, other_all = (r for r in summary[1:] if r[1] == "all")
    for j, metric in enumerate(METRICS):  # the "all" row of each method: its own mean
        for name, row in (("mine", mine_all), ("other", other_all)):
            values = [v[metric] for v in expected[name].values() if v[metric] != "nan"]
            factor = {"psnr": 1, "ssim": 1e2, "mse": 1e4, "lpips": 1e3}[metric.split("_")[0]]
            assert float(row[5 + j]) == pytest.approx(factor * sum(values) / len(values), rel=1e-5), (name, metric)
    assert (tmp_path / "both_summary.md").read_text().startswith("# PIE-Bench evaluation: mine, other")


def test_several_methods_errors(bench, tmp_path):
    root, edited_dir, _ = bench
    with pytest.raises(ConfigError, match="names its methods; drop name="):
        evaluate([*several_args(root, {"mine": edited_dir}, tmp_path / "a.csv"), "name=x"])
    with pytest.raises(DataError, match="edited folder .*nowhere of method 'b' is not a folder"):
        evaluate(several_args(root, {"a": edited_dir, "b": tmp_path / "nowhere"}, tmp_path / "b.csv"))
    # Hydra's override grammar (attnedit-evaluate is a Hydra app) takes no quoted dict keys,
    # so a method name with '|' is checked through name=; {a:/x} is read as a: /x.
    with pytest.raises(ConfigError, match="method name 'a|b' must not contain"):
        evaluate([a for a in args(root, edited_dir, tmp_path / "c.csv") if not a.startswith("name=")] + ["name='a|b'"])
    no_space = [a for a in several_args(root, {}, tmp_path / "e.csv") if not a.startswith("edited=")]
    with pytest.raises(DataError, match="edited folder /x of method 'a' is not a folder"):
        evaluate([*no_space, "edited={a:/x,b:/y}"])
    partial = tmp_path / "partial"
    write_edited(root, partial)["211000000000"].unlink()
    with pytest.warns(UserWarning, match="211000000000: method 'partial' has no edited image"):
        evaluate(several_args(root, {"mine": edited_dir, "partial": partial}, tmp_path / "d.csv", "missing=skip"))
    ids = [r[0] for r in read_rows(tmp_path / "d.csv")[1:]]
    assert "211000000000" not in ids and len(ids) == len(ENTRIES) - 1  # the row needs every method


def test_official_whole_image_names_match_the_official_loop(bench, tmp_path):
    """The official script's unsuffixed names (psnr, lpips, mse, ssim: whole image) build
    and score as its per-image loop does; lpips takes the evaluator's lpips_net."""
    root, edited_dir, edited = bench
    names = ["psnr", "lpips", "mse", "ssim"]
    out = tmp_path / "whole.csv"
    given = [a for a in args(root, edited_dir, out) if not a.startswith("metrics=")]
    assert evaluate([*given, f"metrics=[{','.join(names)}]"]) == 0
    rows = read_rows(out)
    expected = official_scores(root, edited, names, lpips_seed=7)
    for row in rows[1:]:
        for metric, cell in zip(names, row[1:]):
            assert float(cell) == pytest.approx(expected[row[0]][metric], abs=1e-5, rel=1e-6), (row[0], metric)
