"""Automatic direction labels: the planted attribute wins, signs are handled, and the
labels travel through the directions file into a run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

from attnedit.errors import ConfigError
from attnedit.methods.directions import read_metadata
from attnedit.methods.labeling import FACE_ATTRIBUTES, label_directions

D = 24


def text_embedder():
    """Fixed random unit vectors per text (deterministic by the text itself)."""

    def embed(texts):
        out = []
        for text in texts:
            g = torch.Generator().manual_seed(sum(ord(c) * (i + 1) for i, c in enumerate(text)))
            out.append(F.normalize(torch.randn(D, generator=g), dim=0))
        return torch.stack(out)

    return embed


def planted_renderer(plants: dict[int, tuple[str, float]], embed_texts):
    """Images whose (fake) embedding moves along T(target) - T(source) of the planted
    attribute by sign * alpha, plus per-probe noise that does not depend on alpha."""
    by_label = {label: (src, tgt) for label, src, tgt in FACE_ATTRIBUTES}
    base = torch.randn(3, D, generator=torch.Generator().manual_seed(0))

    def render(k, alpha):
        label, sign = plants[k]
        src, tgt = by_label[label]
        change = embed_texts([tgt])[0] - embed_texts([src])[0]
        return base + sign * alpha * change  # "images" that the fake image embedder passes through

    return render


def test_planted_labels_are_found_with_signs():
    embed_texts = text_embedder()
    plants = {0: ("smiling", 1.0), 1: ("eyeglasses", -1.0), 2: ("old", 1.0)}
    labels = label_directions(planted_renderer(plants, embed_texts), [0, 1, 2], 0.4,
                              embed_images=lambda x: x, embed_texts=embed_texts)
    assert labels[0]["label"] == "smiling" and labels[0]["target"] == "a smiling face"
    assert labels[2]["label"] == "old"
    # -n is eyeglasses: +alpha goes from "with eyeglasses" to plain
    assert labels[1]["label"] == "-eyeglasses"
    assert (labels[1]["source"], labels[1]["target"]) == ("a face with eyeglasses", "a face")
    assert labels[0]["score"] == pytest.approx(1.0, abs=1e-5)  # the change is exactly the text direction
    assert len(labels[0]["scores"]) == len(FACE_ATTRIBUTES) >= 15


def test_labeling_rejects_bad_settings():
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        label_directions(lambda k, a: None, [0], 0.0, lambda x: x, text_embedder())
    with pytest.raises(ConfigError, match="vocabulary is empty"):
        label_directions(lambda k, a: None, [0], 0.4, lambda x: x, text_embedder(), vocabulary=[])


@pytest.mark.slow
def test_directions_cli_auto_labels_and_runs_use_them(tiny_ddpm_dir, tmp_path, capsys):
    from attnedit.cli import compose, directions
    from attnedit.runner import Runner

    out = tmp_path / "labeled.safetensors"
    directions(["model=tiny_ddpm", f"model.path={tiny_ddpm_dir}", f"out={out}", f"paths.root_dir={tmp_path}", "label=auto",
                "metric_weights=random", "labeling.directions=2", "labeling.num_probes=1",
                "model.num_inference_steps=3", "+labeling.clip.model=ViT-S-32-alt"])
    labels = read_metadata(out, "labels")
    assert set(labels) == {"0", "1"}
    vocabulary = {label for label, _, _ in FACE_ATTRIBUTES}
    for entry in labels.values():
        assert entry["label"].lstrip("-") in vocabulary and "weights=random(seed=0)" in entry["labeled_by"]
    assert set(read_metadata(out, "weight_hashes")) == {"mid_block.attentions.0"}
    assert "direction 0:" in capsys.readouterr().out
    assert set(load_file(str(out))) == {"mid_block.attentions.0.eigenvalues", "mid_block.attentions.0.eigenvectors"}

    cfg = compose("config", ["model=tiny_ddpm", f"paths.root_dir={tmp_path}", f"model.path={tiny_ddpm_dir}", f"method.directions_file={out}",
                             "model.num_inference_steps=3", "dataset.num_samples=1", "method.directions=2",
                             "method.alphas=[0.4]", "progress=false", "device=cpu"])
    runner = Runner(cfg)
    runner.method.setup(runner.backend)
    edits = runner.method.edits()
    assert [e["label"] for e in edits] == [labels["0"]["label"], labels["1"]["label"]]
    assert edits[0]["target_text"] == labels["0"]["target"]


def test_directions_file_from_other_weights_is_refused(tiny_ddpm_dir, tmp_path):
    from attnedit.backends.ddpm import DDPMBackend
    from attnedit.cli import directions
    from attnedit.methods.sad import SAD

    out = tmp_path / "d.safetensors"
    directions(["model=tiny_ddpm", f"model.path={tiny_ddpm_dir}", f"out={out}", f"paths.root_dir={tmp_path}"])
    backend = DDPMBackend(str(tiny_ddpm_dir), device="cpu")
    with torch.no_grad():
        backend.unet.mid_block.attentions[0].to_k.weight.mul_(2)
    with pytest.raises(ConfigError, match="other weights"):
        SAD(directions_file=str(out)).setup(backend)


def test_run_without_texts_fails_before_any_work(tiny_ddpm_dir, tmp_path):
    from attnedit.cli import compose
    from attnedit.runner import Runner

    cfg = compose("config", ["model=tiny_ddpm", f"paths.root_dir={tmp_path}", f"model.path={tiny_ddpm_dir}", "metrics=sad", "+metrics.directional_clip.model=ViT-S-32-alt",
                             "metric_weights=random",
                             "method.directions=2", "+method.labels={0: {label: smile, source: a face, target: a smiling face}}",
                             "progress=false", "device=cpu"])
    with pytest.raises(ConfigError, match=r"directional_clip' needs 'source_text'.*direction\(s\) 1 have none"):
        Runner(cfg).run()
    assert not list(tmp_path.glob("results/runs/*/*/cases/*.parquet"))
