"""W&B's cost on the quickstart: `attnedit-run experiment=quickstart` with `logger=none`
and with `logger=wandb` in offline mode, side by side in one sitting.

Offline mode does everything an online run does on this machine (the wandb-core service,
the record log, tables, thumbnails, charts) except the upload, which happens in the
background online. Each run is the console script in a process of its own, as a user
runs it (start-up, model load, directions, edits, tables, report included), into a fresh
results folder (nothing resumed, no direction cache shared). The two loggers alternate,
and the order within each pair flips from one repeat to the next so that drift of a
shared machine's load falls on both sides. One untimed pair first warms the file cache.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_wandb.py   # ~10 min on 2 loaded CPU cores
    .venv/bin/python benchmarks/bench_wandb.py --repeats 5 --samples 4 --directions 4  # the full quickstart

Prints, for wall time and for CPU time (the run's process and the subprocesses it reaped,
wandb-core included), each run's seconds, the medians, the ratio of the medians
(wandb / none), the median of the per-pair ratios and the median per-pair difference.
On a loaded shared machine wall time moves by more than W&B costs; CPU time much less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOGGERS = ("none", "wandb")
KINDS = ("wall", "cpu")  # CPU time moves less with a shared machine's load than wall time


def command(root: Path, logger: str, samples: int, directions: int) -> list[str]:
    script = Path(sys.executable).with_name("attnedit-run")
    return [str(script), "experiment=quickstart", f"logger={logger}", f"paths.root_dir={root}",
            f"dataset.num_samples={samples}", f"method.directions={directions}", "progress=false"]


def environment(work: Path) -> dict[str, str]:
    """Offline, quiet, every W&B folder under ``work`` (nothing in the user's ~/.config)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        env[var] = str(work / "wandb" / var.lower())
        Path(env[var]).mkdir(parents=True, exist_ok=True)
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(work: Path, name: str, logger: str, args: argparse.Namespace) -> tuple[float, float]:
    """(wall s, CPU s) of one run; the CPU time counts its reaped subprocesses too (wandb-core)."""
    root, env = work / name, environment(work)
    log = work / f"{name}.log"
    before = len(list((Path(env["WANDB_DIR"]) / "wandb").glob("offline-run-*")))
    with open(log, "w") as out:
        tic, cpu = time.perf_counter(), _children_cpu()
        done = subprocess.run(command(root, logger, args.samples, args.directions), cwd=REPO, env=env,
                              stdout=out, stderr=subprocess.STDOUT)
        seconds, cpu = time.perf_counter() - tic, _children_cpu() - cpu
    if done.returncode:
        raise SystemExit(f"bench_wandb: error: the {logger} run exited {done.returncode}; see {log}")
    after = len(list((Path(env["WANDB_DIR"]) / "wandb").glob("offline-run-*")))
    if after - before != (logger == "wandb"):  # the wandb side really tracked, the other did not
        raise SystemExit(f"bench_wandb: error: the {logger} run wrote {after - before} W&B run folders; see {log}")
    return seconds, cpu


def measure(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_wandb_") as tmp:
        work = Path(tmp)
        for logger in LOGGERS:  # warm-up: file cache, the shipped model's pages
            timed_run(work, f"warmup-{logger}", logger, args)
        times: dict[str, dict[str, list[float]]] = {kind: {logger: [] for logger in LOGGERS} for kind in KINDS}
        for i in range(args.repeats):
            for logger in LOGGERS if i % 2 == 0 else LOGGERS[::-1]:
                measured = timed_run(work, f"{i:02d}-{logger}", logger, args)
                for kind, value in zip(KINDS, measured):
                    times[kind][logger].append(value)
                print(f"repeat {i + 1}/{args.repeats} logger={logger}: {measured[0]:.2f} s wall, "
                      f"{measured[1]:.2f} s CPU", flush=True)
    result = {"samples": args.samples, "directions": args.directions, "repeats": args.repeats,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average": os.getloadavg()}
    for kind in KINDS:
        none, wandb = times[kind]["none"], times[kind]["wandb"]
        pairs = [w / n for w, n in zip(wandb, none)]
        result[kind] = {"none": none, "wandb": wandb, "median_none": statistics.median(none),
                        "median_wandb": statistics.median(wandb),
                        "ratio_of_medians": statistics.median(wandb) / statistics.median(none),
                        "median_pair_ratio": statistics.median(pairs), "pair_ratios": pairs,
                        "median_pair_difference_s": statistics.median(w - n for w, n in zip(wandb, none))}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=4, help="timed pairs (default 4)")
    parser.add_argument("--samples", type=int, default=2, help="dataset.num_samples (quickstart: 4)")
    parser.add_argument("--directions", type=int, default=2, help="method.directions (quickstart: 4)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.repeats < 1 or args.samples < 1 or args.directions < 1:
        parser.error("--repeats, --samples and --directions must be positive")
    result = measure(args)
    print(f"quickstart at {result['samples']} samples x {result['directions']} directions, "
          f"{result['repeats']} interleaved pairs, OMP_NUM_THREADS={result['omp_num_threads']}, "
          f"load average at the end {result['load_average'][0]:.1f}")
    for kind in KINDS:
        r = result[kind]
        print(f"median {kind} s: none {r['median_none']:.2f}, wandb (offline) {r['median_wandb']:.2f}; "
              f"wandb / none = {r['ratio_of_medians']:.3f}x (median of pair ratios {r['median_pair_ratio']:.3f}x, "
              f"median difference {r['median_pair_difference_s']:+.2f} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
