"""``stpred-import`` of SqueezeTime's mmaction2 recognizers (``backbone.net.*``, ``cls_head.fc_cls.*``).

No checkpoint written by the reference code is stored, so the file's layout is written here from the reference's
module structure (``mmaction/models/backbones/SqueezeTime.py``: ``ResNet`` of ``Bottleneck`` blocks whose ``conv2``
is the CTL ``Conv2d`` with ``param_conv`` / ``temporal_conv`` / ``spatial_conv``, inside ``SqueezeTime.net``; the
``I2DHead``'s ``fc_cls``): :func:`reference_shapes` lists every key and shape the reference's ``state_dict`` holds,
and :func:`to_reference` renames stpred's keys into it. The importer's own table is a third, separate mapping.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from _helpers import run_module

import stpred
from stpred.checkpoint import load_predictor
from stpred.errors import UserError
from stpred.importers import import_weights

pytestmark = pytest.mark.usefixtures("one_thread")

T, C, H, W = 4, 3, 48, 64
DEPTHS, WIDTHS, STRIDES = [2, 1, 2, 1], [8, 8, 16, 16], [1, 2, 2, 2]
POS = [8, 4, 2, 1]  # the reference's pos_dim per stage (square); the feature maps are 12x16, 6x8, 3x4, 1x2
GATE, CLASSES = 16, 5
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _bn(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (n,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()
    }


def reference_shapes(t_c: int = T * C, classes: int = CLASSES) -> dict[str, tuple[int, ...]]:
    """Every key of ``Recognizer3D(backbone=SqueezeTime(...), cls_head=I2DHead(...)).state_dict()`` and its shape,
    for the Bottleneck ResNet with this module's depths, widths, strides and pos_dim."""
    net = "backbone.net."
    out = {f"{net}conv1.weight": (WIDTHS[0], t_c, 5, 5), **_bn(f"{net}bn1", WIDTHS[0])}
    d_in = WIDTHS[0]
    for i, (depth, p, stride, pos) in enumerate(zip(DEPTHS, WIDTHS, STRIDES, POS), 1):
        for j in range(depth):
            b = f"{net}layer{i}.{j}."
            out[f"{b}conv1.weight"] = (p, d_in, 1, 1)
            out |= _bn(f"{b}bn1", p)
            ctl = f"{b}conv2."
            out[f"{ctl}param_conv.1.weight"] = (p, p, 1, 1)
            out |= _bn(f"{ctl}param_conv.2", p)
            out[f"{ctl}param_conv.4.weight"] = (p, p, 1, 1)
            out[f"{ctl}temporal_conv.weight"] = (p, p, 1, 1)  # kernel_size=1, bias=False
            s = f"{ctl}spatial_conv."
            out[f"{s}pos_embed"] = (1, GATE, pos, pos)
            out |= {f"{s}short_conv.weight": (p, p, 3, 3), f"{s}short_conv.bias": (p,)}
            out |= {f"{s}glo_conv.0.weight": (GATE, p, 3, 3), f"{s}glo_conv.0.bias": (GATE,)}
            out |= _bn(f"{s}glo_conv.1", GATE)
            out |= {f"{s}glo_conv.3.weight": (GATE, GATE, 7, 7), f"{s}glo_conv.3.bias": (GATE,)}
            out |= _bn(f"{s}glo_conv.4", GATE)
            out |= {f"{s}glo_conv.6.weight": (p, GATE, 3, 3), f"{s}glo_conv.6.bias": (p,)}
            out |= _bn(f"{b}bn2", p)
            out[f"{b}conv3.weight"] = (4 * p, p, 1, 1)
            out |= _bn(f"{b}bn3", 4 * p)
            if j == 0 and d_in != 4 * p:
                out[f"{b}shortcut_conv.0.weight"] = (4 * p, d_in, 1, 1)
                out |= _bn(f"{b}shortcut_conv.1", 4 * p)
            if j == 0 and stride != 1:  # depth-wise 2x2/2 conv (with bias) + BN on the block's input
                out |= {f"{b}downsample.0.weight": (d_in, 1, 2, 2), f"{b}downsample.0.bias": (d_in,)}
                out |= _bn(f"{b}downsample.1", d_in)
            d_in = 4 * p
    out |= {"cls_head.fc_cls.weight": (classes, d_in), "cls_head.fc_cls.bias": (classes,)}
    return out


