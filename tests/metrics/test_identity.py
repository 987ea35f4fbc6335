"""The identity similarity id_sim (metrics/identity.py): its face crop and embedding
cosine against known embeddings, against facenet-pytorch's own pipeline with the same
seeded random network, pSp's fixed crop against numpy slicing and pooling, the backbone and
crop recorded per row and in titles, its weights settings, and the error when its weights
are missing offline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from facenet_pytorch import MTCNN, InceptionResnetV1
from facenet_pytorch.models import inception_resnet_v1
from PIL import Image
from skimage import data

from attnedit.errors import ConfigError, WeightsNotFoundError
from attnedit.metrics.identity import FACE_SIZE, IdentitySimilarity
from attnedit.report.marks import title_marks
from attnedit.metrics.registry import available_metrics
from metric_inputs import as_batch, unreachable


def _quantized(x: torch.Tensor) -> torch.Tensor:
    """Images whose values are exact multiples of 1/255, like decoded PNGs."""
    return x.mul(255).round().div(255)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    image = torch.nn.functional.interpolate(image, size=(160, 160), mode="bilinear", antialias=True)
    return _quantized(image.clamp(0, 1))


@pytest.fixture(scope="module")
def id_metric() -> IdentitySimilarity:
    return IdentitySimilarity(weights="random", seed=0)


@pytest.fixture(scope="module")
def unaligned() -> IdentitySimilarity:
    """align="none": the crop is the centred square; tests swap in a known embedder."""
    return IdentitySimilarity(weights="random", align="none")


class FixedLinearEmbedder(torch.nn.Module):
    """A known embedding: a fixed random linear map of the flattened crop."""

    def __init__(self, matrix: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("matrix", torch.from_numpy(matrix).float())

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return faces.flatten(1) @ self.matrix.T


def test_id_sim_is_cosine_of_known_embeddings(unaligned, monkeypatch):
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((16, 3 * FACE_SIZE * FACE_SIZE)).astype(np.float32)
    metric = unaligned
    monkeypatch.setattr(metric, "embedder", FixedLinearEmbedder(matrix))
    edited = rng.integers(0, 256, (3, 3, FACE_SIZE, FACE_SIZE)) / 255.0
    reference = edited.copy()
    reference[1] = rng.integers(0, 256, (3, FACE_SIZE, FACE_SIZE)) / 255.0
    reference[2, :, :80] = 1 - reference[2, :, :80]

    out = metric(torch.from_numpy(edited).float(), torch.from_numpy(reference).float())

    def embed(x):  # (round(255 x) - 127.5) / 128, then the map, in float64
        faces = (np.round(x * 255) - 127.5) / 128
        e = faces.reshape(len(x), -1) @ matrix.astype(np.float64).T
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    expected = (embed(edited) * embed(reference)).sum(axis=1)
    np.testing.assert_allclose(out["id_sim"].numpy(), expected, atol=1e-5)
    assert abs(expected[0] - 1) < 1e-12 and expected[1] < 0.9  # the pairs really differ
    assert out["id_face_fallback"].tolist() == [True, True, True]  # align="none": never a detected face


def test_fallback_crop_is_centered_square_resized(unaligned):
    image = _quantized(torch.rand(1, 3, 200, 240))
    faces, fallback = unaligned.align_faces(image)
    # Independently: the middle 200x200 columns, resized to 160, on the 0..255 scale.
    square = image[..., :, 20:220] * 255
    expected = torch.nn.functional.interpolate(square, size=(160, 160), mode="bilinear", antialias=True)
    torch.testing.assert_close(faces, (expected - 127.5) / 128, atol=1e-4, rtol=0)
    assert fallback.tolist() == [True]


def test_id_sim_identical_pair_is_one_and_no_face_is_flagged(id_metric, astronaut):
    gray = torch.full_like(astronaut, 0.5)
    out = id_metric(torch.cat([astronaut, gray, astronaut]), torch.cat([astronaut, astronaut, gray]))
    assert abs(float(out["id_sim"][0]) - 1) < 1e-6
    assert out["id_face_fallback"].dtype == torch.bool
    assert out["id_face_fallback"].tolist() == [False, True, True]
    assert out["id_sim_backbone"] == ["facenet"] * 3 and out["id_sim_align"] == ["mtcnn(margin=0)"] * 3


def test_identical_images_give_one_with_a_sensitive_embedding(unaligned, astronaut, monkeypatch):
    known = unaligned
    matrix = np.random.default_rng(1).standard_normal((8, 3 * FACE_SIZE * FACE_SIZE)).astype(np.float32)
    monkeypatch.setattr(known, "embedder", FixedLinearEmbedder(matrix))
    images = torch.cat([astronaut, _quantized(astronaut.roll(7, dims=-1))])
    same, different = known(images, images)["id_sim"], known(images, images.flip(0))["id_sim"]
    np.testing.assert_allclose(same.numpy(), 1.0, atol=1e-6)
    assert (different < 0.999).all()


def test_mtcnn_crop_equals_facenet_single_image_pipeline(id_metric, astronaut):
    gray = torch.full_like(astronaut, 0.5)
    faces, fallback = id_metric.align_faces(torch.cat([astronaut, gray]))
    assert fallback.tolist() == [False, True]
    pixels = astronaut[0].mul(255).round().to(torch.uint8).permute(1, 2, 0)
    reference_face = MTCNN(image_size=160)(Image.fromarray(pixels.numpy()))  # facenet-pytorch's README input
    assert reference_face is not None
    torch.testing.assert_close(faces[0], reference_face, atol=1e-6, rtol=0)


def test_id_sim_weights_are_marked_and_validated(id_metric):
    assert {"id_sim", "directional_clip", "lpips"} <= set(available_metrics())
    assert id_metric.weights == "random(seed=0)" and id_metric.uses_random_weights
    with pytest.raises(ConfigError):
        IdentitySimilarity(weights="imagenet")
    with pytest.raises(ConfigError):
        IdentitySimilarity(weights="random", align="dlib")
    with pytest.raises(ConfigError, match="backbone='arcface'.*'facenet', 'arcface_ir_se50'"):
        IdentitySimilarity(weights="random", backbone="arcface")


def test_id_sim_equals_facenet_pytorch_pipeline_with_the_same_seeded_network():
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
    out = metric(as_batch(images[:2]), as_batch(images[[2, 2]]))
    np.testing.assert_allclose(out["id_sim"].double().numpy(), expected, atol=1e-6)
    assert out["id_face_fallback"].tolist() == [False, False]
    # A random network maps every face near one direction (cosines ~ 1 - 1e-6), so compare
    # the embeddings themselves: they differ between images by far more than the tolerance.
    got = metric.embed(metric.align_faces(as_batch(images))[0]).double().numpy()
    np.testing.assert_allclose(got, embeddings, atol=2e-6)
    assert np.linalg.norm(embeddings[0] - embeddings[2]) > 1e-4 and np.linalg.norm(embeddings[1] - embeddings[2]) > 1e-4


@pytest.mark.parametrize("hub_offline", ["1", "0"])
def test_facenet_weights_missing_offline(tmp_path, monkeypatch, hub_offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", hub_offline)
    download = unreachable()
    monkeypatch.setattr(inception_resnet_v1, "download_url_to_file", download)
    with pytest.raises(WeightsNotFoundError) as err:
        IdentitySimilarity()
    message = str(err.value)
    assert "20180402-114759-vggface2.pt" in message and str(tmp_path / "checkpoints") in message
    assert "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/" in message
    assert len(download.calls) == (0 if hub_offline == "1" else 1)  # offline: no network attempt at all


def pooled(images: np.ndarray, size: int) -> np.ndarray:
    """Adaptive average pooling in float64: output cell i averages input rows
    floor(i n / size) .. ceil((i + 1) n / size) - 1 (likewise columns)."""
    n = images.shape[-1]
    start = np.arange(size) * n // size
    end = -(-(np.arange(size) + 1) * n // size)
    total = np.zeros(images.shape[:-2] + (n + 1, n + 1))  # summed-area table
    total[..., 1:, 1:] = images.cumsum(-2).cumsum(-1)
    r0, r1, c0, c1 = start[:, None], end[:, None], start[None], end[None]
    sums = total[..., r1, c1] - total[..., r0, c1] - total[..., r1, c0] + total[..., r0, c0]
    return sums / ((r1 - r0) * (c1 - c0))


def psp_crops(images: np.ndarray, size: int, divisor: float) -> np.ndarray:
    """uint8 NHWC 256x256 -> pSp's crop (x[:, :, 35:223, 32:220]) pooled to size, standardized."""
    crop = images.transpose(0, 3, 1, 2)[:, :, 35:223, 32:220].astype(np.float64)
    return (pooled(crop, size) - 127.5) / divisor


