"""Direction labels (methods/labeling.py): the planted (attribute, sign) wins, a mirrored
edit at -alpha scores what the +alpha edit scores, and the labels travel through the
directions file into a run; a run whose metric needs texts the directions lack fails first;
the label-shuffled null's permutations and texts, and the probes a label was chosen on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

from attnedit.config import compose
from attnedit.errors import ConfigError
from attnedit.methods.directions import read_metadata
from attnedit.methods.labeling import (
    FACE_ATTRIBUTES,
    case_texts,
    check_probes_disjoint,
    label_directions,
    derangement_count,
    label_permutations,
    probes_text,
    with_null_texts,
)
from attnedit.methods.sad import SAD
from attnedit.metrics.clip import directional_cosine
from attnedit.run.runner import Runner
from harness import directions

D = 24
BY_LABEL = {label: (src, tgt) for label, src, tgt in FACE_ATTRIBUTES}


def text_embedder():
    """Fixed random unit vectors per text (deterministic by the text itself)."""

    def embed(texts):
        out = []
        for text in texts:
            g = torch.Generator().manual_seed(sum(ord(c) * (i + 1) for i, c in enumerate(text)))
            out.append(F.normalize(torch.randn(D, generator=g), dim=0))
        return torch.stack(out)

    return embed


def text_change(embed_texts, label: str) -> torch.Tensor:
    src, tgt = BY_LABEL[label]
    return embed_texts([tgt])[0] - embed_texts([src])[0]


def noise(seed: int) -> torch.Tensor:
    return torch.randn(D, generator=torch.Generator().manual_seed(seed))


def test_planted_labels_are_found_with_signs():
    """Each sign is scored on its own against the unedited probes: the (attribute, sign)
    whose edit matches best wins, even when the other sign does something else."""
    embed_texts = text_embedder()
    base = torch.randn(3, D, generator=torch.Generator().manual_seed(0))  # 3 probes ("images" = embeddings)
    changes = {
        0: lambda a: a * text_change(embed_texts, "smiling"),  # linear, +n is smiling
        1: lambda a: -a * text_change(embed_texts, "eyeglasses"),  # linear, -n is eyeglasses
        # -alpha makes the face old; +alpha moves half toward "young" and half elsewhere
        2: lambda a: -a * text_change(embed_texts, "old") if a < 0 else a * (text_change(embed_texts, "young") + noise(1)),
    }
    labels = label_directions(lambda k, a: base + changes[k](a), [0, 1, 2], 0.4,
                              embed_images=lambda x: x, embed_texts=embed_texts)
    assert (labels[0]["label"], labels[0]["sign"]) == ("smiling", 1)
    assert (labels[0]["source"], labels[0]["target"]) == ("face", "smiling face")
    # -n is eyeglasses: labeled with that sign, texts as the attribute reads
    assert (labels[1]["label"], labels[1]["sign"]) == ("eyeglasses", -1)
    assert (labels[1]["source"], labels[1]["target"]) == ("face", "face with eyeglasses")
    assert (labels[2]["label"], labels[2]["sign"]) == ("old", -1)
    for k in (0, 1, 2):  # the winning edit's change is exactly the text direction
        assert labels[k]["score"] == pytest.approx(1.0, abs=1e-5)
    # the +alpha edit of direction 2 scored independently: cos(young + noise, young)
    young = text_change(embed_texts, "young").double().numpy()
    moved = young + noise(1).double().numpy()
    expected = moved @ young / np.linalg.norm(moved) / np.linalg.norm(young)
    assert labels[2]["scores"]["+young"] == pytest.approx(expected, abs=1e-5) and expected < 0.9
    assert len(labels[0]["scores"]) == 2 * len(FACE_ATTRIBUTES) and len(FACE_ATTRIBUTES) >= 15


def test_mirrored_edit_at_negative_alpha_scores_the_same():
    """A linear edit: x(-alpha) - x0 = -(x(+alpha) - x0). Each case is scored with the texts
    its method hands over, so both signs score cos(move, T(target) - T(source)); one text
    pair for both signs would give -alpha minus that and a mean over signs of 0."""
    labels = {0: {"label": "smiling", "source": "face", "target": "smiling face"},
              1: {"label": "old", "source": "face", "target": "old face", "sign": -1}}
    edits = SAD(directions=[0, 1], alphas=[-0.4, 0.4], labels=labels).edits()
    assert [(e["direction"], e["alpha"]) for e in edits] == [(0, -0.4), (0, 0.4), (1, -0.4), (1, 0.4)]

    embed_texts = text_embedder()
    base = noise(7)
    moves = {0: text_change(embed_texts, "smiling") + 0.1 * noise(8), 1: text_change(embed_texts, "old") + 0.1 * noise(9)}
    sign = {0: 1, 1: -1}
    edited = torch.stack([base + e["alpha"] * sign[e["direction"]] * moves[e["direction"]] for e in edits])

    # the metric's cosine of (image change, T(row target) - T(row source)); "images" are embeddings
    text_changes = embed_texts([e["target_text"] for e in edits]) - embed_texts([e["source_text"] for e in edits])
    scores = directional_cosine(edited - base, text_changes).numpy()

    for k, label in ((0, "smiling"), (1, "old")):
        move, text = moves[k].double().numpy(), text_change(embed_texts, label).double().numpy()
        expected = move @ text / np.linalg.norm(move) / np.linalg.norm(text)
        np.testing.assert_allclose(scores[2 * k: 2 * k + 2], [expected, expected], atol=1e-6)
        assert 0.5 < expected < 0.999
    # the row texts: direction 1's label holds at -alpha, so +alpha is scored old -> young
    assert (edits[2]["source_text"], edits[2]["target_text"]) == ("face", "old face")
    assert (edits[3]["source_text"], edits[3]["target_text"]) == ("old face", "face")
    assert [e["label_sign"] for e in edits] == [1, 1, -1, -1]


def test_case_texts_order_and_bad_signs():
    entry = {"label": "bald", "source": "person", "target": "bald person"}
    assert case_texts(entry, 0.2) == {"label_sign": 1, "source_text": "person", "target_text": "bald person",
                                      "label_probes": "manual"}
    assert case_texts(entry, -0.2)["source_text"] == "bald person"
    assert case_texts({**entry, "sign": -1}, -0.2)["target_text"] == "bald person"
    assert case_texts(None, 0.4) == {"label_sign": 1, "source_text": None, "target_text": None, "label_probes": None}
    with pytest.raises(ConfigError, match="sign must be 1 or -1"):
        case_texts({**entry, "sign": 2}, 0.4)


def test_labeling_rejects_bad_settings():
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        label_directions(lambda k, a: None, [0], 0.0, lambda x: x, text_embedder())
    with pytest.raises(ConfigError, match="vocabulary is empty"):
        label_directions(lambda k, a: None, [0], 0.4, lambda x: x, text_embedder(), vocabulary=[])


@pytest.mark.slow
def test_directions_cli_auto_labels_and_runs_use_them(tiny_ddpm_dir, tmp_path, capsys):
    out = tmp_path / "labeled.safetensors"
    directions(["model=tiny_ddpm", f"model.path={tiny_ddpm_dir}", f"out={out}", f"paths.root_dir={tmp_path}", "label=auto",
                "metric_weights=random", "labeling.directions=2", "labeling.num_probes=1",
                "model.num_inference_steps=3", "+labeling.clip.model=ViT-S-32-alt",
                "+labeling.clip.templates=['a photo of a {}.']"])  # 1 template, not 79: a fast CPU test
    labels = read_metadata(out, "labels")
    assert set(labels) == {"0", "1"}
    vocabulary = {label for label, _, _ in FACE_ATTRIBUTES}
    for entry in labels.values():
        assert entry["label"] in vocabulary and entry["sign"] in (1, -1)
        assert "weights=random(seed=0)" in entry["labeled_by"]
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
    assert [e["label_sign"] for e in edits] == [labels["0"]["sign"], labels["1"]["sign"]]
    order = ("source", "target") if labels["0"]["sign"] > 0 else ("target", "source")  # alpha is +0.4
    assert (edits[0]["source_text"], edits[0]["target_text"]) == tuple(labels["0"][k] for k in order)


def test_run_without_texts_fails_before_any_work(tiny_ddpm_dir, tmp_path):
    cfg = compose("config", ["model=tiny_ddpm", f"paths.root_dir={tmp_path}", f"model.path={tiny_ddpm_dir}", "metrics=sad", "+metrics.directional_clip.model=ViT-S-32-alt",
                             "metric_weights=random",
                             "method.directions=2", "+method.labels={0: {label: smile, source: a face, target: a smiling face}}",
                             "progress=false", "device=cpu"])
    with pytest.raises(ConfigError, match=r"directional_clip' needs 'source_text'.*direction\(s\) 1 have none"):
        Runner(cfg).run()
    assert not list(tmp_path.glob("results/runs/*/*/cases/*.parquet"))


def test_label_permutations_are_seeded_derangements():
    ids = [0, 2, 5, 7, 9]
    perms = label_permutations(ids, 6, seed=3)
    assert len(perms) == 6
    for perm in perms:
        assert sorted(perm) == ids and sorted(perm.values()) == ids, "a bijection of the method's directions"
        assert all(perm[k] != k for k in ids), "no direction keeps its own label"
    assert perms == label_permutations(ids, 6, seed=3) and perms != label_permutations(ids, 6, seed=4)
    assert len({tuple(p.values()) for p in perms}) > 1
    with pytest.raises(ConfigError, match="label_null=2 permutes labels.*1 direction"):
        label_permutations([3], 2)
    with pytest.raises(ConfigError, match="must be >= 0"):
        label_permutations(ids, -1)
    assert label_permutations([3], 0) == []


def test_label_permutations_are_distinct_and_at_most_the_derangements_there_are():
    """2 directions have one derangement (the swap), 3 have two: asking for more gives each
    once, never a copy whose spread would read as the null's (counted with itertools)."""
    import itertools

    for n in range(0, 7):
        independent = sum(all(p[i] != i for i in range(n)) for p in itertools.permutations(range(n)))
        assert derangement_count(n) == independent
    for n, count in ((2, 5), (3, 5), (3, 2), (4, 9), (4, 20), (5, 12)):
        ids = [10 * k + 1 for k in range(n)]
        perms = label_permutations(ids, count, seed=2)
        everyone = {tuple(ids[j] for j in p) for p in itertools.permutations(range(n))
                    if all(p[i] != i for i in range(n))}
        assert len(perms) == min(count, len(everyone))
        drawn = [tuple(perm[k] for k in ids) for perm in perms]
        assert len(set(drawn)) == len(drawn) and set(drawn) <= everyone
    assert [tuple(p.values()) for p in label_permutations([0, 1], 4)] == [(1, 0)]


