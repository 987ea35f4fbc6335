"""The SAD baselines against independent computations: pullback's local basis against
the SVD of the full Jacobian (torch.func.jacrev), h-space PCA against numpy PCA of the
same features, seeded random directions; pullback's edit and its honest timing; all
four methods through the runner into one comparison and editing-time table."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import UNet2DModel
from omegaconf import OmegaConf

from attnedit.backends.ddpm import DDPMBackend
from attnedit.backends.tiny import TINY_UNET, build_tiny_ddpm
from attnedit.cli import compose, tables
from attnedit.comparison import build_comparison, comparison_table
from attnedit.data.base import Sample
from attnedit.errors import ConfigError
from attnedit.methods.auto_labels import auto_label
from attnedit.methods.hspace_pca import HSpacePCA
from attnedit.methods.local_basis import h_space, plain_attention, subspace_iteration
from attnedit.methods.pullback import Pullback
from attnedit.methods.random_directions import RandomDirections
from attnedit.runner import Runner
from attnedit.store import RunStore
from attnedit.timing import MIXED_MACHINES_MARK, timing_table
from conftest import REPO, run_overrides

CORE = ("case_id", "sample_id", "method", "direction", "label", "alpha", "alpha_scale", "layers", "position",
        "source_text", "target_text", "ssim", "psnr", "seconds_per_case", "batch_size", "model_random_weights")


# -- pullback: the local basis ------------------------------------------------------------
def small_unet() -> UNet2DModel:
    """8x8 input, mid block at 2x2x16: J is 64 x 192, cheap for jacrev; float64."""
    torch.manual_seed(0)
    config = dict(TINY_UNET, sample_size=8, block_out_channels=(8, 16, 16), norm_num_groups=4,
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    return UNet2DModel(**config).double().eval().requires_grad_(False)


def test_local_basis_matches_svd_of_the_full_jacobian():
    unet = small_unet()
    x = torch.randn(3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with plain_attention(unet):
        f = h_space(unet, 600)
        jacobian = torch.func.jacrev(lambda z: f(z[None])[0].flatten())(x).reshape(-1, x.numel())
        found = subspace_iteration(f, x, k=3, max_iters=60, tol=1e-4, seed=0)
        h = f(x[None])
    _, s, vh = torch.linalg.svd(jacobian)
    assert found.converged and found.iterations < 60
    torch.testing.assert_close(found.singular_values, s[:3], rtol=1e-7, atol=0)
    got = found.vectors.flatten(1)
    np.testing.assert_allclose((got @ vh[:3].T).diagonal().abs().numpy(), 1.0, atol=1e-7)  # up to sign
    torch.testing.assert_close(got @ got.T, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (got.gather(1, got.abs().argmax(1, keepdim=True)) > 0).all(), "largest entry positive"
    assert found.h_norm == pytest.approx(float(h.norm()), rel=1e-12)


def test_plain_attention_is_restored_and_h_space_skips_the_up_path():
    unet = small_unet()
    before = [type(m.processor) for m in unet.modules() if hasattr(m, "processor")]
    ran = []
    handle = unet.up_blocks[0].register_forward_hook(lambda *a: ran.append(1))
    with plain_attention(unet):
        h = h_space(unet, 500)(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    handle.remove()
    assert h.shape == (2, 16, 2, 2) and not ran
    assert [type(m.processor) for m in unet.modules() if hasattr(m, "processor")] == before
    assert not any(m._forward_hooks for m in unet.modules())


# -- pullback: the edit ---------------------------------------------------------------------
def pullback(backend, **kw) -> Pullback:
    method = Pullback(**{"directions": [0, 1], "alphas": [0.5], "t_edit": 0.6, "max_iters": 1, **kw})
    method.setup(backend)
    return method


def test_pullback_moves_each_x_t_along_its_own_singular_vector(tiny_backend):
    method = pullback(tiny_backend, alpha_scale="h_norm")
    assert method.timestep == 600 and method.first_timestep == 900
    edits = [{**method.edits()[0], "alpha": 0.5}, {**method.edits()[1], "alpha": -0.3}]  # directions 0, 1
    x_T = tiny_backend.initial_noise([3, 4])
    x_t = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    with method.control(tiny_backend, edits) as control:
        assert torch.equal(control.latent_hook(900, x_T), x_T)  # not t_edit: untouched
        out = control.latent_hook(600, x_t)
    with plain_attention(tiny_backend.unet):
        for i, (edit, k) in enumerate(zip(edits, (0, 1))):
            ref = subspace_iteration(h_space(tiny_backend.unet, 600), x_t[i], 2, max_iters=1, tol=1e-4, seed=0)
            step = edit["alpha"] * ref.h_norm / float(ref.singular_values[k]) * ref.vectors[k]
            torch.testing.assert_close(out[i], x_t[i] + step, atol=1e-5, rtol=1e-5)
            extras = control.row_extras[i]
            assert extras["singular_value"] == pytest.approx(float(ref.singular_values[k]), rel=1e-4)
            assert extras["x_step_ratio"] == pytest.approx(float(step.norm() / x_t[i].norm()), rel=1e-4)
    # Two samples, both decomposed in this batch: each row carries half of the batch's decomposition time.
    total = sum(e["discovery_seconds_per_sample"] for e in control.row_extras)
    assert all(e["discovery_share_seconds"] == pytest.approx(total / 2) for e in control.row_extras)


@pytest.fixture(scope="module")
def short_backend(tiny_ddpm_dir):
    return DDPMBackend(str(tiny_ddpm_dir), device="cpu", num_inference_steps=3)  # timesteps 666, 333, 0


def test_pullback_reuses_a_samples_decomposition_and_alpha_zero_is_unedited(short_backend):
    method = pullback(short_backend, alphas=[0.0, 0.4], directions=[1], t_edit=0.4)
    assert method.timestep == 333
    s = [Sample(id="s", seed=11)] * 2
    reference = short_backend.generate(s)
    with method.control(short_backend, method.edits()) as first:
        edited = short_backend.generate(s, first)
    assert torch.equal(edited[0], reference[0]) and not torch.allclose(edited[1], reference[1])
    seconds = first.row_extras[0]["discovery_seconds_per_sample"]
    assert seconds > 0 and first.row_extras[0]["discovery_share_seconds"] == pytest.approx(seconds / 2)
    with method.control(short_backend, method.edits()[1:]) as again:  # another batch, same sample
        torch.testing.assert_close(short_backend.generate(s[:1], again), edited[1:], atol=2e-3, rtol=0)  # batch rounding
    reused, before = again.row_extras[0], first.row_extras[1]
    assert reused["discovery_share_seconds"] == 0.0, "nothing decomposed again"
    for key in ("discovery_seconds_per_sample", "singular_value", "pullback_iterations"):
        assert reused[key] == before[key], key


@pytest.mark.parametrize("bad, match", [
    ({"alpha_scale": "huge"}, "alpha_scale"), ({"t_edit": 0.0}, "t_edit"),
    ({"directions": [0, 4], "num_vectors": 3}, "num_vectors"), ({"max_iters": 0}, "max_iters"),
])
def test_pullback_rejects_bad_settings(bad, match):
    with pytest.raises(ConfigError, match=match):
        Pullback(**bad)


# -- h-space PCA -------------------------------------------------------------------------------
LAYER = "down_blocks.4.attentions.0"  # 4x4 tokens of 64 channels in the tiny model


def numpy_pca(backend, seeds, layer):
    """Collect the GroupNorm outputs of ``layer`` at every step in (0, T) with an own hook,
    then PCA in float64 numpy: SVD of the centered token matrix."""
    tokens, now = [], {}
    unet, attn = backend.unet, backend.self_attention_layers()[layer]
    h1 = unet.register_forward_pre_hook(lambda m, a: now.update(t=int(a[1])))
    h2 = attn.group_norm.register_forward_hook(
        lambda m, i, z: tokens.append(z.double().numpy().reshape(len(z), z.shape[1], -1).transpose(0, 2, 1).reshape(-1, z.shape[1]))
        if 0 < now["t"] < 1000 else None)
    try:
        backend.denoise(backend.initial_noise(seeds))
    finally:
        h1.remove(), h2.remove()
    z = np.concatenate(tokens)
    _, s, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    return s**2 / (len(z) - 1), vt, len(z)


def test_pca_directions_match_numpy_pca_of_the_same_features(short_backend, tmp_path):
    tiny_backend = short_backend
    method = HSpacePCA(num_samples=3, first_seed=5000, discovery_batch_size=3, layers=[LAYER], directions=5,
                       window=[0.0, 1.0])
    method.setup(tiny_backend, cache_dir=str(tmp_path))
    got = method.directions[LAYER]
    variances, vt, n = numpy_pca(tiny_backend, [5000, 5001, 5002], LAYER)
    assert n == 3 * 2 * 16  # samples x steps in (0, T) (666, 333) x tokens
    np.testing.assert_allclose(got.eigenvalues[:10], variances[:10], rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(got.eigenvectors[:5] * vt[:5], axis=1)), 1.0, atol=1e-7)
    biggest = got.eigenvectors[np.arange(64), np.abs(got.eigenvectors).argmax(1)]
    assert np.all(biggest > 0) and np.all(np.diff(got.eigenvalues) <= 0)
    # a second setup reads the cache and still reports what the computation took
    again = HSpacePCA(num_samples=3, first_seed=5000, layers=[LAYER], directions=5, window=[0.0, 1.0])
    again.setup(tiny_backend, cache_dir=str(tmp_path))
    assert again.discovery_cached and np.array_equal(again.directions[LAYER].eigenvectors, got.eigenvectors)
    assert again.describe()["discovery_compute_seconds"] == method.discovery_compute_seconds > 0


# -- random directions ---------------------------------------------------------------------------
def test_random_directions_are_unit_seeded_and_per_layer(tiny_backend):
    def make(seed, directions, layers=("mid_block.attentions.0", LAYER)):
        method = RandomDirections(seed=seed, directions=directions, layers=list(layers))
        method.setup(tiny_backend)
        return {name: d.eigenvectors for name, d in method.directions.items()}

    a, b, c = make(3, [0, 2]), make(3, 3), make(4, 3)
    for name, vectors in a.items():
        assert vectors.shape == (3, 64)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-12)
        assert np.array_equal(vectors, b[name]) and not np.allclose(vectors, c[name])
        rng = np.random.default_rng([3, zlib.crc32(name.encode())])  # the documented recipe
        draws = rng.standard_normal((3, 64))
        np.testing.assert_allclose(vectors, draws / np.linalg.norm(draws, axis=1, keepdims=True), rtol=1e-12)
    assert not np.allclose(a["mid_block.attentions.0"], a[LAYER])
    assert np.array_equal(make(3, 1, [LAYER])[LAYER], a[LAYER][:1]), "independent of the other layers and count"


# -- automatic labels for a baseline's own directions --------------------------------------------
class FakeClip:
    """Deterministic stand-ins for CLIP embeddings: the mean colour, and fixed text vectors."""

    weights = "fake"

    def embed_images(self, images):
        return images.mean(dim=(2, 3))

    def embed_texts(self, texts):
        table = {"x": [0.0, 0.0, 0.0], "red": [1.0, 0.0, 0.0], "blue": [0.0, 0.0, 1.0]}
        return torch.tensor([table[t] for t in texts])


def test_baselines_label_their_own_directions(short_backend):
    backend = short_backend
    method = RandomDirections(directions=[0, 1], labels={1: {"label": "kept", "source": "a", "target": "b"}},
                              window=[0.0, 1.0], alphas=[0.4],
                              labeling={"num_probes": 1, "first_seed": 7, "alpha": 0.4,
                                        "vocabulary": [["redder", "x", "red"], ["bluer", "x", "blue"]],
                                        "clip": {"_target_": "test_baselines.FakeClip"}})
    method.setup(backend)
    assert method.labels[1]["label"] == "kept", "labels given in config win"
    entry = method.labels[0]
    assert entry["label"] in ("redder", "bluer") and entry["labeled_by"].endswith("weights=fake")
    # recompute the winning (attribute, sign) independently: each sign's colour change from the unedited probe
    probe = [Sample(id="p", seed=7)]
    unedited = backend.generate(probe).mean(dim=(2, 3))[0].double()
    scores = {}
    for sign in (1, -1):
        with method.control(backend, [{**method.edits()[0], "alpha": 0.4 * sign}]) as control:
            colour = backend.generate(probe, control).mean(dim=(2, 3))[0].double()
        change = torch.nn.functional.normalize(colour - unedited, dim=0)
        scores.update({("redder", sign): float(change[0]), ("bluer", sign): float(change[2])})
    best, sign = max(scores, key=scores.get)
    assert (entry["label"], entry["sign"]) == (best, sign)
    assert entry["score"] == pytest.approx(scores[best, sign], abs=1e-5)
    edit = method.edits()[0]  # alpha +0.4: the label's texts if its sign is +, else reversed
    texts = (entry["source"], entry["target"])
    assert (edit["source_text"], edit["target_text"]) == (texts if sign > 0 else texts[::-1])
    with pytest.raises(ConfigError, match="lacks"):
        auto_label(method, backend, {"alpha": 0.4})


# -- the comparison experiment ----------------------------------------------------------------
def test_celebahq_compare_composes_in_step_with_celebahq_sad():
    sad = compose("config", ["experiment=celebahq_sad"])
    directions = compose("directions", [])
    for choice, target in (("sad", "sad.SAD"), ("pullback", "pullback.Pullback"),
                           ("hspace_pca", "hspace_pca.HSpacePCA"), ("random", "random_directions.RandomDirections")):
        cfg = compose("config", ["experiment=celebahq_compare", f"compare={choice}"])
        assert cfg.name == "celebahq_compare" and cfg.method._target_ == f"attnedit.methods.{target}"
        for key in ("model.path", "model.num_inference_steps", "model.eta", "dataset.num_samples",
                    "dataset.first_seed", "method.directions", "method.alphas", "batch_size", "tables.reference"):
            assert OmegaConf.select(cfg, key) == OmegaConf.select(sad, key), key
        assert list(cfg.metrics) == list(sad.metrics)
        if choice == "sad":
            assert cfg.method.directions_file == sad.method.directions_file
        else:
            assert "directions_file" not in cfg.method
            for key in ("num_probes", "first_seed", "alpha", "vocabulary"):
                assert cfg.method.labeling[key] == directions.labeling[key], key


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    model = build_tiny_ddpm(root / "tiny32", sample_size=32)  # the tiny DDPM at a quarter of the pixels
    # pullback one case per batch: a sample's second batch must reuse its decomposition
    extra = {"pullback": ["method.max_iters=1", "batch_size=1"], "hspace_pca": ["method.num_samples=4", "batch_size=2"]}
    runs = {}
    for method in ("sad", "pullback", "hspace_pca", "random"):
        overrides = [o for o in run_overrides(root, model)
                     if not o.startswith(("dataset.", "model.num_", "method.alphas", "batch_size"))]
        cfg = compose("config", [*overrides, f"method={method}", "dataset.num_samples=2", "model.num_inference_steps=3",
                                 "method.alphas=[0.4]", "save_images=false", *extra.get(method, ["batch_size=2"]),
                                 f"tables.reference={REPO}/results/reference/sad_celebahq_table2.csv"])
        runs[method] = Runner(cfg).run()
    return runs


def test_all_methods_produce_rows_with_the_same_core_columns(four_runs):
    frames = {m: pd.read_parquet(d / "cases") for m, d in four_runs.items()}
    keys = None
    for method, frame in frames.items():
        assert set(CORE) <= set(frame.columns), (method, set(CORE) - set(frame.columns))
        assert (frame.method == method).all() and len(frame) == 4
        cases = sorted(zip(frame.sample_id, frame.direction, frame.alpha))
        assert keys is None or cases == keys, "same samples, directions and alphas"
        keys = cases
    rows = frames["pullback"]
    per_sample = rows.groupby("sample_id").discovery_seconds_per_sample.first()
    assert (per_sample > 0).all() and rows.x_step_ratio.gt(0).all() and (rows.position == "x_t").all()
    # honest accounting: the shares in seconds_per_case add up to one decomposition per sample
    assert rows.discovery_share_seconds.sum() == pytest.approx(per_sample.sum(), rel=1e-9)
    assert (rows.discovery_share_seconds == 0).sum() == 2, "each sample decomposed once, in its first batch"
    assert (rows.seconds_per_case >= rows.discovery_share_seconds).all()


def test_one_comparison_table_and_the_editing_time_table(four_runs, tmp_path, capsys):
    dirs = [str(d) for d in four_runs.values()]
    tables([*dirs, "--out", str(tmp_path)])
    assert "comparison:" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "comparison.csv", keep_default_na=False)
    assert table.method.tolist() == ["sad", "pullback", "hspace_pca", "random", "SAD", "Riemannian pullback"]
    assert list(table.columns) == ["method", "n", "samples", "ssim", "psnr", "source"]
    assert table.source[:4].str.startswith("measured").all() and table.source[4].startswith("SAD paper")
    table = table[:4].astype({"n": int})
    assert (table.n == 4).all()
    for method, run_dir in four_runs.items():
        frame = pd.read_parquet(run_dir / "cases")
        mean, std = (float(v) for v in table.set_index("method").psnr[method].split(" ± "))
        assert mean == pytest.approx(frame.psnr.mean(), abs=1e-4) and std == pytest.approx(frame.psnr.std(ddof=0), abs=1e-4)
    assert comparison_table(dirs).method.tolist() == table.method.tolist(), "published rows only in the files"
    for name in ("comparison", "comparison_by_alpha", "comparison_editing_time"):
        for suffix in ("md", "csv", "tex"):
            assert (tmp_path / f"{name}.{suffix}").exists()
    assert "RANDOM MODEL WEIGHTS" in (tmp_path / "comparison.md").read_text()

    timing = pd.read_csv(tmp_path / "comparison_editing_time.csv").set_index("method")
    assert "measured on cpu on" in (tmp_path / "comparison_editing_time.md").read_text()
    for method, run_dir in four_runs.items():  # recompute from the rows and manifest
        frame = pd.read_parquet(run_dir / "cases")
        manifest = json.loads((run_dir / "manifest.json").read_text())["method"]
        once = manifest.get("discovery_compute_seconds") or manifest["discovery_seconds"]
        share = frame.get("discovery_share_seconds", pd.Series(0.0, index=frame.index)).fillna(0.0)
        per_sample = frame.groupby("sample_id").discovery_seconds_per_sample.first().mean() if method == "pullback" else 0
        edit = (frame.seconds_per_case - share).mean()
        assert timing.edit_s[method] == pytest.approx(edit, rel=1e-6)
        assert timing.total_s[method] == pytest.approx(once + 100 * per_sample + 1500 * edit, rel=1e-6)
    assert timing.discovery.to_dict() == {"sad": "once per model", "pullback": "per sample",
                                          "hspace_pca": "once per model", "random": "once per model"}
    assert timing.total_vs_sad["sad"] == 1.0
    assert (Path(dirs[0]) / "tables" / "editing_time.csv").exists(), "each run's own tables hold its timing too"


def test_timing_table_marks_runs_from_different_machines(four_runs, tmp_path):
    import shutil

    moved = tmp_path / "elsewhere"
    shutil.copytree(four_runs["random"], moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["host"]["hostname"] = "another-host"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    from attnedit.timing import timing_title

    table = timing_table([four_runs["sad"], moved])
    assert MIXED_MACHINES_MARK in timing_title(table) and set(table.host) == {table.host[0], "another-host"}


def test_comparison_means_leave_out_alpha_zero(four_runs, tmp_path):
    """alpha = 0 rows (the unedited sample) stay out of the means over alphas, not out of the per-alpha table."""
    import shutil

    moved = tmp_path / "with_zero"
    shutil.copytree(four_runs["sad"], moved)
    store = RunStore(moved)
    frame = store.read()
    frame.loc[frame.index[:2], "alpha"] = 0.0
    for part in store.part_files():
        part.unlink()
    frame.to_parquet(store.cases_dir / "part-00000.parquet", index=False)
    table = comparison_table([moved])
    edits = frame[frame.alpha != 0]
    assert table.n.tolist() == [len(edits)] == [2]
    assert table.psnr[0] == f"{edits.psnr.mean():.4f} ± {edits.psnr.std(ddof=0):.4f}"
    title, tables, _ = build_comparison([moved])
    assert sorted(tables["comparison_by_alpha"].alpha) == [0.0, 0.4]
    assert "alpha = 0 rows (no edit) left out" in title
