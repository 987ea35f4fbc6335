"""What judging costs: calls, tokens per call and GPU-minutes of a local judge, per benchmark.

Calls: GEdit-Bench's VIEScore makes 2 per case (SC with two images, PQ with one; GEdit-Bench
viescore/__init__.py lines 79-80), ImgEdit-Basic 1 (basic_bench.py line 39), times the passes,
plus re-asks of unparsable replies (``--reask-rate``). Image tokens: Qwen2.5-VL resizes each
image to multiples of 28 within [min_pixels, max_pixels] (transformers' ``smart_resize``) and
merges 2x2 patches of 14 px, so an image costs (h/28) x (w/28) tokens. Text tokens: counted
with ``--tokenizer`` (a local Qwen2.5-VL folder) on the prompt set the run would use, else
estimated as characters / 4 (said in the output). GPU time: prefill at 2 FLOPs per parameter
and token over ``--tflops`` sustained, decoding memory-bound (weights read once per step of a
batch, ``--bandwidth``); an estimate for planning, measured by benchmarks/gpu_check.py
(section judge_batched) on a GPU.

    python experiments/gedit_bench/estimate_judge_cost.py [--cases 606] [--size 1024x1024] \
        [--min-pixels N --max-pixels N] [--passes 1] [--new-tokens 120] [--batch 8]
"""

from __future__ import annotations

import argparse
import math

QWEN25VL_7B_PARAMS = 8.29e9  # Qwen2.5-VL-7B-Instruct, language model + vision tower
TEMPLATE_TOKENS = 20  # chat template: role markers, vision start/end per image (approximate)


def image_tokens(height: int, width: int, min_pixels: int, max_pixels: int) -> int:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // 28) * (w // 28)


def text_tokens(texts: list[str], tokenizer: str | None) -> tuple[list[int], str]:
    if tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
        return [len(tok(t).input_ids) for t in texts], f"counted with {tokenizer}"
    return [math.ceil(len(t) / 4) for t in texts], "estimated as characters / 4 (pass --tokenizer to count)"


def main() -> None:
    from attnedit.judge.prompts import load_gedit_prompts, load_imgedit_prompts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=None, help="cases per method (default: the benchmark's size)")
    parser.add_argument("--size", default="1024x1024", help="HxW of the images the judge sees")
    parser.add_argument("--min-pixels", type=int, default=3136)
    parser.add_argument("--max-pixels", type=int, default=12845056,
                        help="Qwen2.5-VL-Instruct's preprocessor_config.json (transformers' class default is 1003520)")
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--reask-rate", type=float, default=0.0, help="share of replies asked again")
    parser.add_argument("--new-tokens", type=int, default=120, help="mean reply length in tokens")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tflops", type=float, default=400.0, help="sustained bf16 TFLOP/s (H100/H200 ~400)")
    parser.add_argument("--bandwidth", type=float, default=4.8, help="HBM TB/s (H200 4.8)")
    parser.add_argument("--params", type=float, default=QWEN25VL_7B_PARAMS)
    parser.add_argument("--gedit-prompts", default=None, help="vie_prompts.py (default: attnedit's own)")
    parser.add_argument("--imgedit-prompts", default=None, help="prompts.json (default: attnedit's own)")
    parser.add_argument("--tokenizer", default=None)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    per_image = image_tokens(height, width, args.min_pixels, args.max_pixels)
    gedit, imgedit = load_gedit_prompts(args.gedit_prompts), load_imgedit_prompts(args.imgedit_prompts)
    (sc, pq), how = text_tokens([gedit.texts["sc"], gedit.texts["pq"]], args.tokenizer)
    rubric, _ = text_tokens(list(imgedit.texts.values()), args.tokenizer)
    benchmarks = {  # name: (default cases, [(images, text tokens) per call])
        "GEdit-Bench-EN (VIEScore)": (606, [(2, sc), (1, pq)]),
        "ImgEdit-Basic": (737, [(2, round(sum(rubric) / len(rubric)))]),
        "PIE-Bench (VIEScore, per grid point)": (700, [(2, sc), (1, pq)]),
    }
    print(f"images {height}x{width} -> {per_image} tokens each (min_pixels {args.min_pixels}, max_pixels "
          f"{args.max_pixels}); text tokens {how}; prompts: {gedit.describe()['label']}")
    print(f"{'benchmark':38} {'calls':>7} {'prompt tok/call':>16} {'new tok':>8} {'GPU-min (7B)':>13}")
    for name, (cases, shape) in benchmarks.items():
        cases = args.cases or cases
        calls = cases * args.passes * len(shape) * (1 + args.reask_rate)
        prompt = sum(images * per_image + text + TEMPLATE_TOKENS for images, text in shape) / len(shape)
        prefill = 2 * args.params * prompt * calls / (args.tflops * 1e12)
        steps = calls / args.batch * args.new_tokens  # decode steps; a batch shares each weight read
        decode = steps * (args.params * 2) / (args.bandwidth * 1e12)
        print(f"{name:38} {calls:7.0f} {prompt:16.0f} {args.new_tokens:8d} {(prefill + decode) / 60:13.1f}")


if __name__ == "__main__":
    main()
