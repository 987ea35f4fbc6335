"""Every SAD-study metric against an independent computation: the reference side never
imports attnedit (skimage, numpy float64, the lpips package, facenet-pytorch, open_clip
used as their own documentation shows). Where pretrained weights are unreachable
offline, both sides build the same seeded random backbone by the library's own init:
``torch.manual_seed(seed)`` then the constructor.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lpips
import numpy as np
import open_clip
import pytest
import torch
from facenet_pytorch import MTCNN, InceptionResnetV1
from PIL import Image
from skimage import data
from skimage.metrics import structural_similarity

SMALL_CLIP = "ViT-S-32-alt"  # the same BPE tokenizer and code path as ViT-B-32, a quarter of the compute


def _images(seed: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of uint8 RGB images (N, H, W, 3): a smooth random image and a perturbed copy."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (n, size // 8, size // 8, 3)).repeat(8, axis=1).repeat(8, axis=2)
    edited = np.clip(base + rng.normal(0, 0.08, base.shape), 0, 1)
    return (base * 255).round().astype(np.uint8), (edited * 255).round().astype(np.uint8)


def _tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> the harness's [0, 1] float NCHW."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


# --- SSIM / PSNR ------------------------------------------------------------------------


def test_ssim_equals_skimage_gaussian_ssim_of_wang_et_al():
    from attnedit.metrics.fidelity import SSIM

    reference, edited = _images(0, 3, 64)
    # Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, population
    # covariances; skimage's documented settings for that paper.
    expected = [structural_similarity(e, r, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False) for e, r in zip(edited, reference)]
    out = SSIM()(_tensor(edited), _tensor(reference))
    np.testing.assert_allclose(out["ssim"].double().numpy(), expected, atol=2e-5)
    assert out["ssim_border"] == ["crop"] * 3
    assert max(expected) < 0.99  # the pairs really differ
    # torchmetrics 1.5+ averages the map of the reflection-padded image: a named deviation
    padded = SSIM(border="pad")(_tensor(edited), _tensor(reference))["ssim"].double().numpy()
    assert (np.abs(padded - expected) > 0.01).all()


def test_psnr_equals_numpy_float64_per_image():
    from attnedit.metrics.fidelity import PSNR

    reference, edited = _images(1, 3, 32)
    edited[2] = reference[2] // 2  # a much larger error: per-image values must not be pooled
    mse = ((edited.astype(np.float64) - reference) / 255) ** 2
    expected = 10 * np.log10(1.0 / mse.reshape(3, -1).mean(axis=1))
    got = PSNR()(_tensor(edited), _tensor(reference))["psnr"].double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert expected[2] < expected[0] - 5


# --- LPIPS ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # lpips' torchvision call
def test_lpips_equals_the_lpips_package_with_the_same_seeded_backbone():
    from attnedit.metrics.perceptual import LPIPS

    reference, edited = _images(2, 2, 64)
    torch.manual_seed(3)  # lpips' README usage, backbone left random (pnet_rand) under the seed
    net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    with torch.no_grad():  # lpips.im2tensor: uint8 -> [-1, 1], one image at a time
        expected = [float(net(lpips.im2tensor(e), lpips.im2tensor(r))) for e, r in zip(edited, reference)]
    got = LPIPS(net="alex", weights="random", seed=3)(_tensor(edited), _tensor(reference))["lpips"]
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-7)
    assert min(expected) > 1e-4


# --- FaceNet identity ---------------------------------------------------------------------


def test_id_sim_equals_facenet_pytorch_pipeline_with_the_same_seeded_network():
    from attnedit.metrics.identity import IdentitySimilarity

    face = np.asarray(Image.fromarray(data.astronaut()).resize((160, 160), Image.BILINEAR))
    brighter = np.clip(face.astype(np.float64) * 0.85 + 30, 0, 255).round().astype(np.uint8)
    mirrored = np.ascontiguousarray(face[:, ::-1])
    images = np.stack([brighter, mirrored, face])

    # facenet-pytorch's README: MTCNN(image_size=160) crops and standardizes a PIL image,
    # InceptionResnetV1 embeds it; the random network is the constructor under the seed.
    mtcnn = MTCNN(image_size=160, margin=0)
    torch.manual_seed(0)
    resnet = InceptionResnetV1(pretrained=None).eval()
    with torch.no_grad():
        crops = [mtcnn(Image.fromarray(image)) for image in images]
        assert all(c is not None for c in crops), "facenet-pytorch finds the face"
        embeddings = resnet(torch.stack(crops)).double().numpy()
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    expected = embeddings[:2] @ embeddings[2]  # (brighter, face), (mirrored, face)

    metric = IdentitySimilarity(weights="random", seed=0)
    out = metric(_tensor(images[:2]), _tensor(images[[2, 2]]))
    np.testing.assert_allclose(out["id_sim"].double().numpy(), expected, atol=1e-6)
    assert out["id_face_fallback"].tolist() == [False, False]
    # A random network maps every face near one direction (cosines ~ 1 - 1e-6), so compare
    # the embeddings themselves: they differ between images by far more than the tolerance.
    got = metric.embed(metric.align_faces(_tensor(images))[0]).double().numpy()
    np.testing.assert_allclose(got, embeddings, atol=2e-6)
    assert np.linalg.norm(embeddings[0] - embeddings[2]) > 1e-4 and np.linalg.norm(embeddings[1] - embeddings[2]) > 1e-4


# --- Directional CLIP -------------------------------------------------------------------


def test_directional_clip_equals_stylegan_nada_formula_on_open_clip():
    """StyleGAN-NADA's CLIPLoss (rinongal/StyleGAN-nada, ZSSGAN/criteria/clip_loss.py):
    get_text_features normalizes each template's embedding, compute_text_direction takes
    the mean of the target - source differences and normalizes it; image features are
    normalized before their difference; the score is the cosine of the two directions."""
    from attnedit.metrics.clip import DirectionalCLIP

    templates = ["a bad photo of a {}.", "a sculpture of a {}.", "a tattoo of the {}."]
    reference, edited = _images(4, 2, 224)  # the model's own resolution: resize and crop are identities
    sources, targets = ["face", "person"], ["smiling face", "bald person"]

    torch.manual_seed(0)
    model, _, transform = open_clip.create_model_and_transforms(SMALL_CLIP)
    model.eval()
    tokenizer = open_clip.get_tokenizer(SMALL_CLIP)

    def normed(x):
        return x / x.norm(dim=-1, keepdim=True)

    with torch.no_grad():
        def text_features(text):
            return normed(model.encode_text(tokenizer([t.format(text) for t in templates])).double())

        def image_features(images):
            return normed(model.encode_image(torch.stack([transform(Image.fromarray(i)) for i in images])).double())

        image_direction = normed(image_features(edited) - image_features(reference))
        expected = []
        for i, (source, target) in enumerate(zip(sources, targets)):
            text_direction = normed((text_features(target) - text_features(source)).mean(dim=0))
            expected.append(float(image_direction[i] @ text_direction))

    metric = DirectionalCLIP(model=SMALL_CLIP, weights="random", seed=0, templates=templates)
    out = metric(_tensor(edited), _tensor(reference), source_text=sources, target_text=targets)
    np.testing.assert_allclose(out["directional_clip"].double().numpy(), expected, atol=2e-5)
    assert out["directional_clip_templates"] == ["custom(3)"] * 2
    assert min(abs(v) for v in expected) > 1e-3


def test_default_templates_are_stylegan_nadas_imagenet_templates():
    """The reference list (ZSSGAN/utils/text_templates.py, imagenet_templates): CLIP's 80
    ImageNet templates without "a photo of many {}.", in CLIP's order."""
    from attnedit.metrics.clip import resolve_templates

    templates, label = resolve_templates("stylegan_nada", "directional_clip")
    assert len(templates) == 79 and label == "stylegan_nada(79)"
    assert templates[:2] == ("a bad photo of a {}.", "a sculpture of a {}.")
    assert templates[-1] == "a tattoo of the {}." and "a photo of many {}." not in templates