@pytest.mark.parametrize("backbone, size, divisor", [("facenet", 160, 128.0), ("arcface_ir_se50", 112, 127.5)])
def test_fixed_crop_is_psps_crop_pooled_to_the_network_input(backbone, size, divisor):
    import torchvision

    metric = IdentitySimilarity(weights="random", backbone=backbone, align="fixed_crop")
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    faces, fallback = metric.align_faces(as_batch(images))
    np.testing.assert_allclose(faces.double().numpy(), psp_crops(images, size, divisor), atol=1e-5)
    assert fallback.tolist() == [False, False]
    # another size: resized to 256 first, as semantic-diffusion's IDLoss does (torchvision Resize)
    small = rng.integers(0, 256, (1, 96, 96, 3), dtype=np.uint8)
    resize = torchvision.transforms.Resize((256, 256), antialias=True)
    resized = resize(torch.from_numpy(small).permute(0, 3, 1, 2).float())
    faces, _ = metric.align_faces(as_batch(small))
    np.testing.assert_allclose(faces.double().numpy(), psp_crops(resized.permute(0, 2, 3, 1).numpy(), size, divisor),
                               atol=1e-4)


def test_fixed_crop_scores_the_cosine_of_the_crops_and_rows_and_titles_say_so(monkeypatch):
    metric = IdentitySimilarity(weights="random", align="fixed_crop")
    rng = np.random.default_rng(6)
    matrix = rng.standard_normal((16, 3 * FACE_SIZE * FACE_SIZE)).astype(np.float32)
    monkeypatch.setattr(metric, "embedder", FixedLinearEmbedder(matrix))
    edited = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    reference = edited.copy()
    reference[1, 100:] = 255 - reference[1, 100:]
    reference[0, :30] = 0  # outside the crop's rows 35:223: no change to the identity
    out = metric(as_batch(edited), as_batch(reference))

    def embed(images):
        # (16, D) @ (D, N): numpy's (N, D) @ (D, 16) takes ~10 s here (a slow BLAS path for N = 2)
        e = (matrix.astype(np.float64) @ psp_crops(images, FACE_SIZE, 128.0).reshape(len(images), -1).T).T
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    expected = (embed(edited) * embed(reference)).sum(axis=1)
    np.testing.assert_allclose(out["id_sim"].numpy(), expected, atol=1e-5)
    assert abs(expected[0] - 1) < 1e-12 and expected[1] < 0.9
    assert out["id_face_fallback"].tolist() == [False, False]
    assert out["id_sim_backbone"] == ["facenet"] * 2 and out["id_sim_align"] == ["fixed_crop"] * 2
    rows = pd.DataFrame({"id_sim": [0.9, 0.8, 0.7], "id_sim_backbone": ["facenet", "facenet", "arcface_ir_se50"],
                         "id_sim_align": ["fixed_crop", "mtcnn(margin=0)", "fixed_crop"]})
    title = title_marks(rows)
    assert ("[id_sim: FaceNet (facenet-pytorch InceptionResnetV1, VGGFace2, 160x160) on MTCNN face crops "
            "(margin 0 px; no face: the centred square)]") in title
    assert ("[id_sim: ArcFace IR-SE50 (pSp's model_ir_se50.pth, 112x112) on pSp's fixed crop (rows 35:223, "
            "columns 32:220 of the 256x256 image, average-pooled)]") in title
    assert "[id_sim: FaceNet (facenet-pytorch InceptionResnetV1, VGGFace2, 160x160) on pSp's fixed crop" in title
