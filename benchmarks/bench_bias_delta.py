"""Cost of bias-delta guidance (GRAG / DCAG) against the stock attention processor, side
by side in one process, on a QwenImageTransformer2DModel with random weights (time does
not depend on them).

One transformer call at a 1024x1024-like edit: ``grid x grid`` noisy-latent tokens, as
many condition-image tokens, and ``text_tokens`` text tokens, no text mask (what
QwenImageEditPipeline passes for one prompt). Variants, timed in interleaved rounds
(the order rotates every round) after one warm-up call each:

- ``stock``: no guidance installed;
- ``guided``: ``bias_delta_guidance`` with dk/dv per sample, all blocks;
- ``legacy``: the same guidance computed the straightforward way (a float32 copy of the
  condition tokens, four element-wise passes and a concatenation per channel and block:
  ``legacy_bias_delta`` below), for the speed-up and as the reference the fused result is
  compared with.

Reported: median, min and max milliseconds per call (and the median CPU time of this
process), guided/stock and legacy/stock ratios of the medians, of the CPU times and of
the fastest rounds (the steadiest on a shared CPU), the largest difference guided vs legacy, and whether (dk, dv) = (1, 1)
gives the stock output bit for bit.

Configs: ``tiny`` (the tests' transformer: 2 blocks, 2 heads x 16), ``mid`` (4 blocks,
8 heads x 128, a 32x32 grid: sized for a CPU), ``real`` (``QwenImageTransformer2DModel()``
defaults = Qwen-Image-Edit's, 60 blocks, 24 heads x 128, 20.4 B parameters, built directly
on the device in bfloat16; 64x64 grid = 4096 noisy + 4096 condition tokens).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_bias_delta.py --device cpu --config tiny mid
    python benchmarks/bench_bias_delta.py --device cuda --config real --batch 1 4

From a GPU check script: ``from bench_bias_delta import measure; measure("cuda", "real", 1)``.
The text stream defaults to 512 tokens (the H200 measurement in reference/gpu-measurements.md); the official
Qwen-Image-Edit call has ~1400 (1369 vision tokens of the ~1 MP prompt image plus the
instruction): ``--text-tokens 1400``.

``--rescale-only`` (``measure_rescale``) times the guidance arithmetic alone at the real
shape, without a model: ``blocks`` x (K, V) rescales of ``tokens`` condition tokens of
24 x 128 per transformer call, legacy vs the shipped ``bias_delta_`` vs the same with the
Triton kernel disabled (PyTorch's ``addcmul``). On CUDA it reports GPU time (CUDA events,
with the queue filled first so that launch overhead is hidden, as inside a transformer call).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import time
from typing import Any

import torch
from diffusers import QwenImageTransformer2DModel

from attnedit.methods.bias_delta import rescale as bias_delta_module
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from attnedit.methods.bias_delta.rescale import bias_delta_

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"model": dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
                           num_attention_heads=2, joint_attention_dim=24, axes_dims_rope=(4, 6, 6)),
             "grid": 16, "text_tokens": 64},
    "mid": {"model": dict(num_layers=4, attention_head_dim=128, num_attention_heads=8, joint_attention_dim=1024),
            "grid": 32, "text_tokens": 128},
    "real": {"model": {}, "grid": 64, "text_tokens": 512},
}
# per-sample (dk, dv): grid points of one image, as piebench_dcag_grid batches them
POINTS = [(1.10, 1.15), (1.15, 1.15), (1.10, 1.20), (1.15, 1.20), (1.05, 1.10), (1.20, 1.10), (1.05, 1.05),
          (1.20, 1.20)]


# -- the straightforward implementation: a float32 copy, four passes and a concatenation ---
def legacy_bias_delta(x, start, delta, bias):
    cond = x[:, start:].float()
    mean = cond.mean(dim=1, keepdim=True)
    delta = delta.to(cond.device, cond.dtype).view(-1, 1, 1, 1)
    bias = bias.to(cond.device, cond.dtype).view(-1, 1, 1, 1)
    guided = cond + (delta - 1) * (cond - mean) + (bias - 1) * mean
    return torch.cat([x[:, :start], guided.to(x.dtype)], dim=1)


class LegacyCall:
    def __init__(self, length, scales, device):
        self.length = length
        self.scales = {k: v.to(device) for k, v in scales.items()}  # as before: moved on every call

    def guide(self, query, key, value):
        out = {"query": query, "key": key, "value": value}
        for channel, (d, b) in {"key": ("dk", "bk"), "value": ("dv", "bv"), "query": ("dq", "bq")}.items():
            if not (bool((self.scales[d] == 1).all()) and bool((self.scales[b] == 1).all())):
                x = out[channel]
                out[channel] = legacy_bias_delta(x, x.shape[1] - self.length, self.scales[d], self.scales[b])
        return out["query"], out["key"], out["value"]

    def guide_text(self, key):
        return key  # text tokens were never touched


@contextlib.contextmanager
def legacy_guidance(transformer, **scales):
    """``bias_delta_guidance`` whose processors run the legacy arithmetic: a pre-hook
    registered after the guidance's own replaces its per-call state with a LegacyCall."""
    with bias_delta_guidance(transformer, **scales) as guidance:
        def swap(module, args, kwargs):
            if guidance.call is not None:
                guidance.call = LegacyCall(guidance.call.length, guidance.scales, kwargs["hidden_states"].device)

        handle = transformer.register_forward_pre_hook(swap, with_kwargs=True)
        try:
            yield guidance
        finally:
            handle.remove()


