"""h-space PCA (Haas et al., "Discovering interpretable directions in the semantic latent
space of diffusion models", FG 2024; the h-space of Asyrp, Kwon et al., ICLR 2023):
principal components of the UNet mid-block output h over generated samples, per sampler
step, added to h.

Read from renhaa/semantic-diffusion at commit 91f0a15:
- h is the mid-block output and the edit adds delta_h there (semanticdiffusion.py:158-161,
  ``h_space="after"``, the setting of editing/incremental_pca.py:94-96); the edited eps
  enters both DDIM terms (``asyrp=False``, the default of ``reverse_process``, :410-443);
- one PCA per sampler step (``method="indv"``, the Config default, incremental_pca.py:81;
  fitted at :31-42) over 50000 samples drawn with eta 1 (Config :76-80, ``sd.sample(etas=
  cfg.etas)`` at :34), 25 components, 50 steps;
- PC_{k,t} = s_{k,t} * u_{k,t}: the singular value of the centered (N x D) data matrix
  times the unit component (:49, :54; sklearn IncrementalPCA ``singular_values_``);
- signs: sklearn's ``svd_flip(u_based_decision=False)`` (each component's largest |entry|
  positive, in IncrementalPCA.partial_fit), then each PC's steps flipped to agree with its
  first step (editing/pca.py:18-31, applied at incremental_pca.py:56);
- the edit: delta_h_t = a * PC_{k,t} at every step, a in linspace(-strength, strength, 5)
  with strength 0.1 (``plot_pc``, :64-71 and :108).

Here: exact PCA per step (float64, :func:`per_step_pca`; IncrementalPCA approximates it
batch-wise), and

    h_t' = h_t + alpha * strength * size_{k,t} * u_{k,t}

with ``alpha_scale``:
- ``singular_value`` (default): size = sqrt(singular_value_samples - 1) * std_{k,t}, i.e.
  s_{k,t} of a data matrix of ``singular_value_samples`` rows. At the default 50000 (the
  public N) the edit has the published size whatever ``num_samples`` estimated std from
  (s grows as sqrt(N)); null = this run's own s_{k,t};
- ``std``: size = std_{k,t}, the component's standard deviation over the samples;
- ``h_norm``: size = ||h_t|| of this sample at this step (alpha * strength is then the
  relative change of h, as SAD's token_norm).
``strength`` 0.1 and alphas (-1, -0.5, 0.5, 1) are the published sweep. Every row records
``delta_h_ratio``, the mean over edited steps of ||delta_h|| / ||h||: what one alpha meant.

Edit conditions (``edit_eta``): the reference edits eta-1 samples with stored noise. Its
figure samples are ``sd.sample(etas=cfg.etas, seed=s)`` with ``etas`` 1
(incremental_pca.py:79, 107), which draws the variance noise of every step once, from
seed + 1 (semanticdiffusion.py:976-981); ``plot_pc`` decodes copies of that sample, noise
included, with delta_h added (incremental_pca.py:67-68; ``decode`` passes ``q.zs`` and
``q.etas``, semanticdiffusion.py:954-960; ``reverse_process`` adds z_t at each step,
:440-443), so the a = 0 column is the unedited eta-1 sample with the same noise.
``edit_eta: 1`` does that: every step at eta 1, scored against the unedited sample under
the same sampler with the same noise (:meth:`HSpacePCA.sampler_control`; the noise comes
from each sample's own generator after x_T, not from a second seed). ``edit_eta: null``
(the default, the harness before the key) edits at ``model.eta`` (0), the sampler every
method of a comparison shares. Every edited row records ``edit_eta`` (the resolved eta;
not an edit key, so case ids stay those of runs made before the key), and table titles
say when it is not the reference's 1.
On the shipped shapes DDPM (20 steps; experiments/celebahq_compare/measure_sampler.py) the
published edit (alpha +-1, 4 directions, 8 samples) scores PSNR 30.6 dB / SSIM 0.925 at
eta 0 and 30.0 dB / 0.934 at eta 1 against each one's own unedited sample; against the
eta-0 sample the eta-1 edits would score 11.7 dB / 0.52 (another sample altogether).

Deviations (named options, in every row): ``num_samples`` (default 1000, not 50000: the
features are kept for an exact PCA, N x steps x D x 4 bytes, 6.5 GB for CelebA-HQ at
1000; over ``max_feature_gb`` is a config error); ``window`` (null = every step, as the
public code; [lo, hi] = steps with lo*T < t < hi*T, SAD's rule).

Directions are cached under <cache_dir>/directions keyed by the model weights, sampler
and every setting above; the cache remembers how long the computation took.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from attnedit.backends.base import Control
from attnedit.errors import ConfigError
from attnedit.methods.auto_labels import auto_label
from attnedit.methods.base import EditMethod, as_index_list
from attnedit.methods.injection import timestep_of_call
from attnedit.methods.labeling import LabeledEdits, case_texts

ALPHA_SCALES = ("singular_value", "std", "h_norm")


def _output_tensor(output) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def mid_block_hook(unet, on_output) -> Iterator[None]:
    """``on_output(t, h) -> h | None`` on every mid-block output, t the timestep of the
    UNet call; a returned tensor replaces h. Hooks removed on exit."""
    now: dict[str, int] = {}

    def record(module, args, kwargs):
        now["t"] = timestep_of_call(args, kwargs)

    def hook(module, args, output):
        h = _output_tensor(output)
        new = on_output(now["t"], h)
        if new is None:
            return output
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handles = [unet.register_forward_pre_hook(record, with_kwargs=True), unet.mid_block.register_forward_hook(hook)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def per_step_pca(features: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(components (k, D) float64 unit rows, singular values (k,) of the centered matrix)
    of one step's features (N, D); signs: largest |entry| positive (sklearn's svd_flip).

    The eigendecomposition of the centered matrix's float64 Gram matrix on its smaller
    side (X X^T if N <= D, then u_k = X^T w_k / ||X^T w_k||; else X^T X): the SVD's
    result (measured within 1e-14 of it) at a fraction of the cost, the reference's
    incremental PCA included (benchmarks/bench_baselines.py). The top k are accurate
    while s_1 / s_k stays far below 1e8 (eigenvalue error ~ eps * s_1^2)."""
    x = features.double()
    x = x - x.mean(0)
    if len(x) <= x.shape[1]:
        lam, w = torch.linalg.eigh(x @ x.T)  # ascending
        comps = w[:, -k:].flip(1).T @ x
        comps = comps / comps.norm(dim=1, keepdim=True).clamp_min(1e-300)
    else:
        lam, w = torch.linalg.eigh(x.T @ x)
        comps = w[:, -k:].flip(1).T
    s = lam[-k:].flip(0).clamp_min(0).sqrt()
    picked = comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    return comps * torch.where(picked < 0, -1.0, 1.0).to(comps.dtype)[:, None], s[:k]