_CTL_NAMES = {
    "importance.fc1": "param_conv.1", "importance.bn": "param_conv.2", "importance.fc2": "param_conv.4",
    "temporal": "temporal_conv", "interaction.short": "spatial_conv.short_conv",
    "interaction.gate_in": "spatial_conv.glo_conv.0", "interaction.gate_bn1": "spatial_conv.glo_conv.1",
    "interaction.gate_mid": "spatial_conv.glo_conv.3", "interaction.gate_bn2": "spatial_conv.glo_conv.4",
    "interaction.gate_out": "spatial_conv.glo_conv.6", "interaction.pos_embed": "spatial_conv.pos_embed",
}  # fmt: skip


def to_reference(key: str) -> str:
    """stpred's name -> the reference recognizer's."""
    if key.startswith("head.fc."):
        return "cls_head.fc_cls." + key[len("head.fc.") :]
    if m := re.fullmatch(r"stem\.([01])\.(.+)", key):
        return f"backbone.net.{'conv1' if m.group(1) == '0' else 'bn1'}.{m.group(2)}"
    m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.(.+)", key)
    block, rest = f"backbone.net.layer{int(m.group(1)) + 1}.{m.group(2)}.", m.group(3)
    if rest.startswith("ctl."):
        for ours, theirs in _CTL_NAMES.items():
            if rest[4:] == ours or rest[4:].startswith(ours + "."):
                return block + "conv2." + theirs + rest[4 + len(ours) :]
    return block + rest.replace("shortcut.", "shortcut_conv.")


def _stpred_classifier(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = stpred.create_model(
        "squeezetime", in_shape=(T, C, H, W), num_classes=CLASSES, depths=DEPTHS, widths=WIDTHS, strides=STRIDES,
        pos_dim=POS,
    )  # fmt: skip
    for m in net.modules():  # statistics and affine terms away from their defaults, so a swapped tensor shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.num_batches_tracked.fill_(7)
    return net.eval()


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """An mmengine-style checkpoint (``meta`` + ``state_dict``) holding an stpred classifier's weights."""
    net = _stpred_classifier()
    state = {to_reference(k): v.clone() for k, v in net.state_dict().items()}
    path = tmp_path_factory.mktemp("ref") / "SqueezeTime_tiny.pth"
    torch.save({"meta": {"epoch": 12, "mmengine_version": "0.10.4", "dataset_meta": None}, "state_dict": state}, path)
    return path, net


def test_the_reference_layout_maps_one_to_one_onto_stpred():
    ours = {k: tuple(v.shape) for k, v in _stpred_classifier().state_dict().items()}
    theirs = reference_shapes()
    renamed = {to_reference(k): shape for k, shape in ours.items()}
    assert len(renamed) == len(ours) == len(theirs)
    assert renamed == theirs  # every key and every shape
    assert sum(1 for k in theirs if "pos_embed" in k) == sum(DEPTHS)


def test_every_reference_tensor_lands_on_its_stpred_tensor(tmp_path):
    """A file with random values in the reference's layout: each value arrives where stpred's names say."""
    torch.manual_seed(1)
    shapes = reference_shapes()
    state = {k: torch.randn(s) if s else torch.tensor(3) for k, s in shapes.items()}
    torch.save({"state_dict": state}, tmp_path / "ref.pth")
    report = import_weights(tmp_path / "ref.pth", tmp_path / "st.ckpt", in_shape=f"{T},{C},{H},{W}")
    assert report.model == "squeezetime" and report.num_classes == CLASSES
    assert report.kwargs == {
        "depths": DEPTHS, "widths": WIDTHS, "strides": STRIDES, "pos_dim": [[p, p] for p in POS], "gate_channels": GATE,
    }  # fmt: skip
    loaded = load_predictor(tmp_path / "st.ckpt").net.state_dict()
    assert len(loaded) == len(state)
    for key, value in loaded.items():
        assert torch.equal(value, state[to_reference(key)]), key
    params = sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "tracked")))
    assert report.params == report.reference_params == params


