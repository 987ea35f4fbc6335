"""The directional CLIP score (metrics/clip.py): the cosine on hand-built embeddings, the
text and image embeddings against open_clip, the whole score against StyleGAN-NADA's
formula on open_clip with the same seeded random model, the default templates, the
error when its weights are missing offline, and the label-shuffled null's columns."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from attnedit.errors import DataError, WeightsNotFoundError
from attnedit.metrics.clip import DirectionalCLIP, preprocess, resolve_templates
from metric_inputs import Downloads, as_batch, image_pairs, unreachable

SMALL_CLIP = "ViT-S-32-alt"  # same BPE tokenizer and code path as ViT-B-32, a quarter of the compute


@pytest.fixture(scope="module")
def clip_metric() -> DirectionalCLIP:
    templates = ("a photo of {}.", "a portrait of {}.", "a cropped photo of {}.")
    return DirectionalCLIP(model=SMALL_CLIP, weights="random", seed=0, templates=templates)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_directional_clip_on_hand_built_embeddings(clip_metric, monkeypatch):
    images = {0: [1.0, 0.0, 0.0], 1: [0.0, 1.0, 0.0], 2: [0.6, 0.8, 0.0], 3: [0.0, 0.0, 1.0], 4: [1.0, 1e-8, 0.0]}
    texts = {"src": [1.0, 0.0, 0.0], "tgt": [0.0, 0.6, 0.8]}
    # Each image is flat with value id / 10; the patched encoders look the embeddings up.
    monkeypatch.setattr(
        clip_metric, "embed_images", lambda x: torch.tensor([images[round(float(v) * 10)] for v in x[:, 0, 0, 0]])
    )
    monkeypatch.setattr(clip_metric, "embed_texts", lambda t: torch.tensor([texts[s] for s in t]))

    def flat(*ids):
        return torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 4, 4) / 10

    out = clip_metric(
        flat(1, 2, 3, 0, 4, 2), flat(0, 0, 0, 0, 0, 1),
        source_text=["src"] * 6, target_text=["tgt", "tgt", "tgt", "tgt", "tgt", "src"],
    )["directional_clip"].numpy()

    e = {k: np.array(v) for k, v in images.items()}
    dt = np.array(texts["tgt"]) - np.array(texts["src"])
    expected = [float(_unit(e[k] - e[0]) @ _unit(dt)) for k in (1, 2, 3)]
    np.testing.assert_allclose(out[:3], expected, atol=1e-12)
    # No image change, a change at float32 noise level, no text change: undefined -> NaN.
    assert np.isnan(out[3:]).all()


def test_embed_texts_averages_normalized_templates(clip_metric):
    """The mean of the normalized template embeddings, not normalized again: the difference
    of two is StyleGAN-NADA's mean of per-template differences (the whole score against
    open_clip directly: test_directional_clip_equals_stylegan_nada_formula_on_open_clip)."""
    texts = ["a bald man", "a woman with blond hair"]
    clip_metric._text_cache.clear()  # other tests may have cached these texts from other batches
    got = clip_metric.embed_texts(texts).double().numpy()
    tokenizer = open_clip.get_tokenizer(SMALL_CLIP)
    expected = []
    for text in texts:
        with torch.no_grad():
            emb = clip_metric.model.encode_text(tokenizer([t.format(text) for t in clip_metric.templates]))
        expected.append(_unit(emb.double().numpy()).mean(axis=0))
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)
    assert len(clip_metric.templates) > 1 and (np.linalg.norm(got, axis=1) < 1 - 1e-3).all()
    # Cached per string: the same values come back without re-encoding.
    clip_metric.model.encode_text = None  # any call would now fail
    try:
        np.testing.assert_array_equal(clip_metric.embed_texts(texts[::-1]).numpy(), got[::-1].astype(np.float32))
    finally:
        del clip_metric.model.encode_text


def test_clip_image_embeddings_match_open_clip_eval_transform(clip_metric):
    cfg = clip_metric.model.visual.preprocess_cfg
    transform = open_clip.image_transform(
        cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
        resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"],
    )
    images = torch.rand(2, 3, 150, 190, generator=torch.Generator().manual_seed(1))
    pixels = torch.stack([transform(image) for image in images])
    torch.testing.assert_close(preprocess(images, cfg), pixels, atol=1e-5, rtol=0)
    with torch.no_grad():
        raw = clip_metric.model.encode_image(pixels).double().numpy()
    # L2-normalized before any difference is taken (StyleGAN-NADA convention).
    np.testing.assert_allclose(clip_metric.embed_images(images).double().numpy(), _unit(raw), atol=1e-5)


def test_directional_clip_needs_text_pairs(clip_metric):
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(DataError, match="source_text"):
        clip_metric(x, x, target_text=["a", "b"])
    with pytest.raises(DataError, match="2 strings"):
        clip_metric(x, x, source_text=["a"], target_text=["b"])


def test_default_clip_tokenizer_ships_with_open_clip():
    tokens = open_clip.get_tokenizer("ViT-B-32-quickgelu")(["a photo of a smiling person."])
    assert tokens.shape == (1, 77) and int(tokens[0, 0]) == 49406  # <start_of_text>


def test_directional_clip_equals_stylegan_nada_formula_on_open_clip():
    """StyleGAN-NADA's CLIPLoss (rinongal/StyleGAN-nada, ZSSGAN/criteria/clip_loss.py):
    get_text_features normalizes each template's embedding, compute_text_direction takes
    the mean of the target - source differences and normalizes it; image features are
    normalized before their difference; the score is the cosine of the two directions."""
    templates = ["a bad photo of a {}.", "a sculpture of a {}.", "a tattoo of the {}."]
    reference, edited = image_pairs(4, 2, 224)  # the model's own resolution: resize and crop are identities
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
    out = metric(as_batch(edited), as_batch(reference), source_text=sources, target_text=targets)
    np.testing.assert_allclose(out["directional_clip"].double().numpy(), expected, atol=2e-5)
    assert out["directional_clip_templates"] == ["custom(3)"] * 2
    assert min(abs(v) for v in expected) > 1e-3


def test_default_templates_are_stylegan_nadas_imagenet_templates():
    """The reference list (ZSSGAN/utils/text_templates.py, imagenet_templates): CLIP's 80
    ImageNet templates without "a photo of many {}.", in CLIP's order."""
    templates, label = resolve_templates("stylegan_nada", "directional_clip")
    assert len(templates) == 79 and label == "stylegan_nada(79)"
    assert templates[:2] == ("a bad photo of a {}.", "a sculpture of a {}.")
    assert templates[-1] == "a tattoo of the {}." and "a photo of many {}." not in templates


