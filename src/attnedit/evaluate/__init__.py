"""``attnedit-evaluate``: score a folder of already-edited PIE-Bench images with the
official metrics, without running any model.

    attnedit-evaluate dataset.root=<PIE-Bench root> edited=<folder like annotation_images/> \\
        metrics=[psnr_unedit_part,ssim_unedit_part,mse_unedit_part,lpips_unedit_part] \\
        out=results/mine.csv name=mine

Several methods in one call, as the official script's method list (each source image
is read, decoded and, for LPIPS, SSIM, CLIP and structure distance, prepared once for
all of them): ``edited={none: runs/none, grag: runs/grag}`` instead of ``name=``.

The edited image of entry ``id`` is ``<edited>/<image_path>``; the same path with
another image extension (.png, .jpg, .jpeg, .webp, .bmp, .tif, .tiff) is accepted too.
Output: the official per-image CSV (``file_id``, then ``<method>|<metric>`` per method,
in the given order), rows appended per batch so a crash loses nothing; a rerun with the
same ``out`` skips the ids already there. Cells as the official script writes them
(cure-lab/PnPInversion evaluation/evaluate.py: ``calculate_metric`` returns the string
"nan" for an empty region, lines 40-98, and ``csv.writer`` writes floats by ``repr``,
lines 281-283): "nan" where the region is empty; an empty cell where the edited image
could not be scored (NaN/inf pixels with ``nonfinite=nan``), which the official script
has no token for. Next to it: ``<stem>_summary.md`` / ``.csv`` (per-category means, NaN
skipped, failures counted) and ``<stem>_meta.json`` (settings; a resume must match them).

Edited images of another size (``edited_size``): ``auto`` (default) crops a non-square
image to its bottom-right corner at the source size, as the official script does
(evaluate.py lines 271-273: PnPInversion saves source | edit side by side), and resizes
any other size (bicubic, antialiased: instruction editors such as Qwen-Image-Edit return
1024 x 1024 for PIE-Bench's 512 x 512, where the official script's shape assertion stops).

Images and masks are decoded by ``workers`` threads (PIL and numpy release the GIL) ahead
of the batch being scored; each batch goes to the device as uint8 and becomes float there.
"""