def test_imported_predictor_equals_the_model_with_those_weights(reference_file, tmp_path):
    path, net = reference_file
    report = import_weights(path, tmp_path / "st.ckpt", in_shape=(T, C, H, W))
    predictor = load_predictor(tmp_path / "st.ckpt")
    assert predictor.task == "classify" and predictor.in_shape == (T, C, H, W)
    assert predictor.metadata["mean"] == list(IMAGENET_MEAN) and predictor.metadata["std"] == list(IMAGENET_STD)
    torch.manual_seed(2)
    x = torch.rand(3, T, C, H, W)  # pixels in [0, 1]
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(net((x - mean) / std), dim=-1)
    got = predictor.predict(x)
    assert got.shape == (3, CLASSES)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert "state_dict wrapper" in report.container
    assert any("num_classes=5" in line for line in report.lines())


def test_a_data_config_gives_class_names_and_must_agree(reference_file, tmp_path):
    path, _ = reference_file
    data = {
        "dataset": "tiny", "task": "classify", "in_shape": [T, C, H, W], "out_frames": None, "num_classes": CLASSES,
        "class_names": list("abcde"), "channels": ["red", "green", "blue"], "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD), "data_range": 1.0, "pde": False, "frame_stride": 4,
    }  # fmt: skip
    import_weights(path, tmp_path / "a.ckpt", data=data)
    predictor = load_predictor(tmp_path / "a.ckpt")
    assert predictor.class_names == list("abcde") and predictor.metadata["frame_stride"] == 4
    with pytest.raises(UserError, match="the file classifies 5 classes; the data config has 400"):
        import_weights(path, tmp_path / "b.ckpt", data={**data, "num_classes": 400})
    with pytest.raises(UserError, match="the data config is a forecast task; .* holds weights that classify"):
        import_weights(path, tmp_path / "c.ckpt", data={**data, "task": "forecast", "out_frames": 4})
    assert not (tmp_path / "b.ckpt").exists() and not (tmp_path / "c.ckpt").exists()


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--in-shape", "8,3,48,64"], "tensor backbone.net.conv1.weight (8, 12, 5, 5) squeezes 12 channels = T * C"),
        (["--in-shape", f"{T},{C},{H},{W}", "--out-frames", "4"], "--out-frames 4: SqueezeTime"),
        (["--in-shape", f"{T},{C},{H},{W}", "--model", "simvpv2"], "holds squeezetime weights"),
    ],
)
def test_wrong_flags_are_one_line(reference_file, tmp_path, flags, expected):
    path, _ = reference_file
    proc = run_module("stpred.apps.import_weights", path, "--out", tmp_path / "x.ckpt", *flags, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("stpred-import: error: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "x.ckpt").exists()


def _basic_block_file(path: Path) -> Path:
    """depth 10/18/34: BasicBlock, whose conv1 is itself a CTL."""
    state = {k: torch.zeros(s) for k, s in reference_shapes().items()}
    state["backbone.net.layer1.0.conv1.param_conv.1.weight"] = torch.zeros(8, 8, 1, 1)
    torch.save({"state_dict": state}, path)
    return path


@pytest.mark.parametrize("kind", ["basic block", "no head", "not a torch file", "wrong pos_embed"])
def test_a_wrong_file_is_one_line(kind, tmp_path):
    path = tmp_path / "bad.pth"
    state = {k: torch.zeros(s) for k, s in reference_shapes().items()}
    if kind == "basic block":
        _basic_block_file(path)
        expected = "BasicBlock SqueezeTime (depth 10, 18 or 34"
    elif kind == "no head":
        torch.save({k: v for k, v in state.items() if not k.startswith("cls_head.")}, path)
        expected = "has no cls_head.fc_cls"
    elif kind == "not a torch file":
        path.write_bytes(b"PK\x03\x04 not really a zip" * 10)
        expected = f"cannot read {path} with weights_only=True"
    else:
        state["backbone.net.layer3.1.conv2.spatial_conv.pos_embed"] = torch.zeros(1, GATE, 3, 3)
        torch.save({"state_dict": state}, path)
        expected = "layer3's blocks have pos_embed sizes [(2, 2), (3, 3)]"
    proc = run_module("stpred.apps.import_weights", path, "--out", tmp_path / "x.ckpt", "--in-shape",
                      f"{T},{C},{H},{W}", cwd=tmp_path)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "x.ckpt").exists()