# -- measurement ----------------------------------------------------------------------------
def build(config: str, device: torch.device, dtype: torch.dtype) -> QwenImageTransformer2DModel:
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in their final dtype, on the device
    try:
        with torch.device(device):
            return QwenImageTransformer2DModel(**CONFIGS[config]["model"]).eval()
    finally:
        torch.set_default_dtype(previous)


def inputs(model, batch: int, grid: int, text_tokens: int, device, dtype) -> dict[str, Any]:
    gen = torch.Generator(device).manual_seed(1)
    cfg = model.config
    return dict(
        hidden_states=torch.randn(batch, 2 * grid * grid, cfg.in_channels, generator=gen, device=device, dtype=dtype),
        encoder_hidden_states=torch.randn(batch, text_tokens, cfg.joint_attention_dim, generator=gen, device=device,
                                          dtype=dtype),
        encoder_hidden_states_mask=None,
        timestep=torch.full((batch,), 0.5, device=device, dtype=dtype),
        img_shapes=[[(1, grid, grid), (1, grid, grid)]] * batch,
        return_dict=False,
    )


def median_ci95(values: list[float]) -> tuple[float, float] | None:
    """Distribution-free 95% confidence interval of the median: the order statistics
    x_(k) and x_(n+1-k) with k the largest such that P(Binomial(n, 1/2) < k) <= 0.025
    (None below 6 values, where no such interval exists)."""
    n, xs = len(values), sorted(values)
    below = [sum(math.comb(n, i) for i in range(k)) / 2**n for k in range(n + 1)]  # P(B < k)
    k = max((k for k in range(1, n + 1) if below[k] <= 0.025), default=0)
    return (xs[k - 1], xs[n - k]) if k else None


