"""Speed of attnedit-evaluate vs a faithful per-image loop of the official PIE-Bench
evaluation, on a synthetic fixture of 512x512 images in the official format, for one
method and for several methods scored in one call (``--methods 1 5``: 5 = the DCAG
paper's rows none, GRAG x2, DCAG x2), on CPU or CUDA (``--device``).

The official loop (tests/support/piebench_fixture.py, the main loop of PnPInversion's
evaluation/evaluate.py): per image, the Python-loop mask decoder and the source image;
per method its edited image, then per metric one torchmetrics call on PIL-converted
arrays moved to the device; one CSV row per image. SSIM in the published numbers'
convention on both sides (torchmetrics' map with its 5-pixel border cropped, as before
torchmetrics 1.4.2). attnedit: ``attnedit.evaluate.evaluator.evaluate`` with ``workers`` decoding
threads ahead of the scoring (``--workers``, several values: one measurement each;
default: evaluate's own, min(8, cores)). Metrics: psnr/ssim/mse/lpips_unedit_part,
LPIPS squeeze with a seeded random backbone (no download). Both sides build their
networks before the clock starts and run once untimed on two images to warm up. Each
side is timed ``--rounds`` times, alternating, so both see the same moments of a shared
machine; the fastest round of each is compared and every round is printed (the spread).
The per-image numbers of both sides must agree to 1e-5.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_piebench_eval.py [--device cpu|cuda] \\
        [--workers 0 2] [--images 16] [--methods 1 5] [--rounds 3]

From a script (e.g. a GPU check): ``measure("cuda", workers=8, images=64)`` returns both
times, the ratio and the largest difference as a dict, and splits attnedit's time into the
fixed cost of a call (a one-image run) and the cost of each further image, from which it
projects the ratio of a whole PIE-Bench call (700 images).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

from piebench_fixture import (  # noqa: E402
    OfficialCalculator,
    official_mask_decode,
    write_edited,
    write_piebench_fixture,
)

from attnedit.evaluate.config import compose_config, resolve_workers  # noqa: E402
from attnedit.evaluate.evaluator import evaluate  # noqa: E402

METRICS = ["psnr_unedit_part", "ssim_unedit_part", "mse_unedit_part", "lpips_unedit_part"]
SEED = 0


def fixture_entries(n: int) -> dict:
    kinds = ("box", "ellipse")
    entries = {}
    for i in range(n):
        category = str(i % 10)
        key = f"{category}{i:011d}"
        entries[key] = (category, f"{category}_category/{key}.jpg", kinds[i % 2])
    return entries


def official_loop(root: Path, editeds: dict[str, Path], out: Path, calc: OfficialCalculator, ids=None) -> None:
    """The official evaluate.py main loop, as written there (per image, per method, per metric)."""
    mapping = json.loads((root / "mapping_file.json").read_text())
    with open(out, "w", newline="") as f:
        csv.writer(f).writerow(["file_id"] + [f"{name}|{m}" for name in editeds for m in METRICS])
    for key, item in mapping.items():
        if ids is not None and key not in ids:
            continue
        mask = official_mask_decode(item["mask"])
        item["original_prompt"].replace("[", "").replace("]", "")
        item["editing_prompt"].replace("[", "").replace("]", "")
        mask = mask[:, :, np.newaxis].repeat([3], axis=2)
        src = Image.open(root / "annotation_images" / item["image_path"])
        row = [key]
        for edited in editeds.values():
            tgt = Image.open(edited / item["image_path"])
            row += [calc.metric(m, src, tgt, mask) for m in METRICS]
        with open(out, "a+", newline="") as f:
            csv.writer(f).writerow(row)


def ours(
    root: Path, editeds: dict[str, Path], out: Path, batch_size: int, device: str, workers: int | None,
    first_n: int | None = None,
) -> None:
    out.unlink(missing_ok=True)
    out.with_name(f"{out.stem}_meta.json").unlink(missing_ok=True)
    mapping = ", ".join(f"{name}: {folder}" for name, folder in editeds.items())
    argv = [
        f"dataset.root={root}",
        f"edited={{{mapping}}}",
        f"metrics=[{','.join(METRICS)}]",
        f"out={out}",
        "weights=random",
        f"seed={SEED}",
        f"batch_size={batch_size}",
        f"device={device}",
        f"workers={'null' if workers is None else workers}",
        "progress=false",
    ]
    if first_n is not None:
        argv.append(f"dataset.first_n={first_n}")
    evaluate(compose_config(argv))


def read(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return {r[0]: [float("nan") if v in ("", "nan") else float(v) for v in r[1:]] for r in rows}


def clock(fn, device: str = "cpu") -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process); CPU time is what a shared machine can't inflate much."""
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def breakdown(root: Path, edited: Path, calc: OfficialCalculator) -> dict[str, tuple[float, float]]:
    """Per metric, CPU seconds: official (one torchmetrics call per image) vs attnedit (one batched call)."""
    from attnedit.data.piebench import PIEBench
    from attnedit.metrics.registry import build_metric

    data = PIEBench(root)
    ids = data.sample_ids()
    samples = [data.load(i) for i in ids]
    masks = [official_mask_decode(data.mapping[i]["mask"])[:, :, None].repeat(3, axis=2) for i in ids]
    pil = [(Image.open(s.path), Image.open(edited / s.fields["image_path"])) for s in samples]
    for a, b in pil:
        a.load(), b.load()
    reference = torch.stack([s.image for s in samples])
    target = torch.stack([torch.from_numpy(np.array(b.convert("RGB"))).permute(2, 0, 1) / 255 for _, b in pil])
    mask = torch.stack([s.fields["mask"] for s in samples])
    out = {}
    for name in METRICS:
        kwargs = {"weights": "random", "seed": SEED} if name.startswith("lpips") else {}
        metric = build_metric(name, **kwargs)
        official = clock(lambda: [calc.metric(name, a, b, m) for (a, b), m in zip(pil, masks)])[1]
        ours_cpu = clock(lambda: metric(target, reference, mask=mask))[1]
        out[name] = (official, ours_cpu)
    out["mask decoding"] = (
        clock(lambda: [official_mask_decode(data.mapping[i]["mask"]) for i in ids])[1],
        clock(lambda: [data.load(i).fields["mask"] for i in ids])[1],  # includes reading the image
    )
    return out


