"""The report package (issue 14.1, 14.2, 14.3 table side, 14.8): no import cycles; 95% CIs,
paired Wilcoxon tests and the seeds axis against numpy / scipy on planted data; NaN and
failed-case counts; numeric CSV columns; runs named by the config keys in which they
differ; the editing-time table's median and IQR; figure titles that name model, layer
and alpha scale and never overlap."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from attnedit.report import stats
from attnedit.report.runs import load_runs, run_labels
from attnedit.report.studies import write_study, write_tables
from attnedit.store.run_store import RunStore

SRC = Path(__file__).resolve().parents[1] / "src" / "attnedit"


# -- the import graph --------------------------------------------------------------------
def module_imports(path: Path) -> set[str]:
    """attnedit modules imported at module level (function-level imports are lazy: no cycle)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("attnedit"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # "from attnedit.report import sad"
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("attnedit"))
    return found


def test_the_package_has_no_import_cycles():
    modules = {".".join(("attnedit", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in SRC.rglob("*.py")}
    graph = {m: {i for i in module_imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for target in graph[module]:
            assert state.get(target) != 1, f"import cycle: {' -> '.join([*path, module, target])}"
            if target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [])
    report = sorted(m for m in modules if m.startswith("attnedit.report."))
    assert {"attnedit.report.studies", "attnedit.report.render", "attnedit.report.sad", "attnedit.report.dcag",
            "attnedit.report.plots", "attnedit.report.timing", "attnedit.report.reference"} <= set(report)


# -- statistics against numpy / scipy ---------------------------------------------------
def numpy_bootstrap(values, seed=0, resamples=1000):
    values = np.asarray(values, dtype=np.float64)
    index = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    return tuple(np.percentile(values[index].mean(axis=1), [2.5, 97.5]))


def test_mean_ci_is_the_percentile_bootstrap():
    values = np.random.default_rng(3).lognormal(size=80)
    assert stats.mean_ci(values) == pytest.approx(numpy_bootstrap(values), abs=1e-12)
    assert stats.mean_ci(np.r_[values, np.nan, np.inf]) == pytest.approx(numpy_bootstrap(values), abs=1e-12)
    assert stats.mean_ci([2.0, 2.0]) == (2.0, 2.0) and all(map(math.isnan, stats.mean_ci([np.nan])))


def test_paired_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(7)
    a = rng.normal(size=60)
    real = a + 0.3 + rng.normal(scale=0.2, size=60)
    noise = rng.normal(scale=0.2, size=30)
    null = a + np.r_[noise, -noise]  # a planted null: symmetric differences, mean exactly 0
    for b, significant in ((real, True), (null, False)):
        result = stats.paired(a, b)
        want = sps.wilcoxon(b - a)  # scipy's defaults: two-sided, zero_method "wilcox"
        assert result.p == pytest.approx(want.pvalue, rel=1e-12) and result.n == 60
        assert result.diff == pytest.approx(np.mean(b - a), abs=1e-15)
        assert (result.ci_low, result.ci_high) == pytest.approx(numpy_bootstrap(b - a), abs=1e-12)
        assert result.significant is significant and (result.ci_low > 0) is significant
    b = null.copy()
    b[:5] = np.nan  # a pair with a NaN side is dropped
    assert stats.paired(a, b).n == 55 and stats.paired(a, b).p == pytest.approx(sps.wilcoxon(b[5:] - a[5:]).pvalue)


# -- planted runs ----------------------------------------------------------------------
def sad_run(root: Path, name: str, values: dict, method="sad", config=None, failed=(), seconds=None) -> Path:
    """A run like the runner writes one: one case per (sample, direction) at alpha 0.4;
    ``values[metric]``: an array (samples x 2 directions); ``failed``: (sample, direction)
    cases that raised (NaN metrics, failed=True, an error text)."""
    store = RunStore(root / name)
    config = {"name": "planted", "method": {"name": method, "position": "after_norm"}, "dataset": {"first_seed": 0},
              **(config or {})}
    store.write_json("manifest.json", {"config": config, "metric_order": list(values),
                                       "model": {"name": "tiny", "device": "cpu", "weights_sha256_16": "w"},
                                       "host": {"hostname": "h"}, "method": {"name": method},
                                       "cost": {"sessions": [{"load_average": [1.5, 1.25, 1.0]}]}})
    rows = []
    samples = len(next(iter(values.values())))
    for s in range(samples):
        for d in range(2):
            broken = (s, d) in failed
            rows.append({"case_id": f"s{s}|{method}|{d}", "sample_id": f"s{s}", "method": method, "direction": d,
                         "label": f"dir{d}", "alpha": 0.4, "alpha_scale": "token_norm", "model": "tiny",
                         **{m: float("nan") if broken else float(v[s][d]) for m, v in values.items()},
                         "seconds_per_case": float(seconds[s][d]) if seconds is not None else 1.0,
                         "failed": broken, "error": "OutOfMemoryError: CUDA out of memory" if broken else None,
                         "random_backbone": False, "model_random_weights": False})
    store.append(rows)
    return store.run_dir


def test_tables_count_nan_and_failed_cases_and_write_numbers(tmp_path):
    rng = np.random.default_rng(0)
    psnr = rng.normal(30, 2, size=(12, 2))
    psnr[3, 1] = np.nan  # an empty region: NaN, not a failure
    run = sad_run(tmp_path, "run", {"psnr": psnr}, failed={(5, 0), (6, 1)})
    tables = write_tables(run)
    csv = pd.read_csv(run / "tables" / "summary.csv")
    kept = np.delete(psnr.ravel(), [3 * 2 + 1, 5 * 2, 6 * 2 + 1])
    row = csv.iloc[0]
    assert (row.psnr_n_nan, row.psnr_n_failed, row.psnr_n, row.n) == (1, 2, 21, 24)
    assert row.psnr_mean == pytest.approx(kept.mean(), abs=1e-12) and row.psnr_std == pytest.approx(kept.std(), abs=1e-12)
    assert (row.psnr_ci_low, row.psnr_ci_high) == pytest.approx(numpy_bootstrap(kept), abs=1e-12)
    for name in ("summary", "by_abs_alpha", "by_direction"):  # numbers in numeric columns, never "x ± y"
        frame = pd.read_csv(run / "tables" / f"{name}.csv")
        assert not frame.astype(str).apply(lambda c: c.str.contains("±")).any().any(), name
        assert {"psnr_mean", "psnr_ci_low", "psnr_ci_high", "psnr_n_nan", "psnr_n_failed"} <= set(frame), name
        markdown = (run / "tables" / f"{name}.md").read_text()
        assert "NaN (empty region, failed case) skipped" in markdown.splitlines()[0] and "psnr 95% CI" in markdown
    assert tables["summary"].psnr[0].startswith(f"{kept.mean():.4f} ± {kept.std():.4f} (1 non-finite)")


def test_comparison_pairs_on_sample_ids_and_names_runs_by_their_config(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.normal(0.7, 0.1, size=(40, 2))
    better = base + 0.05 + rng.normal(0, 0.02, size=(40, 2))
    same = base + rng.normal(0, 0.02, size=(40, 2))
    runs = [sad_run(tmp_path, "sad", {"ssim": base}), sad_run(tmp_path, "better", {"ssim": better}, method="pullback"),
            sad_run(tmp_path, "same", {"ssim": same}, method="sad",
                    config={"method": {"name": "sad", "position": "before_norm"}})]
    kind, folder, text = write_study(runs, tmp_path / "cmp")
    assert kind == "comparison"
    table = pd.read_csv(folder / "comparison_paired.csv")
    assert table.method.tolist() == ["pullback", "sad (position=before_norm)"]
    assert (table.against == "sad (position=after_norm)").all()
    for method, b in (("pullback", better), ("sad (position=before_norm)", same)):
        row = table.set_index("method").loc[method]
        diff = b.mean(axis=1) - base.mean(axis=1)  # per sample: the mean over its cases
        assert row.ssim_p == pytest.approx(sps.wilcoxon(diff).pvalue, rel=1e-12)
        assert row.ssim_diff == pytest.approx(diff.mean(), abs=1e-12) and row.ssim_n == 40
    assert bool(table.ssim_significant[0]) and not bool(table.ssim_significant[1])
    markdown = (folder / "comparison_paired.md").read_text()
    assert "n.s." in markdown.splitlines()[-1] and "Wilcoxon signed-rank" in markdown.splitlines()[0]
    comparison = pd.read_csv(folder / "comparison.csv")
    assert comparison.method.tolist() == ["sad (position=after_norm)", "pullback", "sad (position=before_norm)"]


def test_runs_differing_only_in_first_seed_give_a_seeds_axis(tmp_path):
    rng = np.random.default_rng(2)
    values = [rng.normal(25, 1, size=(6, 2)) for _ in range(3)]
    runs = [sad_run(tmp_path, f"seed{i}", {"psnr": v}, config={"dataset": {"first_seed": 100 * i}})
            for i, v in enumerate(values)]
    assert run_labels(load_runs(runs)) == [f"sad (first_seed={100 * i})" for i in range(3)]
    _, folder, _ = write_study(runs, tmp_path / "cmp")
    seeds = pd.read_csv(folder / "comparison_seeds.csv").iloc[0]
    means = np.array([v.mean() for v in values])
    assert (seeds.method, seeds.first_seeds, seeds.psnr_seeds) == ("sad", "0, 100, 200", 3)
    assert (seeds.psnr_mean, seeds.psnr_std) == pytest.approx((means.mean(), means.std()), abs=1e-12)
    assert (seeds.psnr_min, seeds.psnr_max) == pytest.approx((means.min(), means.max()), abs=1e-12)
    assert "RUNS DIFFER IN SAMPLES" not in (folder / "comparison.md").read_text()


def test_editing_time_gives_median_iqr_and_load(tmp_path):
    seconds = np.random.default_rng(4).exponential(2.0, size=(10, 2))
    run = sad_run(tmp_path, "run", {"psnr": np.ones((10, 2))}, seconds=seconds)
    write_tables(run)
    row = pd.read_csv(run / "tables" / "editing_time.csv").iloc[0]
    q25, median, q75 = np.quantile(seconds.ravel(), [0.25, 0.5, 0.75])
    assert (row.edit_median_s, row.edit_q25_s, row.edit_q75_s) == pytest.approx((median, q25, q75), abs=1e-12)
    assert row.edit_iqr_s == pytest.approx(q75 - q25, abs=1e-12) and row.load_average == "1.5/1.2/1.0"
    assert "load average (1/5/15 min) per session: sad: 1.5/1.2/1.0" in (run / "tables" / "editing_time.md").read_text()


# -- figures -----------------------------------------------------------------------------
def title_boxes(fig):
    """(text, window bbox) of the suptitle and every axes title of a drawn figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [t for t in (ax.title, ax._left_title, ax._right_title)]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text()]


def assert_titles_clear(fig):
    """No two titles overlap, the suptitle overlaps no axes, and every title lies inside the figure."""
    boxes = title_boxes(fig)
    whole = fig.bbox
    for i, (text, box) in enumerate(boxes):
        assert whole.x0 - 1 <= box.x0 and box.x1 <= whole.x1 + 1 and box.y1 <= whole.y1 + 1, f"outside: {text!r}"
        for other, second in boxes[i + 1:]:
            assert not box.overlaps(second), f"titles overlap: {text!r} / {other!r}"
    if fig._suptitle is not None:
        top = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
        for ax in fig.axes:
            assert not top.overlaps(ax.get_window_extent()), f"suptitle over an axes: {fig._suptitle.get_text()!r}"


def test_alpha_sweep_title_names_model_layer_scale_and_overlaps_nothing(tmp_path):
    from PIL import Image

    from attnedit.report.plots import alpha_sweep_grid, cross_dataset_grid

    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), "gray").save(tmp_path / "images" / "ref.png")
    rows = [{"sample_id": "seed000000", "reference_path": "images/ref.png", "image_path": "images/ref.png",
             "direction": d, "label": f"direction {d}", "alpha": a, "model": "ddpm_celebahq",
             "layers": "mid_block.attentions.0", "alpha_scale": "token_norm"}
            for d in (0, 1) for a in (-0.4, 0.4)]
    fig = alpha_sweep_grid(pd.DataFrame(rows), tmp_path)
    title = fig._suptitle.get_text().replace("\n", " ")
    for words in ("model ddpm_celebahq", "layer mid_block.attentions.0", "alpha_scale token_norm"):
        assert words in title, words
    assert_titles_clear(fig)
    store = RunStore(tmp_path / "run")
    store.write_json("manifest.json", {"model": {"name": "ddpm_celebahq"}})
    store.append([{**r, "case_id": f"c{i}", "reference_path": "../images/ref.png", "image_path": "../images/ref.png"}
                  for i, r in enumerate(rows)])
    assert_titles_clear(cross_dataset_grid([store.run_dir]))


def test_dcag_and_factor_figures_keep_their_titles_clear():
    from attnedit.factors.benchmark import FACTORS, factor_plot
    from attnedit.report.dcag.figures import fidelity_vs_editability, lpips_contours

    grid = [(dk, dv) for dk in (1.0, 1.1, 1.2) for dv in (1.0, 1.1, 1.2)]
    rng = np.random.default_rng(0)
    means = pd.DataFrame([{"dk": dk, "dv": dv, "n": 3, "lpips_whole": rng.uniform(0.1, 0.3),
                           "lpips_unedit_part": rng.uniform(0.05, 0.2), "psnr_unedit_part": rng.uniform(20, 30),
                           "clip_similarity_target_image": rng.uniform(20, 30)} for dk, dv in grid])
    metrics = [c for c in means.columns if c not in ("dk", "dv", "n")]
    long = "piebench_dcag_grid (model qwen_image_edit) " + "[RANDOM-BACKBONE METRICS: test-only] " * 3
    for fig in (lpips_contours(means, metrics, long), fidelity_vs_editability(means, metrics, long)):
        assert "model qwen_image_edit" in fig._suptitle.get_text().replace("\n", " ")
        assert_titles_clear(fig)
    scores = pd.DataFrame([{"method": m, "direction": d, "share": 0.5, "linearity": 0.9, "total": 1.0,
                            **{f"change_{k}": 1.0 / len(FACTORS) for k in FACTORS}} for m in ("sad", "pca") for d in range(3)])
    fig = factor_plot(scores, "model shapes_ddpm, layer mid_block.attentions.0, alpha_scale token_norm")
    assert "alpha_scale token_norm" in fig._suptitle.get_text().replace("\n", " ")
    assert_titles_clear(fig)


def test_the_runner_draws_each_sample_figure_without_rereading_the_store(tiny_ddpm_dir, tmp_path, monkeypatch):
    from attnedit.config import compose
    from attnedit.run.runner import Runner
    from conftest import run_overrides

    reads, finishing = [], []
    read = RunStore.read
    monkeypatch.setattr(RunStore, "read", lambda self, sample_id=None: reads.append((bool(finishing), sample_id))
                        or read(self, sample_id))
    finish = Runner.finish
    monkeypatch.setattr(Runner, "finish", lambda self: finishing.append(True) or finish(self))
    run_dir = Runner(compose("config", run_overrides(tmp_path, tiny_ddpm_dir, "batch_size=3"))).run()
    assert not [r for r in reads if not r[0]], "no store read during the sample loop (rows kept in memory)"
    assert len(list((run_dir / "figures").glob("alpha_sweep_*.png"))) == 2
    rows = RunStore(run_dir).read(sample_id="seed000001")
    assert set(rows.sample_id) == {"seed000001"} and len(rows) == 4


def dcag_run(root: Path, name: str, points: dict, categories: list[str]) -> Path:
    """``points``: {(dk, dv): lpips_whole per image}; (1, 1) alone is an unedited run."""
    store = RunStore(root / name)
    unedited = list(points) == [(1.0, 1.0)]
    target = "attnedit.methods.base.NoEdit" if unedited else "attnedit.methods.bias_delta.method.BiasDelta"
    store.write_json("manifest.json", {"config": {"name": "planted_dcag", "method": {"_target_": target}},
                                       "metric_order": ["lpips_whole"], "model": {"name": "qwen", "weights_sha256_16": "w"}})
    rows = []
    for (dk, dv), values in points.items():
        for i, value in enumerate(values):
            scales = {} if unedited else {"dk": dk, "dv": dv}
            rows.append({"case_id": f"{i}|{dk}|{dv}", "sample_id": f"img{i}", "category": categories[i],
                         "method": "none" if unedited else "dcag", **scales, "lpips_whole": float(value),
                         "random_backbone": False, "model_random_weights": False})
    store.append(rows)
    return store.run_dir


def test_dcag_points_are_paired_with_the_unedited_point_and_on_request(tmp_path, capsys):
    from attnedit.cli.tables import main as tables

    rng = np.random.default_rng(5)
    base = rng.uniform(0.2, 0.4, size=40)
    noise = rng.normal(0, 0.01, size=20)
    lower = base - 0.02 + rng.normal(0, 0.01, size=40)  # a real improvement
    null = base + np.r_[noise, -noise]  # planted null
    categories = [str(i % 2) for i in range(40)]
    none = dcag_run(tmp_path, "none", {(1.0, 1.0): base}, categories)
    grid = dcag_run(tmp_path, "grid", {(1.1, 1.15): lower, (1.1, 1.0): null}, categories)
    tables([str(grid), str(none), "--out", str(tmp_path / "study"), "--pair", "dk=1.1,dv=1", "dk=1.1,dv=1.15"])
    paired_csv = pd.read_csv(tmp_path / "study" / "tables" / "paired_vs_none.csv").set_index(["dk", "dv"])
    column = "LPIPS whole [x10^3] Δ"
    for point, values, significant in (((1.1, 1.15), lower, True), ((1.1, 1.0), null, False)):
        row = paired_csv.loc[point]
        assert row[f"{column}_p"] == pytest.approx(sps.wilcoxon(values - base).pvalue, rel=1e-12)
        assert row[f"{column}_diff"] == pytest.approx((values - base).mean() * 1e3, abs=1e-9)
        assert bool(row[f"{column}_significant"]) is significant
    by_category = pd.read_csv(tmp_path / "study" / "tables" / "paired_vs_none_by_category_lpips_whole.csv")
    odd = np.arange(40) % 2 == 1
    row = by_category.set_index(["dk", "dv"]).loc[(1.1, 1.15)]
    assert row["1 " + __import__("attnedit.data.piebench", fromlist=["x"]).CATEGORY_NAMES["1"] + " [x10^3] Δ_p"] == \
        pytest.approx(sps.wilcoxon(lower[odd] - base[odd]).pvalue, rel=1e-12)
    pair = pd.read_csv(tmp_path / "study" / "tables" / "paired_1.csv")
    assert pair.category[0] == "all" and pair[f"{column}_p"][0] == pytest.approx(sps.wilcoxon(lower - null).pvalue)
    assert "grid point dk=1.1,dv=1.15 against dk=1.1,dv=1" in (tmp_path / "study" / "tables" / "paired_1.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        tables([str(grid), str(none), "--pair", "dk=1.3", "dk=1.1,dv=1"])
    assert "grid point 'dk=1.3' is not in these runs" in capsys.readouterr().err