def test_null_texts_are_other_directions_labels_in_each_edits_order():
    labels = {0: {"label": "smiling", "source": "face", "target": "smiling face"},
              1: {"label": "old", "source": "face", "target": "old face", "sign": -1},
              2: {"label": "bald", "source": "person", "target": "bald person"}}
    edits = SAD(directions=[0, 1, 2], alphas=[-0.4, 0.4], labels=labels).edits()
    nulled = with_null_texts(edits, labels, 3, seed=1)
    assert [{k: v for k, v in e.items() if k != "null_texts"} for e in nulled] == edits
    own = {k: {(v["source"], v["target"]), (v["target"], v["source"])} for k, v in labels.items()}
    for p, perm in enumerate(label_permutations([0, 1, 2], 3, seed=1)):
        for edit in nulled:
            pair = tuple(json.loads(edit["null_texts"])[p])
            entry = labels[perm[edit["direction"]]]
            # written out: the permuted label's texts, reversed when its sign and the edit's alpha disagree
            moves_to_target = entry.get("sign", 1) * edit["alpha"] > 0
            assert pair == ((entry["source"], entry["target"]) if moves_to_target else (entry["target"], entry["source"]))
            assert pair not in own[edit["direction"]]
    assert with_null_texts(edits, labels, 0) is edits
    with pytest.raises(ConfigError, match="no \\(direction, alpha\\)"):
        with_null_texts([{"alpha": 1.0}], labels, 2)


def test_probes_are_recorded_and_must_be_apart_from_the_evaluated_samples():
    assert probes_text({"label": "a", "labeled_by": "clip", "probe_seeds": [1003, 1000, 1001, 1002]}) == "seeds 1000-1003"
    assert probes_text({"label": "a", "labeled_by": "clip", "probe_seeds": [5, 9]}) == "seeds 5,9"
    assert probes_text({"label": "a", "labeled_by": "clip"}) == "unrecorded"
    assert probes_text({"label": "a"}) == "manual" and probes_text(None) is None
    labels = {0: {"probe_seeds": [1000, 1001]}, 3: {"probe_seeds": [98, 99, 100]}}
    check_probes_disjoint(labels, range(0, 98))
    check_probes_disjoint(labels, None)  # a dataset of images, not seeds
    with pytest.raises(ConfigError, match=r"direction 3's label was chosen on probe seeds \[98, 99\].*labeling.first_seed"):
        check_probes_disjoint(labels, range(0, 100))
