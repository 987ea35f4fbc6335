"""How much the choice of direction labels favours a method, measured on the shipped
trained shapes DDPM (experiments/shapes_ddpm/, 20 DDIM steps) with random directions, as
the comparison runs them (``experiment=celebahq_compare compare=random``, label_null on):

- ``probe``: each label's own score, the best of 15 attributes x 2 signs on its probes
  (seeds 1000+): what Table 2 would show if it scored the samples the labels were chosen on;
- ``chosen``: Table 2's Directional CLIP of the same labels on disjoint evaluated samples
  (seeds 0+; the runner refuses overlapping ones);
- ``null``: the same cases scored against labels permuted across directions (seeded
  derangements): mean, std and min..max over permutations.

CLIP weights are not available offline, so the default runs the study's CLIP
(ViT-B-32-quickgelu, StyleGAN-NADA's 79 templates) with seeded random weights
(``metric_weights=random``): the selection effect it shows is the mechanism's, not
CLIP's semantics; with the openai weights in the hub cache, pass ``--weights pretrained``.
``--one-template``: "a photo of a {}." instead of the 79 templates, for labels and metric
(text encoding dominates on a CPU).

    OMP_NUM_THREADS=1 python experiments/celebahq_compare/measure_label_null.py --samples 16 --one-template \
        --out experiments/celebahq_compare/label_null.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from attnedit.config import compose
from attnedit.report.label_null import null_columns
from attnedit.report.sad import table2_cases
from attnedit.run.runner import Runner

from measurements import emit  # this folder's shared output (a script's own folder is on sys.path)


def measure(samples: int, directions: int, permutations: int, weights: str, device: str, root: Path,
            one_template: bool = False) -> dict:
    # one template: 79x less text encoding, the CPU's bottleneck (30 attributes x 79 prompts, twice)
    templates = ["+labeling.clip.templates=['a photo of a {}.']", "+metrics.directional_clip.templates=['a photo of a {}.']"]
    overrides = [*(templates if one_template else []), "experiment=celebahq_compare", "compare=random", "model=shapes_ddpm", "model.num_inference_steps=20",
                 f"dataset.num_samples={samples}", f"method.directions={directions}", "method.alphas=[-0.4,0.4]",
                 f"metric_weights={weights}", f"label_null={permutations}", "~metrics.id_sim", "~metrics.lpips",
                 "tables.reference=null", f"paths.root_dir={root}", f"device={device}", "progress=false",
                 "figures=false", "save_images=false", "numerical_floor.samples=0", "batch_size=16"]
    start = time.perf_counter()
    run_dir = Runner(compose("config", overrides)).run()
    rows = pd.read_parquet(run_dir / "cases")
    labels = json.loads((run_dir / "manifest.json").read_text())["method"]["labels"]
    cases = table2_cases(rows, 0.4, what=str(run_dir))  # alpha = the label's sign x 0.4, as Table 2
    chosen = cases.groupby("direction").directional_clip.mean()
    probe = pd.Series({int(k): float(v["score"]) for k, v in labels.items()})
    null = [float(np.nanmean(cases[c].to_numpy(float))) for c in null_columns(cases, "directional_clip")]
    return {
        "setting": {"model": "shapes_ddpm (20 DDIM steps)", "method": "random (compare=random)", "samples": samples,
                    "evaluated_seeds": [0, samples - 1], "probe_seeds": sorted({s for v in labels.values()
                                                                               for s in v["probe_seeds"]}),
                    "directions": directions, "permutations": permutations, "clip_weights": weights,
                    "templates": "one ('a photo of a {}.')" if one_template else "stylegan_nada(79)",
                    "cases": len(cases)},
        "probe_mean": float(probe.mean()),
        "chosen_mean": float(cases.directional_clip.mean()),
        "chosen_std_over_cases": float(cases.directional_clip.std(ddof=0)),
        "null_mean": float(np.mean(null)),
        "null_std_over_permutations": float(np.std(null)),
        "null_min_max": [float(np.min(null)), float(np.max(null))],
        "null_per_permutation": null,
        "per_direction": {int(k): {"label": labels[str(k)]["label"], "sign": labels[str(k)]["sign"],
                                   "probe": float(probe[int(k)]), "chosen": float(chosen[k])} for k in chosen.index},
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--directions", type=int, default=15)
    parser.add_argument("--permutations", type=int, default=5)
    parser.add_argument("--weights", default="random", choices=["random", "pretrained"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one-template", action="store_true", help="'a photo of a {}.' only (fast on a CPU)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        result = measure(args.samples, args.directions, args.permutations, args.weights, args.device, Path(root),
                         args.one_template)
    emit(result, args.out)


if __name__ == "__main__":
    main()