@pytest.mark.parametrize("hub_offline", ["1", "0"])
def test_clip_weights_missing_offline(tmp_path, monkeypatch, hub_offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", hub_offline)
    hub = Downloads(OSError("We couldn't connect to 'https://huggingface.co' to load this file"))
    url = unreachable()
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", hub)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", url)
    with pytest.raises(WeightsNotFoundError) as err:
        DirectionalCLIP(cache_dir=str(tmp_path))
    message = str(err.value)
    for part in ("ViT-B-32-quickgelu", "'openai'", "timm/vit_base_patch32_clip_224.openai", str(tmp_path)):
        assert part in message
    assert not url.calls  # the tag's hub copy is preferred
    assert (len(hub.calls) == 0) == (hub_offline == "1")


def test_label_null_scores_the_same_change_against_other_labels(clip_metric, monkeypatch):
    """``null_texts`` (per image, JSON [source, target] pairs, one per permutation): each
    ``_null_p<i>`` is the cosine of the image change with that pair's text change (float32
    embeddings: 1e-6)."""
    images = {0: [1.0, 0.0, 0.0], 1: [0.0, 1.0, 0.0], 2: [0.6, 0.8, 0.0]}
    texts = {"a": [1.0, 0.0, 0.0], "b": [0.0, 0.6, 0.8], "c": [0.0, 0.0, 1.0], "d": [0.3, 0.3, 0.3]}
    monkeypatch.setattr(
        clip_metric, "embed_images", lambda x: torch.tensor([images[round(float(v) * 10)] for v in x[:, 0, 0, 0]])
    )
    monkeypatch.setattr(clip_metric, "embed_texts", lambda t: torch.tensor([texts[s] for s in t]))
    monkeypatch.setattr(clip_metric, "label_null", 2)
    monkeypatch.setattr(clip_metric, "needs", ("source_text", "target_text", "null_texts"))
    flat = lambda *ids: torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 4, 4) / 10  # noqa: E731
    null = [json.dumps([["c", "d"], ["a", "c"]]), json.dumps([["b", "a"], ["d", "b"]])]
    out = clip_metric(flat(1, 2), flat(0, 0), source_text=["a", "a"], target_text=["b", "b"], null_texts=null)
    e, t = ({k: np.array(v) for k, v in d.items()} for d in (images, texts))
    cos = lambda u, v: float(_unit(u) @ _unit(v))  # noqa: E731
    for i, (img, pairs) in enumerate(zip((1, 2), ([("c", "d"), ("a", "c")], [("b", "a"), ("d", "b")]))):
        expected = [cos(e[img] - e[0], t[tgt] - t[src]) for src, tgt in pairs]
        np.testing.assert_allclose([out[f"directional_clip_null_p{p}"][i].item() for p in (0, 1)], expected, atol=1e-6)
        assert out["directional_clip_null"][i].item() == pytest.approx(np.mean(expected), abs=1e-6)
        assert out["directional_clip"][i].item() == pytest.approx(cos(e[img] - e[0], t["b"] - t["a"]), abs=1e-6)
    # 2 directions have one derangement: fewer pairs than label_null, one column per pair held
    one = clip_metric(flat(1), flat(0), source_text=["a"], target_text=["b"], null_texts=[json.dumps([["c", "d"]])])
    assert "directional_clip_null_p1" not in one
    assert one["directional_clip_null_p0"][0].item() == pytest.approx(cos(e[1] - e[0], t["d"] - t["c"]), abs=1e-6)
    for bad in ([json.dumps([["a", "b"]] * 3)], [json.dumps([["a", "b"]]), json.dumps([["a", "b"]] * 2)], [json.dumps([])]):
        with pytest.raises(DataError, match=r"null_texts must hold one number \(1 to 2\)"):
            clip_metric(flat(*range(1, len(bad) + 1)), flat(*[0] * len(bad)), source_text=["a"] * len(bad),
                        target_text=["b"] * len(bad), null_texts=bad)
