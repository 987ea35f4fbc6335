"""attnedit-evaluate on a fixture in the official format: CSV format, values equal to the
official per-image formulas, NaN as empty cells, per-category summary, resume, errors."""

from __future__ import annotations

import csv

import pytest

from attnedit.errors import ConfigError, DataError
from attnedit.evaluate import main
from piebench_fixture import (
    ENTRIES,
    official_scores,
    one_thread,  # noqa: F401 (an autouse fixture: one torch thread)
    write_edited,
    write_piebench_fixture,
)

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
    assert main(args(root, edited_dir, out)) == 0
    rows = read_rows(out)
    assert rows[0] == ["file_id"] + [f"mine|{m}" for m in METRICS]
    assert [r[0] for r in rows[1:]] == sorted(ENTRIES)
    expected = official_scores(root, edited, METRICS, lpips_seed=7)
    for row in rows[1:]:
        for metric, cell in zip(METRICS, row[1:]):
            want = expected[row[0]][metric]
            if want == "nan":
                assert cell == "", (row[0], metric)
            else:
                assert float(cell) == pytest.approx(want, abs=1e-5, rel=1e-6), (row[0], metric)
    assert "nan" not in out.read_text().lower()
    assert [r[1] for r in rows if r[0] == "000000000001"] == [""]  # the all-ones mask

    summary = (tmp_path / "scores_summary.md").read_text()
    assert summary in capsys.readouterr().out
    assert "RANDOM-BACKBONE" in summary.splitlines()[0]
    assert "background" in summary and "(1 - mask)" in summary
    for header in ("psnr_unedit_part [dB]", "ssim_unedit_part [x10^2]", "mse_unedit_part [x10^4]"):
        assert header in summary
    assert "lpips_unedit_part [x10^3]" in summary
    table = {r[0]: r for r in read_rows(tmp_path / "scores_summary.csv")}
    assert table["category_id"][:3] == ["category_id", "category", "n"]
    assert table["0"][1:3] == ["random editing", "2"] and table["all"][2] == "7"
    psnr_cat0 = float(table["0"][3])  # the NaN row of category 0 is skipped
    assert psnr_cat0 == pytest.approx(expected["000000000000"]["psnr_unedit_part"], abs=1e-4)
    lpips_cat1 = float(table["1"][6])
    want = sum(expected[k]["lpips_unedit_part"] for k in ("111000000000", "111000000001")) / 2 * 1e3
    assert lpips_cat1 == pytest.approx(want, abs=1e-3)


def test_resume_appends_only_missing_ids(bench, tmp_path):
    root, edited_dir, _ = bench
    out = tmp_path / "resume.csv"
    main(args(root, edited_dir, out, "dataset.categories=[0,1]"))
    first = read_rows(out)
    assert len(first) == 5
    with open(out, "w", newline="") as f:  # a crash after the first batch
        csv.writer(f).writerows(first[:3])
    main(args(root, edited_dir, out))
    rows = read_rows(out)
    ids = [r[0] for r in rows[1:]]
    assert sorted(ids) == sorted(ENTRIES) and len(ids) == len(set(ids))
    assert rows[3:5] == first[3:5]  # rescored rows are identical
    main(args(root, edited_dir, out))
    assert read_rows(out) == rows
    with pytest.raises(ConfigError, match="other settings for \\['weights'\\]"):
        main(args(root, edited_dir, out, "seed=8"))  # rows of another backbone never mix


def test_missing_edited_image(bench, tmp_path):
    root, _, _ = bench
    partial = tmp_path / "partial"
    paths = write_edited(root, partial)
    paths["211000000000"].unlink()
    with pytest.raises(DataError, match="211000000000: method 'mine' has no edited image .*211000000000.jpg"):
        main(args(root, partial, tmp_path / "a.csv"))
    with pytest.warns(UserWarning, match="211000000000"):
        main(args(root, partial, tmp_path / "b.csv", "missing=skip"))
    assert "211000000000" not in [r[0] for r in read_rows(tmp_path / "b.csv")]


def test_selection_by_ids_keeps_leading_zeros(bench, tmp_path):
    root, edited_dir, _ = bench
    main(args(root, edited_dir, tmp_path / "ids.csv", "dataset.ids=[000000000000,111000000001]"))
    assert [r[0] for r in read_rows(tmp_path / "ids.csv")[1:]] == ["000000000000", "111000000001"]