def align_to_first_step(components: Tensor) -> Tensor:
    """(S, k, D): flip step t's component k where it points against step 0's (pca.py:18-31)."""
    signs = torch.where((components * components[:1]).sum(-1) < 0, -1.0, 1.0).to(components.dtype)
    return components * signs[..., None]


class HSpacePCA(LabeledEdits, EditMethod):
    def __init__(
        self,
        name: str = "hspace_pca",
        directions: list[int] | int = 3,
        alphas: list[float] = (-1.0, -0.5, 0.5, 1.0),
        alpha_scale: str = "singular_value",
        strength: float = 0.1,
        singular_value_samples: int | None = 50_000,
        window: tuple[float, float] | None = None,
        num_samples: int = 1000,
        first_seed: int = 1_000_000,
        discovery_batch_size: int = 8,
        discovery_eta: float = 1.0,
        edit_eta: float | None = None,
        max_feature_gb: float = 16.0,
        labels: dict | None = None,
        labeling: dict | None = None,
        progress: bool = True,
    ) -> None:
        if alpha_scale not in ALPHA_SCALES:
            raise ConfigError(f"method.alpha_scale={alpha_scale!r} is not one of {ALPHA_SCALES}")
        if window is not None and not 0.0 <= float(window[0]) < float(window[1]) <= 1.0:
            raise ConfigError(f"method.window={list(window)} must be null (every step) or [lo, hi] with 0 <= lo < hi <= 1")
        if int(num_samples) < 2 or int(discovery_batch_size) < 1:
            raise ConfigError(f"method.num_samples={num_samples} must be >= 2 and "
                              f"method.discovery_batch_size={discovery_batch_size} >= 1")
        if singular_value_samples is not None and int(singular_value_samples) < 2:
            raise ConfigError(f"method.singular_value_samples={singular_value_samples} must be >= 2 or null")
        self.name = name
        self.direction_ids = as_index_list(directions)
        if not self.direction_ids or min(self.direction_ids) < 0:
            raise ConfigError(f"method.directions={directions} must name at least one index >= 0")
        if max(self.direction_ids) + 1 > int(num_samples) - 1:
            raise ConfigError(f"direction {max(self.direction_ids)} needs more samples: a PCA of "
                              f"method.num_samples={num_samples} has {int(num_samples) - 1} components")
        self.alphas = [float(a) for a in alphas]
        self.alpha_scale = alpha_scale
        self.strength = float(strength)
        self.singular_value_samples = None if singular_value_samples is None else int(singular_value_samples)
        self.window = None if window is None else (float(window[0]), float(window[1]))
        self.num_samples = int(num_samples)
        self.first_seed = int(first_seed)
        self.discovery_batch_size = int(discovery_batch_size)
        self.discovery_eta = float(discovery_eta)
        if edit_eta is not None and not 0.0 <= float(edit_eta) <= 1.0:
            raise ConfigError(f"method.edit_eta={edit_eta} must be null (model.eta) or in [0, 1] (1: the reference's)")
        self.edit_eta = None if edit_eta is None else float(edit_eta)
        self.sampler_eta: float | None = None  # the eta edits run at, resolved in setup
        self.own_sampler = False  # True where that is not model.eta (then every step differs)
        self.first_step: int | None = None  # the sampler's first timestep
        self.max_feature_gb = float(max_feature_gb)
        self.labels = {int(k): dict(v) for k, v in (labels or {}).items()}
        self.labeling = labeling
        self.labeling_seconds = 0.0
        self.progress = bool(progress)
        self.steps: list[int] = []  # timesteps edited (and analysed), in sampling order
        self.components: Tensor | None = None  # (S, k, D) float32 unit rows
        self.singular_values: Tensor | None = None  # (S, k) float64, this run's s_{k,t}
        self.discovery_seconds = 0.0
        self.discovery_cached = False
        self.discovery_compute_seconds: float | None = None

    # -- discovery ------------------------------------------------------------------------
    def edit_steps(self, backend) -> list[int]:
        steps = backend.timesteps()
        if self.window is None:
            return steps
        lo, hi = (w * backend.num_train_timesteps for w in self.window)
        chosen = [t for t in steps if lo < t < hi]
        if not chosen:
            raise ConfigError(f"method.window={list(self.window)} holds no sampler step of {steps}; widen it")
        return chosen

    def _cache_path(self, backend, cache_dir: str | None) -> Path | None:
        if not cache_dir:
            return None
        info = backend.describe()
        key = {"weights": info["weights_sha256_16"], "sampler": info["settings"].get("sampler"), "steps": self.steps,
               "num_samples": self.num_samples, "first_seed": self.first_seed, "eta": self.discovery_eta,
               "k": max(self.direction_ids) + 1}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return Path(cache_dir) / "directions" / f"hspace_pca-{digest}.safetensors"

    def features(self, backend) -> list[Tensor]:
        """Per edit step, (N, D) float32 on the CPU: h of each discovery sample."""
        dims = None
        found: dict[int, list[Tensor]] = {t: [] for t in self.steps}

        def keep(t: int, h: Tensor) -> None:
            if t in found:
                found[t].append(h.detach().float().flatten(1).cpu())

        seeds = list(range(self.first_seed, self.first_seed + self.num_samples))
        batches = [seeds[i: i + self.discovery_batch_size] for i in range(0, len(seeds), self.discovery_batch_size)]
        eta_at = None if self.discovery_eta == float(backend.eta) else (lambda t: self.discovery_eta)
        with mid_block_hook(backend.unet, keep):
            for batch in tqdm(batches, desc=f"{self.name}: discovery samples", unit="batch", leave=False,
                              disable=not self.progress):
                x_T, generators = backend.seeded_start(batch)
                backend.denoise(x_T, generators=generators, eta_at=eta_at)
                if dims is None:
                    dims = found[self.steps[0]][0].shape[1]
                    need = self.num_samples * len(self.steps) * dims * 4 / 2**30
                    if need > self.max_feature_gb:
                        raise ConfigError(
                            f"h-space PCA would keep {need:.1f} GB of features ({self.num_samples} samples x "
                            f"{len(self.steps)} steps x {dims} dims); lower method.num_samples, narrow method.window "
                            f"or raise method.max_feature_gb={self.max_feature_gb}")
        return [torch.cat(found.pop(t)) for t in self.steps]  # one step's batches freed as the next is joined

    def discover(self, backend) -> None:
        k = max(self.direction_ids) + 1
        features = self.features(backend)
        device = backend.device if backend.device.type == "cuda" else torch.device("cpu")
        comps, svals = zip(*(per_step_pca(f.to(device), k) for f in features))
        self.components = align_to_first_step(torch.stack(comps)).float().cpu()
        self.singular_values = torch.stack(svals).cpu()

    def setup(self, backend, cache_dir: str | None = None) -> None:
        self.steps = self.edit_steps(backend)
        self.sampler_eta = float(backend.eta) if self.edit_eta is None else self.edit_eta
        self.own_sampler = self.sampler_eta != float(backend.eta)
        self.first_step = max(backend.timesteps())
        start = time.perf_counter()
        cache = self._cache_path(backend, cache_dir)
        if cache is not None and cache.exists() and cache.with_suffix(".json").exists():
            stored = load_file(str(cache))
            self.components, self.singular_values = stored["components"], stored["singular_values"]
            self.discovery_cached = True
            self.discovery_compute_seconds = float(json.loads(cache.with_suffix(".json").read_text())["seconds"])
        else:
            self.discover(backend)
            self.discovery_compute_seconds = time.perf_counter() - start
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                save_file({"components": self.components.contiguous(), "singular_values": self.singular_values.contiguous()},
                          str(cache))
                cache.with_suffix(".json").write_text(json.dumps({"seconds": self.discovery_compute_seconds}))
        self.discovery_seconds = time.perf_counter() - start
        if self.labeling:
            self.labeling_seconds = auto_label(self, backend, self.labeling)

    # -- editing --------------------------------------------------------------------------
    def is_identity(self, edit: dict[str, Any]) -> bool:
        """alpha = 0 at the backend's eta; at another eta even alpha = 0 is not its unedited sample."""
        return float(edit["alpha"]) == 0.0 and not self.own_sampler

    def identity_edit(self) -> dict[str, Any] | None:
        """alpha = 0: nothing against the unedited sample under the edits' sampler."""
        edits = self.edits()
        return {**edits[0], "alpha": 0.0} if edits else None

    def sampler_control(self, backend) -> Control | None:
        """With ``edit_eta`` other than model.eta: the edits' sampler without an edit (its
        unedited sample, same noise, is the reference); else None (the backend's)."""
        if self.sampler_eta is None:
            raise ConfigError("HSpacePCA.sampler_control() needs setup(backend) first")
        return EtaSampler(self.sampler_eta, self.first_step) if self.own_sampler else None

    def sizes(self) -> Tensor:
        """(S, k) the size_{k,t} of the singular_value and std scales."""
        std = self.singular_values / math.sqrt(self.num_samples - 1)
        if self.alpha_scale == "std":
            return std
        rows = self.num_samples if self.singular_value_samples is None else self.singular_value_samples
        return std * math.sqrt(rows - 1)

    def edits(self) -> list[dict[str, Any]]:
        shared = {
            "layers": "mid_block",
            "position": "mid_block_output",
            "alpha_scale": self.alpha_scale,
            "strength": self.strength,
            "singular_value_samples": self.singular_value_samples if self.alpha_scale == "singular_value" else None,
            "window_lo": None if self.window is None else self.window[0],
            "window_hi": None if self.window is None else self.window[1],
            "num_samples": self.num_samples,
            "discovery_eta": self.discovery_eta,
        }
        return [
            {"direction": k, "label": self.label(k), "alpha": a, **shared, **case_texts(self.labels.get(k), a)}
            for k in self.direction_ids
            for a in self.alphas
        ]

    @contextlib.contextmanager
    def control(self, backend, edits) -> Iterator["HSpaceControl"]:
        if self.components is None:
            raise ConfigError("HSpacePCA.control() needs setup(backend) first")
        control = HSpaceControl(self, list(edits))
        with mid_block_hook(backend.unet, control.edit):
            yield control

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "protocol": "h-space PCA of Haas et al. (renhaa/semantic-diffusion@91f0a15): per-step PCA of the "
                        "mid-block output, delta_h = a * s_k * u_k at every edited step",
            "discovery": "once_per_model",
            "discovery_seconds": self.discovery_seconds,
            "discovery_cached": self.discovery_cached,
            "discovery_compute_seconds": self.discovery_compute_seconds,
            "directions": self.direction_ids,
            "labels": {k: self.labels.get(k) for k in self.direction_ids},
            "labeling_seconds": self.labeling_seconds,
            "num_samples": self.num_samples,
            "seeds": [self.first_seed, self.first_seed + self.num_samples - 1],
            "discovery_eta": self.discovery_eta,
            "edit_eta": self.sampler_eta,
            "steps": self.steps,
            "alpha_scale": self.alpha_scale,
            "strength": self.strength,
            "singular_value_samples": self.singular_value_samples,
            "top_singular_values_first_step": None if self.singular_values is None else self.singular_values[0].tolist(),
            "features": "unet.mid_block output, one observation per sample and step",
        }