def check_equal(expected: dict, got: dict) -> float:
    assert sorted(expected) == sorted(got), "both sides must score the same ids"
    worst = 0.0
    for key, values in expected.items():
        assert len(values) == len(got[key])
        for metric, want, have in zip(METRICS * (len(values) // len(METRICS)), values, got[key]):
            if np.isnan(want) or np.isnan(have):
                assert np.isnan(want) and np.isnan(have), (key, metric)
                continue
            worst = max(worst, abs(want - have))
            assert abs(want - have) <= 1e-5, f"{key} {metric}: official {want} vs attnedit {have}"
    return worst


class Fixture:
    """A temporary PIE-Bench of ``images`` 512x512 entries and ``methods`` edited folders."""

    def __init__(self, images: int, methods: int) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.root = self.dir / "PIE-Bench"
        write_piebench_fixture(self.root, size=512, entries=fixture_entries(images))
        self.folders = {f"method{k}": self.dir / f"edited{k}" for k in range(methods)}
        for seed, folder in enumerate(self.folders.values(), start=1):
            write_edited(self.root, folder, seed=seed)

    def close(self) -> None:
        self._tmp.cleanup()


def compare(fixture: Fixture, calc, methods: int, device: str, workers_list, rounds: int, batch_size: int) -> dict:
    """Official loop vs attnedit for each workers value, alternating within each round."""
    editeds = dict(list(fixture.folders.items())[:methods])
    official_csv = fixture.dir / "official.csv"
    sides = {"official": lambda: official_loop(fixture.root, editeds, official_csv, calc)}
    for w in workers_list:
        out = fixture.dir / f"ours_{w}.csv"
        sides[f"workers={resolve_workers(w)}"] = (
            lambda w=w, out=out: ours(fixture.root, editeds, out, batch_size, device, w)
        )
    times = {side: [] for side in sides}
    for _ in range(rounds):
        for side, fn in sides.items():
            times[side].append(clock(fn, device))
    expected = read(official_csv)
    worst = max(check_equal(expected, read(fixture.dir / f"ours_{w}.csv")) for w in workers_list)
    return {"times": times, "max_abs_diff": worst}


def measure(
    device: str = "cpu", workers: int | None = None, images: int = 64, methods: int = 1, rounds: int = 2,
    batch_size: int | None = None,
) -> dict:
    """One side-by-side measurement: ms per image and method of the official loop and of
    attnedit-evaluate (fastest round each; all rounds listed), the ratio, the largest
    difference, and where it ran."""
    batch_size = batch_size or (16 if device.startswith("cuda") else 8)
    fixture = Fixture(images, methods)
    try:
        calc = OfficialCalculator(lpips_seed=SEED, device=device)
        warm_up(fixture, calc, device, batch_size, workers)
        result = compare(fixture, calc, methods, device, [workers], rounds, batch_size)
        editeds = dict(list(fixture.folders.items())[:methods])
        one = fixture.dir / "one.csv"
        one_image = min(
            clock(lambda: ours(fixture.root, editeds, one, batch_size, device, workers, first_n=1), device)[0]
            for _ in range(rounds)
        )
    finally:
        fixture.close()
    (side,) = [s for s in result["times"] if s != "official"]
    per = images * methods / 1000
    official = [w / per for w, _ in result["times"]["official"]]
    attnedit = [w / per for w, _ in result["times"][side]]
    # A one-image run is attnedit's fixed cost per call (config, networks, summary) plus one
    # image; the rest of the n-image run is what each further image costs.
    marginal = (min(attnedit) * images * methods - 1000 * one_image) / ((images - 1) * methods)
    return {
        "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(device),
        "usable_cores": usable_cores(),
        "workers": resolve_workers(workers),
        "images": images,
        "methods": methods,
        "official_ms_per_image": min(official),
        "attnedit_ms_per_image": min(attnedit),
        "ratio": min(official) / min(attnedit),
        "attnedit_one_image_run_ms": 1000 * one_image,
        "attnedit_marginal_ms_per_image": marginal,
        "ratio_marginal": min(official) / marginal,
        # PIE-Bench's 700 entries in one call: the fixed cost once, the per-image cost 699 times.
        "ratio_at_700_images": min(official) * 700 * methods / (1000 * one_image + marginal * 699 * methods),
        "official_rounds_ms": official,
        "attnedit_rounds_ms": attnedit,
        "max_abs_diff": result["max_abs_diff"],
    }


def warm_up(fixture: Fixture, calc, device: str, batch_size: int, workers) -> None:
    """First oneDNN / cuDNN calls, lazy imports, our LPIPS network built once (shared cache)."""
    first_two = set(sorted(json.loads((fixture.root / "mapping_file.json").read_text()))[:2])
    one = dict(list(fixture.folders.items())[:1])
    clock(lambda: official_loop(fixture.root, one, fixture.dir / "official.csv", calc, ids=first_two), device)
    clock(lambda: ours(fixture.root, one, fixture.dir / "warm.csv", batch_size, device, workers, first_n=2), device)


def report(n: int, k: int, result: dict) -> None:
    times = result["times"]
    best = {side: (min(t[0] for t in v), min(t[1] for t in v)) for side, v in times.items()}
    per = n * k
    for side, rounds in times.items():
        wall, cpu = best[side]
        listed = ", ".join(f"{1000 * w / per:.0f}" for w, _ in rounds)
        print(
            f"    {side:11s}: {1000 * wall / per:6.1f} ms/image wall, {1000 * cpu / per:6.1f} ms/image CPU"
            f"  [rounds, ms/image wall: {listed}]"
        )
    for side in times:
        if side != "official":
            ratios = [o[0] / a[0] for o, a in zip(times["official"], times[side])]
            print(
                f"    speed-up {side}: {best['official'][0] / best[side][0]:.2f}x wall-clock (fastest rounds), "
                f"{best['official'][1] / best[side][1]:.2f}x CPU time; per round {', '.join(f'{r:.2f}' for r in ratios)}"
            )
    print(f"    largest difference to the official numbers: {result['max_abs_diff']:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (both sides)")
    parser.add_argument("--workers", type=int, nargs="+", default=[None], help="attnedit decoding threads, each one run")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--methods", type=int, nargs="+", default=[1, 5], help="methods per call, one run each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="attnedit batch (default 8 on CPU, 16 on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, both sides (default: torch's)")
    parser.add_argument("--breakdown", action="store_true", help="CPU only: per-metric CPU time of both sides")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    batch_size = args.batch_size or (16 if args.device.startswith("cuda") else 8)
    fixture = Fixture(args.images, max(args.methods))
    try:
        calc = OfficialCalculator(lpips_seed=SEED, device=args.device)
        warm_up(fixture, calc, args.device, batch_size, args.workers[0])
        results = {k: compare(fixture, calc, k, args.device, args.workers, args.rounds, batch_size) for k in args.methods}
        parts = breakdown(fixture.root, fixture.folders["method0"], calc) if args.breakdown else {}
    finally:
        fixture.close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"PIE-Bench evaluation, {args.images} images of 512x512, {', '.join(METRICS)} (LPIPS squeeze, random weights)")
    print(
        f"{where}; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
        f"({usable_cores()} usable), load {load:.1f}; batch {batch_size}"
    )
    for k, result in results.items():
        print(f"  {k} method{'s' * (k > 1)} per call (ms/image = per image and method):")
        report(args.images, k, result)
    if parts:
        print("  one method, CPU ms/image per part (official per-image torchmetrics -> attnedit batched):")
    for name, (official, ours_cpu) in parts.items():
        n = args.images
        print(f"    {name:18s} {1000 * official / n:7.1f} -> {1000 * ours_cpu / n:6.1f}  ({official / ours_cpu:5.1f}x)")


if __name__ == "__main__":
    main()