def test_edited_size_modes(bench, tmp_path):
    root, _, _ = bench
    doubled = tmp_path / "doubled"
    write_edited(root, doubled, double=("811000000000",))
    main(args(root, doubled, tmp_path / "r.csv", "dataset.categories=[8]"))
    assert len(read_rows(tmp_path / "r.csv")) == 2
    with pytest.raises(DataError, match="128x128, the source is 64x64"):
        main(args(root, doubled, tmp_path / "e.csv", "dataset.categories=[8]", "edited_size=error"))


def test_bad_arguments(bench, tmp_path):
    root, edited_dir, _ = bench
    with pytest.raises(ConfigError, match="Valid keys"):
        main(args(root, edited_dir, tmp_path / "x.csv", "batchsize=2"))
    with pytest.raises(ConfigError, match="out=... is required"):
        main([f"dataset.root={root}", f"edited={edited_dir}", "name=x"])
    with pytest.raises(ConfigError, match="missing="):
        main(args(root, edited_dir, tmp_path / "x.csv", "missing=maybe"))
    with pytest.raises(ConfigError, match="unknown metric 'psnr_background'"):
        main(args(root, edited_dir, tmp_path / "x.csv", "metrics=[psnr_background]"))
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
    assert main(several_args(root, both, out)) == 0
    rows = read_rows(out)
    assert rows[0] == ["file_id"] + [f"{name}|{m}" for name in both for m in METRICS]
    expected = {"mine": official_scores(root, edited, METRICS, 7), "other": official_scores(root, other, METRICS, 7)}
    main([a.replace("name=mine", "name=other") for a in args(root, other_dir, tmp_path / "alone.csv")])
    alone = {r[0]: r[1:] for r in read_rows(tmp_path / "alone.csv")[1:]}
    assert sorted(alone) == [r[0] for r in rows[1:]] == sorted(ENTRIES)
    for row in rows[1:]:
        assert row[1 + len(METRICS) :] == alone[row[0]]  # the second method's cells equal its own run's
        for cell, (name, metric) in zip(row[1:], [(n, m) for n in both for m in METRICS]):
            want = expected[name][row[0]][metric]
            if want == "nan":
                assert cell == "", (row[0], name, metric)
            else:
                assert float(cell) == pytest.approx(want, abs=1e-5, rel=1e-6), (row[0], name, metric)
    summary = read_rows(tmp_path / "both_summary.csv")
    assert summary[0][:4] == ["method", "category_id", "category", "n"]
    groups = len({category for category, _, _ in ENTRIES.values()}) + 1  # the fixture's categories, "all"
    assert [r[0] for r in summary[1:]] == ["mine"] * groups + ["other"] * groups
    mine_all, other_all = (r for r in summary[1:] if r[1] == "all")
    for j, metric in enumerate(METRICS):  # the "all" row of each method: its own mean
        for name, row in (("mine", mine_all), ("other", other_all)):
            values = [v[metric] for v in expected[name].values() if v[metric] != "nan"]
            factor = {"psnr": 1, "ssim": 1e2, "mse": 1e4, "lpips": 1e3}[metric.split("_")[0]]
            assert float(row[4 + j]) == pytest.approx(factor * sum(values) / len(values), rel=1e-5), (name, metric)
    assert (tmp_path / "both_summary.md").read_text().startswith("# PIE-Bench evaluation: mine, other")


def test_several_methods_errors(bench, tmp_path):
    root, edited_dir, _ = bench
    with pytest.raises(ConfigError, match="names its methods; drop name="):
        main([*several_args(root, {"mine": edited_dir}, tmp_path / "a.csv"), "name=x"])
    with pytest.raises(DataError, match="edited folder .*nowhere of method 'b' is not a folder"):
        main(several_args(root, {"a": edited_dir, "b": tmp_path / "nowhere"}, tmp_path / "b.csv"))
    with pytest.raises(ConfigError, match="method name 'a|b' must not contain"):
        main(several_args(root, {"'a|b'": edited_dir}, tmp_path / "c.csv"))
    no_space = [a for a in several_args(root, {}, tmp_path / "e.csv") if not a.startswith("edited=")]
    with pytest.raises(ConfigError, match="method 'a:/x' no folder; .*space after each colon"):
        main([*no_space, "edited={a:/x,b:/y}"])  # YAML reads "a:/x" as a key without a value
    partial = tmp_path / "partial"
    write_edited(root, partial)["211000000000"].unlink()
    with pytest.warns(UserWarning, match="211000000000: method 'partial' has no edited image"):
        main(several_args(root, {"mine": edited_dir, "partial": partial}, tmp_path / "d.csv", "missing=skip"))
    ids = [r[0] for r in read_rows(tmp_path / "d.csv")[1:]]
    assert "211000000000" not in ids and len(ids) == len(ENTRIES) - 1  # the row needs every method
