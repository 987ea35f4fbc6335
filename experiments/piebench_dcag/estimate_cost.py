"""Project the GPU time and memory of the DCAG study (Qwen-Image-Edit on PIE-Bench).

1. Measures the tiny QwenImageEditPipeline of the tests (tests/support/qwen_tiny.py) through the
   qwen_image_edit backend on this machine: seconds and FLOPs per transformer call and
   of the rest of one edit (text encoder, VAE), from runs of 1 and 3 steps.
2. Counts the FLOPs of the real architectures on the meta device (no weights needed):
   QwenImageTransformer2DModel's default config is Qwen-Image's (60 double-stream blocks,
   24 heads x 128), one call at a 1024x1024 working size (4096 noisy + 4096 condition
   tokens) with the text stream's length; AutoencoderKLQwenImage encode + decode at
   1024x1024; the Qwen2.5-VL-7B text encoder analytically (2 FLOPs per parameter and
   token), for the prompt and the negative prompt, each holding the image.
3. Scales: an edit is 24 steps x 2 classifier-free-guidance passes = 48 transformer calls.
   The tiny model's measured seconds times the FLOP ratio give what this machine would
   need; the GPU time divides the real FLOPs by an assumed sustained throughput.

4. The same count for FLUX.1 Kontext [dev] (model=flux_kontext): 28 steps, one call each.

    python experiments/piebench_dcag/estimate_cost.py [--gpu-tflops 400] [--text-tokens 1400]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))  # the tiny pipeline of the tests

# Qwen2.5-VL-7B-Instruct (Qwen-Image-Edit's text_encoder), as in its config.json.
QWEN25_VL_7B = dict(
    text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                     num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31]),
)


def tiny_costs(steps_pair=(1, 3)) -> dict:
    """Seconds and FLOPs of the tiny pipeline: per transformer call and the fixed rest."""
    from qwen_tiny import save_tiny_pipeline

    from attnedit.backends.qwen_edit import QwenImageEditBackend
    from attnedit.data.base import Sample

    image = torch.randint(0, 256, (3, 512, 512), generator=torch.Generator().manual_seed(0)) / 255.0
    sample = Sample(id="x", image=image, fields={"editing_instruction": "Make the frame of the bike rusty"})
    with tempfile.TemporaryDirectory() as folder:
        save_tiny_pipeline(Path(folder))
        results = {}
        for steps in steps_pair:
            backend = QwenImageEditBackend(path=folder, device="cpu", num_inference_steps=steps)
            backend.generate([sample])  # warm-up: first-call allocations and caches
            start = time.perf_counter()
            backend.generate([sample])
            seconds = time.perf_counter() - start
            with FlopCounterMode(display=False) as counter:
                backend.generate([sample])
            results[steps] = (seconds, counter.get_total_flops())
    (s1, f1), (s3, f3) = results[steps_pair[0]], results[steps_pair[1]]
    calls = 2 * (steps_pair[1] - steps_pair[0])  # two CFG passes per step
    per_call_s, per_call_flops = (s3 - s1) / calls, (f3 - f1) / calls
    return {"call_s": per_call_s, "call_flops": per_call_flops,
            "rest_s": s1 - 2 * steps_pair[0] * per_call_s, "rest_flops": f1 - 2 * steps_pair[0] * per_call_flops}


def transformer_flops(text_tokens: int, side: int = 1024) -> tuple[float, int]:
    from diffusers import QwenImageTransformer2DModel

    with torch.device("meta"):
        model = QwenImageTransformer2DModel().to(torch.bfloat16).eval()
        grid = side // 16  # VAE 8x, then 2x2 patches
        hidden = torch.empty(1, 2 * grid * grid, model.config.in_channels, dtype=torch.bfloat16)
        text = torch.empty(1, text_tokens, model.config.joint_attention_dim, dtype=torch.bfloat16)
        mask = torch.ones(1, text_tokens, dtype=torch.long)
        timestep = torch.ones(1, dtype=torch.bfloat16)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(hidden_states=hidden, encoder_hidden_states=text, encoder_hidden_states_mask=mask, timestep=timestep,
              img_shapes=[[(1, grid, grid), (1, grid, grid)]], return_dict=False)
    return counter.get_total_flops(), sum(p.numel() for p in model.parameters())


def vae_flops(side: int = 1024) -> tuple[float, int]:
    from diffusers import AutoencoderKLQwenImage

    with torch.device("meta"):
        vae = AutoencoderKLQwenImage().to(torch.bfloat16).eval()
        image = torch.empty(1, 3, 1, side, side, dtype=torch.bfloat16)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vae.decode(vae.encode(image).latent_dist.mode())
    return counter.get_total_flops(), sum(p.numel() for p in vae.parameters())


def text_encoder_flops(text_tokens: int, side: int = 1024) -> tuple[float, int]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**QWEN25_VL_7B))
    params = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.visual.parameters())
    embedding = model.get_input_embeddings().weight.numel()  # a lookup, no FLOPs
    patches = round(side / 28) ** 2 * 4  # the processor's 28-pixel grid, 2x2 patches per merged token
    template = 64  # system-prompt tokens the pipeline drops from the embeddings
    per_prompt = 2 * (params - vision - embedding) * (text_tokens + template) + 2 * vision * patches
    return 2 * per_prompt, params  # the prompt and the negative prompt


def kontext_flops(text_tokens: int = 512, side: int = 1024) -> dict[str, float]:
    """FLUX.1 Kontext [dev], counted on the meta device: one transformer call at side x side
    (noisy and condition latents, 2x2 patches of the 8x VAE: 2 x (side/16)^2 tokens, plus the
    T5 tokens), the VAE's encode + decode, and the text encoders analytically (T5-XXL's
    encoder: 2 FLOPs per parameter and token; CLIP-L: 77 tokens)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    grid = side // 16
    with torch.device("meta"):
        model = FluxTransformer2DModel(guidance_embeds=True).to(torch.bfloat16).eval()  # the defaults are FLUX.1's
        hidden = torch.empty(1, 2 * grid * grid, model.config.in_channels, dtype=torch.bfloat16)
        text = torch.empty(1, text_tokens, model.config.joint_attention_dim, dtype=torch.bfloat16)
        pooled = torch.empty(1, model.config.pooled_projection_dim, dtype=torch.bfloat16)
        ones = torch.ones(1, dtype=torch.bfloat16)
        img_ids, txt_ids = torch.zeros(2 * grid * grid, 3), torch.zeros(text_tokens, 3)
        vae = AutoencoderKL(latent_channels=16, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            use_quant_conv=False, use_post_quant_conv=False).to(torch.bfloat16).eval()
        image = torch.empty(1, 3, side, side, dtype=torch.bfloat16)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pooled, timestep=ones,
              guidance=ones, img_ids=img_ids, txt_ids=txt_ids, return_dict=False)
    call = counter.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vae.decode(vae.encode(image).latent_dist.mode())
    t5_params, clip_params = 4.76e9, 123e6  # T5-XXL encoder (t5-v1_1-xxl), CLIP ViT-L/14 text model
    return {"call": call, "params": sum(p.numel() for p in model.parameters()), "vae": counter.get_total_flops(),
            "text": 2 * t5_params * text_tokens + 2 * clip_params * 77, "text_params": t5_params + clip_params}


