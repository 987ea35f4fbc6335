"""Bias-delta attention guidance (GRAG, DCAG) for the MM-DiTs of Qwen-Image-Edit and
FLUX.1 Kontext: params.py (the scales), rescale.py and kernel.py (the arithmetic),
architectures.py (one registry; qwen.py, flux.py: a processor and the condition tokens of
each transformer class), guidance.py (the context manager), method.py (the edit method).

In every guided block the attention sequence ends with the L condition-image tokens
(Qwen: the image stream of a double-stream block is the noisy latent, then the
condition image; Kontext: text, noisy latent, then condition image, in double- and
single-stream blocks alike). For those L tokens, per sample, head and channel::

    K' = bk * mean_K + dk * (K - mean_K)     K after QK RMSNorm and RoPE
    V' = bv * mean_V + dv * (V - mean_V)     V the raw projection
    Q' = bq * mean_Q + dq * (Q - mean_Q)     optional (the DCAG paper's future work)

Text tokens and noisy-latent tokens are untouched. GRAG is dv = bv = 1; (1, 1)
reproduces the stock processor bit for bit.

``arithmetic`` says how the rescale is computed. "fused" (the default): one pass in
float32, rounded once to the tokens' dtype, identity scales skipped (bitwise stock at
(1, 1)), at ~1% of a Qwen-Image-Edit call. "official": the official scripts' expression
op by op in the tokens' dtype (bfloat16 in their pipelines), Qwen-Image-Edit only:
leeguandong/DCAG dcag/models.py lines 331-350 and little-misfit/GRAG-Image-Editing
Qwen-Edit-GRAG/hacked_models/models.py lines 330-341: in every guided block the first 512
text-stream keys get ``1.0 * mean + (K - mean) * 1.0`` (identity up to rounding), the
condition keys ``bk * mean + (K - mean) * dk`` even at (1, 1), the condition values the
same only where (bv, dv) != (1, 1); each of ``-``, ``*``, ``+`` rounds to bfloat16. The
two differ by bfloat16 rounding only; rows record ``guidance_arithmetic`` and tables built
from "fused" rows say so in their titles. The official scripts have no unguided path
(their test.py always passes grag_scale), so their (1, 1) row is "official" at identity
scales (``dcag_row=none_official``), not the stock processor (a study's unedited run,
marked "stock" in its tables). L is read from each transformer call (never
a constant): Qwen's ``img_shapes``, Kontext's ``img_ids`` (condition tokens carry
first coordinate 1), so non-square and multi-sample batches work, and each batch
element may carry its own scales.
"""