def paired(variant: list[float], stock: list[float]) -> dict[str, Any]:
    """Per-round ratios variant / stock: their median and its 95% interval (:func:`median_ci95`)."""
    ratios = [v / s for v, s in zip(variant, stock)]
    return {"median": statistics.median(ratios), "ci95": median_ci95(ratios), "rounds": ratios}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: str = "cuda", config: str = "real", batch: int = 1, rounds: int = 5,
            text_tokens: int | None = None, legacy: bool = True, model=None) -> dict[str, Any]:
    """Time stock vs guided (and legacy) calls of one transformer; returns the numbers as a dict.

    ``model``: an already built transformer of ``config`` to reuse (building the real one
    takes a while); its dtype is used.
    """
    device = torch.device(device)
    if config == "real" and device.type != "cuda":
        raise SystemExit("config 'real' (20.4 B parameters, 41 GB in bfloat16) needs --device cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = model if model is not None else build(config, device, dtype)
    dtype = next(model.parameters()).dtype
    grid = CONFIGS[config]["grid"]
    text = text_tokens or CONFIGS[config]["text_tokens"]
    kw = inputs(model, batch, grid, text, device, dtype)
    points = [POINTS[i % len(POINTS)] for i in range(batch)]
    scales = {"dk": [p[0] for p in points], "dv": [p[1] for p in points]}

    variants = {
        "stock": contextlib.nullcontext,
        "guided": lambda: bias_delta_guidance(model, **scales),
        **({"legacy": lambda: legacy_guidance(model, **scales)} if legacy else {}),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu_times: dict[str, list[float]] = {name: [] for name in variants}  # all threads of this process
    outputs: dict[str, torch.Tensor] = {}
    peak: dict[str, float] = {}
    names = list(variants)
    with torch.inference_mode():
        for r in range(rounds + 1):  # round 0 is the warm-up
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                with variants[name]():
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    _sync(device)
                    start, cpu_start = time.perf_counter(), time.process_time()
                    out = model(**kw)[0]
                    _sync(device)
                    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
                if r == 0:
                    outputs[name] = out.float().cpu()
                    if device.type == "cuda":
                        peak[name] = torch.cuda.max_memory_allocated(device) / 1e9
                else:
                    times[name].append(seconds * 1e3)
                    cpu_times[name].append(cpu_seconds * 1e3)
                del out
        with bias_delta_guidance(model):  # (1, 1): guidance installed, identity scales
            identity = model(**kw)[0].float().cpu()
        with bias_delta_guidance(model, arithmetic="official", **scales):  # the official scripts' rounding
            official = model(**kw)[0].float().cpu()

    ms = {name: {"median": statistics.median(t), "min": min(t), "max": max(t),
                 "cpu_median": statistics.median(cpu_times[name])} for name, t in times.items()}
    result = {
        "device": device.type, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else (platform.processor() or "cpu"), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "config": config, "blocks": model.config.num_layers,
        "heads": f"{model.config.num_attention_heads}x{model.config.attention_head_dim}",
        "dtype": str(dtype).removeprefix("torch."), "batch": batch,
        "tokens": {"noisy": grid * grid, "condition": grid * grid, "text": text},
        "points": points, "rounds": rounds, "ms": ms,
        "ratio": {name: ms[name]["median"] / ms["stock"]["median"] for name in ms if name != "stock"},
        "ratio_cpu_time": {name: ms[name]["cpu_median"] / ms["stock"]["cpu_median"] for name in ms if name != "stock"},
        "ratio_fastest": {name: ms[name]["min"] / ms["stock"]["min"] for name in ms if name != "stock"},
        # Each round times every variant back to back: the ratio within a round cancels the
        # drift between rounds (clocks, other tenants); its median and the 95% interval of that median.
        "ratio_paired": {name: paired(times[name], times["stock"]) for name in ms if name != "stock"},
        "identity_max_abs_diff_vs_stock": float((identity - outputs["stock"]).abs().max()),
        "guided_changes_output_by": float((outputs["guided"] - outputs["stock"]).abs().max()),
        "official_arithmetic_vs_fused_max_abs_diff": float((official - outputs["guided"]).abs().max()),
    }
    if legacy:
        result["guided_vs_legacy_max_abs_diff"] = float((outputs["guided"] - outputs["legacy"]).abs().max())
        result["output_max_abs"] = float(outputs["stock"].abs().max())
    if peak:
        result["peak_memory_gb"] = peak
    return result


def measure_rescale(device: str = "cuda", batch: int = 1, blocks: int = 60, tokens: int = 4096, rounds: int = 5,
                    heads: int = 24, head_dim: int = 128) -> dict[str, Any]:
    """Milliseconds per transformer call of the guidance arithmetic alone (K and V of every
    block), legacy vs fused (Triton kernel where it applies) vs fused with PyTorch only."""
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device).manual_seed(0)
    key, value = (torch.randn(batch, 2 * tokens, heads, head_dim, generator=gen, device=device, dtype=dtype)
                  for _ in range(2))
    points = [POINTS[i % len(POINTS)] for i in range(batch)]
    dk, dv = torch.tensor([p[0] for p in points]), torch.tensor([p[1] for p in points])
    ones = torch.ones(batch)
    factors = []
    for d in (dk, dv):  # the scale, then its inverse: values stay bounded over the rounds
        factors.append([(x.view(-1, 1, 1, 1).to(device), (1 - x).view(-1, 1, 1, 1).to(device)) for x in (d, 1 / d)])

    def legacy():
        for _ in range(blocks):
            legacy_bias_delta(key, tokens, dk, ones)
            legacy_bias_delta(value, tokens, dv, ones)

    def fused():
        for block in range(blocks):
            bias_delta_(key, tokens, *factors[0][block % 2])
            bias_delta_(value, tokens, *factors[1][block % 2])

    def fused_torch():
        real = bias_delta_module.rescale_
        bias_delta_module.rescale_ = lambda *args: False
        try:
            fused()
        finally:
            bias_delta_module.rescale_ = real

    variants = {"legacy": legacy, "fused": fused, "fused_torch": fused_torch}
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    with torch.inference_mode():
        for r in range(rounds + 1):
            for name in names[r % len(names):] + names[:r % len(names)]:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                    torch.cuda._sleep(400_000_000)  # ~0.2 s of queued GPU work: the launches below run ahead
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    variants[name]()
                    end.record()
                    torch.cuda.synchronize(device)
                    ms = start.elapsed_time(end)
                else:
                    begin = time.perf_counter()
                    variants[name]()
                    ms = (time.perf_counter() - begin) * 1e3
                if r:
                    times[name].append(ms)
    ms = {name: {"median": statistics.median(t), "min": min(t), "max": max(t)} for name, t in times.items()}
    return {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor()
            or "cpu"), "dtype": str(dtype).removeprefix("torch."), "batch": batch, "blocks": blocks,
            "condition_tokens": tokens, "heads": f"{heads}x{head_dim}", "rounds": rounds, "ms": ms,
            "timing": "GPU time (CUDA events)" if device.type == "cuda" else "wall time"}