class EtaSampler(Control):
    """DDIM at one eta on every step, from x_T (the first step already differs)."""

    def __init__(self, eta: float, first_timestep: int) -> None:
        self.eta = float(eta)
        self.first_edit_timestep = int(first_timestep)

    def eta_at(self, t: int) -> float:
        return self.eta


class HSpaceControl(Control):
    """Adds element i's delta_h at every edit step; ``row_extras[i]`` afterwards holds the
    mean relative change of h it made (``delta_h_ratio``) and the steps edited."""

    def __init__(self, method: HSpacePCA, edits: list[dict[str, Any]]) -> None:
        self.method, self.edits = method, edits
        self.index = {t: j for j, t in enumerate(method.steps)}
        self.first_edit_timestep = max(method.steps)
        self.directions = torch.tensor([int(e["direction"]) for e in edits])
        self.factors = torch.tensor([float(e["alpha"]) * method.strength for e in edits], dtype=torch.float64)
        self.sizes = None if method.alpha_scale == "h_norm" else method.sizes()
        self.ratios = torch.zeros(len(edits), dtype=torch.float64)
        self.count = 0
        if method.own_sampler:  # every step at edit_eta, with the noise of the sample's unedited run
            self.first_edit_timestep = method.first_step
            self.eta_at = lambda t: method.sampler_eta

    def edit(self, t: int, h: Tensor) -> Tensor | None:
        if t not in self.index:
            return None
        if len(h) != len(self.edits):
            raise ConfigError(f"hspace_pca: batch of {len(h)} features but {len(self.edits)} edits")
        j = self.index[t]
        u = self.method.components[j, self.directions].double()  # (B, D)
        norms = h.detach().flatten(1).double().norm(dim=1).cpu()
        size = norms if self.sizes is None else self.sizes[j, self.directions]
        delta = (self.factors * size)[:, None] * u
        self.ratios += delta.norm(dim=1) / norms.clamp_min(1e-30)
        self.count += 1
        return h + delta.view(h.shape).to(h.device, h.dtype)

    @property
    def row_extras(self) -> list[dict[str, Any]]:
        return [{"delta_h_ratio": float(r / max(self.count, 1)), "edited_steps": self.count,
                 "edit_eta": self.method.sampler_eta} for r in self.ratios]
