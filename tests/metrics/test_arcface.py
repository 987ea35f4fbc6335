"""ArcFace IR-SE50 (metrics/arcface.py): its state dict has the published file's layout,
its forward equals a functional forward written here from the published architecture, a
saved state dict (without num_batches_tracked, as old PyTorch wrote it) loads back
through load_arcface, and a missing or foreign file is one clear error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnedit.errors import ConfigError, WeightsNotFoundError
from attnedit.metrics.arcface import IRSE50, load_arcface
from attnedit.metrics.identity import IdentitySimilarity

#: IR-SE50 as pSp describes it (models/encoders/helpers.py get_blocks(50)): (units, depth).
STAGES = [(3, 64), (4, 128), (14, 256), (3, 512)]


def published_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of pSp's Backbone(112, 50, mode='ir_se') state dict, from its description."""
    layout = {}

    def bn(prefix, c):
        layout.update({f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")})
        layout[f"{prefix}.num_batches_tracked"] = ()

    layout["input_layer.0.weight"] = (64, 3, 3, 3)
    bn("input_layer.1", 64)
    layout["input_layer.2.weight"] = (64,)
    unit, width_in = 0, 64
    for count, depth in STAGES:
        for _ in range(count):
            p = f"body.{unit}"
            if width_in != depth:
                layout[f"{p}.shortcut_layer.0.weight"] = (depth, width_in, 1, 1)
                bn(f"{p}.shortcut_layer.1", depth)
            bn(f"{p}.res_layer.0", width_in)
            layout[f"{p}.res_layer.1.weight"] = (depth, width_in, 3, 3)
            layout[f"{p}.res_layer.2.weight"] = (depth,)
            layout[f"{p}.res_layer.3.weight"] = (depth, depth, 3, 3)
            bn(f"{p}.res_layer.4", depth)
            layout[f"{p}.res_layer.5.fc1.weight"] = (depth // 16, depth, 1, 1)
            layout[f"{p}.res_layer.5.fc2.weight"] = (depth, depth // 16, 1, 1)
            unit, width_in = unit + 1, depth
    bn("output_layer.0", 512)
    layout["output_layer.3.weight"] = (512, 512 * 7 * 7)
    layout["output_layer.3.bias"] = (512,)
    bn("output_layer.4", 512)
    return layout


def trained_like_state(seed: int) -> dict[str, torch.Tensor]:
    """Random weights with non-trivial batch-norm statistics, affines and PReLU slopes."""
    torch.manual_seed(seed)
    state = IRSE50().state_dict()
    g = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=g)
        elif key.endswith(("running_mean", "bias")) or ("layer" in key and value.ndim == 1):
            state[key] = value + 0.1 * torch.randn(value.shape, generator=g)
    return state


def functional_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The published forward, unit by unit (helpers.py bottleneck_IR_SE, SEModule)."""
    w = {k: v for k, v in state.items() if v.is_floating_point()}

    def bn(x, p):
        return F.batch_norm(x, w[f"{p}.running_mean"], w[f"{p}.running_var"], w[f"{p}.weight"], w[f"{p}.bias"],
                            training=False, eps=1e-5)

    x = F.prelu(bn(F.conv2d(x, w["input_layer.0.weight"], padding=1), "input_layer.1"), w["input_layer.2.weight"])
    unit, width_in = 0, 64
    for count, depth in STAGES:
        for i in range(count):
            p, stride = f"body.{unit}", 2 if i == 0 else 1
            r = F.conv2d(bn(x, f"{p}.res_layer.0"), w[f"{p}.res_layer.1.weight"], padding=1)
            r = F.prelu(r, w[f"{p}.res_layer.2.weight"])
            r = F.conv2d(r, w[f"{p}.res_layer.3.weight"], stride=stride, padding=1)
            r = bn(r, f"{p}.res_layer.4")
            gate = F.adaptive_avg_pool2d(r, 1)
            gate = torch.sigmoid(F.conv2d(F.relu(F.conv2d(gate, w[f"{p}.res_layer.5.fc1.weight"])),
                                          w[f"{p}.res_layer.5.fc2.weight"]))
            if width_in == depth:
                shortcut = F.max_pool2d(x, 1, stride)
            else:
                shortcut = bn(F.conv2d(x, w[f"{p}.shortcut_layer.0.weight"], stride=stride), f"{p}.shortcut_layer.1")
            x, unit, width_in = r * gate + shortcut, unit + 1, depth
    x = bn(x, "output_layer.0").flatten(1)
    x = bn(F.linear(x, w["output_layer.3.weight"], w["output_layer.3.bias"]), "output_layer.4")
    return x / x.norm(dim=1, keepdim=True)


def test_state_dict_has_the_published_layout():
    state = IRSE50().state_dict()
    expected = published_layout()
    assert sorted(state) == sorted(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    # pSp's Backbone(112, 50, drop_ratio=0.6, mode='ir_se') counts 43,797,696 parameters
    assert sum(p.numel() for p in IRSE50().parameters()) == 43_797_696


def test_saved_weights_load_back_and_the_forward_is_the_published_one(tmp_path):
    state = trained_like_state(3)
    old_style = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # as old PyTorch saved it
    torch.save(old_style, tmp_path / "model_ir_se50.pth")
    net = load_arcface(path=tmp_path / "model_ir_se50.pth")
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    loaded = net.state_dict()
    for key, value in old_style.items():
        assert torch.equal(loaded[key], value), key
    x = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        got, expected = net(x), functional_forward(state, x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_missing_weights_file_is_one_error_naming_it_and_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as err:
        IdentitySimilarity(backbone="arcface_ir_se50", align="fixed_crop")
    message = str(err.value)
    assert str(tmp_path / "checkpoints" / "model_ir_se50.pth") in message
    assert "drive.google.com/file/d/1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn" in message and "arcface_file" in message
    with pytest.raises(WeightsNotFoundError, match="elsewhere.pth"):
        load_arcface(path=tmp_path / "elsewhere.pth")


def test_a_foreign_file_is_one_config_error(tmp_path):
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable PyTorch state dict"):
        load_arcface(path=tmp_path / "text.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="not an IR-SE50 state dict"):
        load_arcface(path=tmp_path / "other.pth")
    state = {k: v for k, v in IRSE50().state_dict().items() if k.startswith("input_layer")}
    state["input_layer.0.weight"] = torch.zeros(64, 3, 5, 5)  # a tensor of another shape
    torch.save(state, tmp_path / "other_stem.pth")
    with pytest.raises(ConfigError, match="does not fit IR-SE50"):
        load_arcface(path=tmp_path / "other_stem.pth")
