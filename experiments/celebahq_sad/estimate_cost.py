"""Measure the cost of the CelebA-HQ SAD study's model and project its GPU run time.

Counts the FLOPs of one forward of the real google/ddpm-ema-celebahq-256 architecture
(built from its config; weights do not change the count) with torch's FlopCounterMode,
times a forward on this machine, measures the peak memory of a batched forward, and
projects the study (100 samples x 15 directions x 4 alphas, 50 DDIM steps, plus one
unedited sample each) at a stated sustained GPU throughput. Table 2 holds one edit per
(sample, direction), 1500 of those edits; the others fill the per-|alpha| tables, so
the script also prints the cost of a run of only the two |alpha| = 0.4 edits.

    python experiments/celebahq_sad/estimate_cost.py [--gpu-tflops 60] [--batch 4]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from diffusers import UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

from attnedit.backends.tiny import CELEBAHQ_UNET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu-tflops", type=float, default=60.0,
                        help="sustained fp32/TF32 TFLOP/s assumed for the GPU (A100 TF32 ~ 60 in practice)")
    parser.add_argument("--batch", type=int, default=4, help="batch for the memory measurement")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--directions", type=int, default=15)
    parser.add_argument("--alphas", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()

    torch.manual_seed(0)
    unet = UNet2DModel(**CELEBAHQ_UNET).eval()
    params = sum(p.numel() for p in unet.parameters())
    x = torch.randn(1, 3, 256, 256)
    t = torch.tensor([500])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, t)
    flops = counter.get_total_flops()
    with torch.no_grad():
        start = time.perf_counter()
        unet(x, t)
        cpu_seconds = time.perf_counter() - start
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        unet(torch.randn(args.batch, 3, 256, 256), t)
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before

    forwards = (args.samples * args.directions * args.alphas + args.samples) * args.steps
    total_flops = forwards * flops
    gpu_seconds = total_flops / (args.gpu_tflops * 1e12)
    weights_gib = params * 4 / 2**30
    activation_gib_per_image = max(peak_kib, 0) * 1024 / args.batch / 2**30
    print(f"UNet parameters: {params / 1e6:.1f} M ({weights_gib:.2f} GiB in float32)")
    print(f"FLOPs per forward (batch 1, 256 px): {flops / 1e9:.1f} GFLOP")
    print(f"CPU time per forward here: {cpu_seconds:.2f} s  ({torch.get_num_threads()} threads)")
    print(f"study: {forwards:,} UNet forwards = {total_flops / 1e15:.1f} PFLOP")
    print(f"projected GPU time at {args.gpu_tflops:g} sustained TFLOP/s: {gpu_seconds / 60:.1f} min "
          f"({gpu_seconds / (args.samples * args.directions * args.alphas):.2f} s per edit)")
    table2 = args.samples * args.directions
    two_signs = (2 * table2 + args.samples) * args.steps * flops / (args.gpu_tflops * 1e12)
    print(f"Table 2: {table2} of the {args.samples * args.directions * args.alphas} edits (one per sample and "
          f"direction); a run of only alphas [-0.4, 0.4] ({2 * table2} edits): {two_signs / 60:.1f} min")
    print(f"peak extra memory of a batch-{args.batch} forward (CPU RSS): {peak_kib / 2**20:.2f} GiB "
          f"-> about {activation_gib_per_image:.2f} GiB per image in the batch, plus {weights_gib:.2f} GiB weights")


if __name__ == "__main__":
    main()