def print_kontext(args) -> None:
    k = kontext_flops()
    calls = args.kontext_steps  # distilled guidance: one transformer call per step
    edit = calls * k["call"] + k["vae"] + k["text"]
    gpu_s = edit / (args.gpu_tflops * 1e12)
    print(f"FLUX.1 Kontext transformer: {k['params'] / 1e9:.2f} B parameters ({k['params'] * 2 / 1e9:.1f} GB bf16); "
          f"one call at 1024x1024 (8192 image + 512 text tokens): {k['call'] / 1e12:.1f} TFLOP; "
          f"VAE encode + decode {k['vae'] / 1e12:.1f} TFLOP; text encoders {k['text'] / 1e12:.1f} TFLOP")
    print(f"one Kontext edit: {calls} calls = {calls * k['call'] / 1e15:.2f} PFLOP, {edit / 1e15:.2f} PFLOP in all; "
          f"at {args.gpu_tflops:g} TFLOP/s {gpu_s:.1f} s per edit; piebench_dcag {args.images * 5 * gpu_s / 3600:.1f} "
          f"GPU-h, piebench_dcag_grid {args.images * 25 * gpu_s / 3600:.1f} GPU-h")
    print(f"Kontext weights: {(k['params'] + k['text_params']) * 2 / 1e9:.1f} GB bf16 (transformer + T5-XXL + CLIP)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu-tflops", type=float, default=400.0,
                        help="sustained bf16 TFLOP/s assumed (H100 SXM: 989 dense peak; ~40%% in practice)")
    parser.add_argument("--text-tokens", type=int, default=1400,
                        help="text-stream tokens: ~1369 of the 1024x1024 image in Qwen2.5-VL + the instruction")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--images", type=int, default=700)
    parser.add_argument("--kontext-steps", type=int, default=28, help="FLUX.1 Kontext steps (model card: 28)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    tiny = tiny_costs()
    call, params = transformer_flops(args.text_tokens)
    vae, vae_params = vae_flops()
    text, text_params = text_encoder_flops(args.text_tokens)
    calls = 2 * args.steps
    edit = calls * call + vae + text
    ratio = call / tiny["call_flops"]
    gpu_s = edit / (args.gpu_tflops * 1e12)

    print(f"tiny transformer call here: {tiny['call_s']:.3f} s, {tiny['call_flops'] / 1e9:.3f} GFLOP "
          f"({tiny['call_flops'] / tiny['call_s'] / 1e9:.2f} GFLOP/s on {torch.get_num_threads()} threads); "
          f"rest of an edit (text encoder, VAE): {tiny['rest_s']:.2f} s, {tiny['rest_flops'] / 1e9:.2f} GFLOP")
    print(f"tiny edit at {args.steps} steps x 2 CFG here: {tiny['rest_s'] + calls * tiny['call_s']:.1f} s")
    print(f"real transformer: {params / 1e9:.2f} B parameters ({params * 2 / 1e9:.1f} GB bf16); one call at "
          f"1024x1024 (8192 image + {args.text_tokens} text tokens): {call / 1e12:.1f} TFLOP = "
          f"{ratio:,.0f} x the tiny call")
    print(f"VAE encode + decode at 1024x1024: {vae / 1e12:.1f} TFLOP ({vae_params / 1e6:.0f} M parameters); "
          f"text encoder, 2 prompts: {text / 1e12:.1f} TFLOP ({text_params / 1e9:.2f} B parameters, "
          f"{text_params * 2 / 1e9:.1f} GB bf16)")
    print(f"one edit: {calls} transformer calls = {calls * call / 1e15:.2f} PFLOP; with VAE and text encoder "
          f"{edit / 1e15:.2f} PFLOP ({calls * call / edit:.1%} in the transformer)")
    print(f"tiny measured cost x FLOP ratio, this machine: {tiny['call_s'] * ratio * calls / 3600:,.0f} h per edit")
    print(f"GPU at {args.gpu_tflops:g} sustained TFLOP/s: {gpu_s:.1f} s per edit; "
          f"piebench_dcag ({args.images} x 5 edits): {args.images * 5 * gpu_s / 3600:.1f} GPU-h; "
          f"piebench_dcag_grid ({args.images} x 25): {args.images * 25 * gpu_s / 3600:.1f} GPU-h")
    print(f"weights in GPU memory: {(params + vae_params + text_params) * 2 / 1e9:.1f} GB bf16 without offload, "
          f"{max(params, text_params) * 2 / 1e9:.1f} GB largest component with model.cpu_offload=true")
    print_kontext(args)


if __name__ == "__main__":
    main()