def paired_text(result: dict[str, Any], name: str) -> str:
    pair = result["ratio_paired"][name]
    ci = "no 95% interval below 6 rounds" if pair["ci95"] is None else f"95% CI {pair['ci95'][0]:.3f}-{pair['ci95'][1]:.3f}"
    return f"per-round ratio median {pair['median']:.3f}x, {ci}"


def report(result: dict[str, Any]) -> str:
    ms = result["ms"]
    lines = [f"{result['config']} ({result['blocks']} blocks, {result['heads']} heads, {result['dtype']}), "
             f"batch {result['batch']}, tokens {result['tokens']}, {result['device_name']}, "
             f"{result['rounds']} rounds"]
    for name, t in ms.items():
        ratio = "" if name == "stock" else (f"  {result['ratio'][name]:.3f}x stock (CPU time "
                                            f"{result['ratio_cpu_time'][name]:.3f}x, fastest rounds "
                                            f"{result['ratio_fastest'][name]:.3f}x, {paired_text(result, name)})")
        lines.append(f"  {name:7s} median {t['median']:9.2f} ms  (min {t['min']:.2f}, max {t['max']:.2f}; "
                     f"CPU time {t['cpu_median']:.2f} ms){ratio}")
    lines.append(f"  (1, 1) vs stock max |diff| {result['identity_max_abs_diff_vs_stock']:.3g}; guided moves the "
                 f"output by {result['guided_changes_output_by']:.3g}; arithmetic=official vs fused "
                 f"{result['official_arithmetic_vs_fused_max_abs_diff']:.3g}")
    if "guided_vs_legacy_max_abs_diff" in result:
        lines.append(f"  guided vs legacy max |diff| {result['guided_vs_legacy_max_abs_diff']:.3g} "
                     f"(outputs up to {result['output_max_abs']:.3g})")
    if "peak_memory_gb" in result:
        lines.append(f"  peak memory GB {json.dumps({k: round(v, 2) for k, v in result['peak_memory_gb'].items()})}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", nargs="+", choices=tuple(CONFIGS), default=["tiny"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--text-tokens", type=int, default=None, help="default: 64 tiny, 128 mid, 512 real")
    parser.add_argument("--no-legacy", action="store_true", help="time stock and guided only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write every result to this file")
    parser.add_argument("--rescale-only", action="store_true",
                        help="time the guidance arithmetic alone at the real shape (60 blocks, 4096 tokens, 24x128)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    if args.rescale_only:
        for batch in args.batch:
            result = measure_rescale(args.device, batch, rounds=args.rounds)
            print(json.dumps(result), flush=True)
            results.append(result)
        args.config = []  # nothing else to time
    for config in args.config:
        device = torch.device(args.device)
        model = build(config, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
        for batch in args.batch:
            result = measure(args.device, config, batch, args.rounds, args.text_tokens, not args.no_legacy, model)
            print(report(result), flush=True)
            results.append(result)
        del model
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
