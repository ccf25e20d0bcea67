"""stpred-import on real files written by the reference implementations (OpenSTL SimVP, PredFormer, neuraloperator
FNO): the imported checkpoint, rebuilt by ``load_predictor``, must reproduce the reference output ``y`` for ``x``
(both stored beside each file), and a wrong flag is one stderr line, exit code 2 and no file written."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import n_params, run_module

from stpred import load_predictor
from stpred.errors import UserError
from stpred.importers import import_weights, read_reference
from stpred.importers._read import read_metadata_pickle

pytestmark = pytest.mark.usefixtures("one_thread")

MODULE = "stpred.apps.import_weights"
SHAPE = "10,1,64,64"
SIMVP_PARAMS = 249_161  # the reference's count (README of the files)
PREDFORMER_PARAMS = 307_408
# neuraloperator counts its 4 complex [16, 16, 12, 7] spectral weights once (89,809); stpred stores real pairs.
FNO_PARAMS = 89_809 + 4 * 16 * 16 * 12 * 7


@pytest.fixture(scope="module")
def peer(shared_data: Path) -> Path:
    return shared_data / "peer_weights"


def reference_io(peer: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` and ``y`` as ``[B, T, C, H, W]`` (neuralop's ``[B, C, H, W]`` gets a channel axis of 1)."""
    z = np.load(peer / f"{name}_io.npz")
    x, y = torch.from_numpy(z["x"]), torch.from_numpy(z["y"])
    if x.dim() == 4:
        x, y = x[:, :, None], y[:, :, None]
    return x, y


def assert_reproduces(ckpt: Path, peer: Path, io_name: str, params: int) -> None:
    predictor = load_predictor(ckpt)
    assert n_params(predictor.net) == params
    x, y = reference_io(peer, io_name)
    with torch.no_grad():
        out = predictor.net(x)
    assert out.shape == y.shape
    torch.testing.assert_close(out, y, atol=1e-4, rtol=0)
    # mean 0 / std 1 metadata: predict() in data units is the network itself
    torch.testing.assert_close(predictor.predict(x), out, atol=0, rtol=0)


def assert_refused(result, out: Path, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stpred-import: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.stem}.*")), "a temporary file was left behind"


# --- imports that must reproduce the reference output ---


def test_cli_imports_openstl_simvp_model_zoo_pth(peer: Path, tmp_path: Path) -> None:
    out = tmp_path / "simvp.ckpt"
    result = run_module(MODULE, peer / "openstl_simvp_gsta_mmnist_small.pth", "--in-shape", SHAPE, "--out", out,
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "simvpv2" in result.stdout and "249,161" in result.stdout
    assert_reproduces(out, peer, "openstl_simvp_gsta_mmnist_small", SIMVP_PARAMS)
    hp = torch.load(out, weights_only=True)["hyper_parameters"]
    assert hp["model"]["kwargs"] == {"hid_S": 8, "hid_T": 64, "N_S": 2, "N_T": 2, "mlp_ratio": 8.0,
                                     "spatio_kernel_enc": 3, "spatio_kernel_dec": 3}  # fmt: skip
    assert hp["data"]["in_shape"] == [10, 1, 64, 64] and hp["data"]["out_frames"] == 10


def test_openstl_lightning_ckpt_and_trainer_latest_pth(peer: Path, tmp_path: Path) -> None:
    out = tmp_path / "lightning.ckpt"
    report = import_weights(peer / "openstl_simvp_gsta_mmnist_small_lightning.ckpt", out, in_shape=SHAPE)
    assert "model." in report.container
    assert_reproduces(out, peer, "openstl_simvp_gsta_mmnist_small", SIMVP_PARAMS)
    # The pre-Lightning trainer's latest.pth wraps the same weights with its optimiser and scheduler state.
    state = torch.load(peer / "openstl_simvp_gsta_mmnist_small.pth", weights_only=True)
    latest = tmp_path / "latest.pth"
    torch.save({"epoch": 3, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}, "state_dict": state,
                "scheduler": {"last_epoch": 3}}, latest)  # fmt: skip
    out2 = tmp_path / "latest.ckpt"
    import_weights(latest, out2, in_shape=[10, 1, 64, 64])
    assert_reproduces(out2, peer, "openstl_simvp_gsta_mmnist_small", SIMVP_PARAMS)


def test_cli_imports_predformer_tsst_with_arrangement_from_the_keys(peer: Path, tmp_path: Path) -> None:
    out = tmp_path / "predformer.ckpt"
    result = run_module(MODULE, peer / "predformer_tsst_mmnist_small.pth", "--heads", "4", "--in-shape", SHAPE,
                        "--out", out, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_reproduces(out, peer, "predformer_tsst_mmnist_small", PREDFORMER_PARAMS)
    kwargs = torch.load(out, weights_only=True)["hyper_parameters"]["model"]["kwargs"]
    assert kwargs["arrangement"] == ["T", "S", "S", "T"] and kwargs["n_units"] == 2
    assert (kwargs["patch_size"], kwargs["dim"], kwargs["dim_head"], kwargs["mlp_hidden"]) == (8, 48, 12, 192)


def test_predformer_ddp_module_prefix_and_explicit_arrangement(peer: Path, tmp_path: Path) -> None:
    state = torch.load(peer / "predformer_tsst_mmnist_small.pth", weights_only=True)
    ddp = tmp_path / "checkpoint.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, ddp)
    out = tmp_path / "ddp.ckpt"
    report = import_weights(ddp, out, in_shape=SHAPE, heads=4, arrangement="TSST")
    assert "module." in report.container
    assert_reproduces(out, peer, "predformer_tsst_mmnist_small", PREDFORMER_PARAMS)


@pytest.mark.parametrize(
    "name", ["neuralop_fno2d_small.pt", "neuralop_fno2d_small_state_dict.pt", "neuralop_fno2d_small_metadata.pkl"]
)
def test_neuralop_fno_state_dict_and_save_checkpoint_pair(peer: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "fno.ckpt"
    import_weights(peer / name, out, in_shape=SHAPE)
    assert_reproduces(out, peer, "neuralop_fno2d_small", FNO_PARAMS)
    kwargs = torch.load(out, weights_only=True)["hyper_parameters"]["model"]["kwargs"]
    assert kwargs["modes"] == [6, 7] and kwargs["grid"] == "periodic" and kwargs["channel_mlp"] == 0.5
    assert (kwargs["lift_hidden"], kwargs["proj_hidden"], kwargs["width"], kwargs["depth"]) == (32, 32, 16, 4)


def test_cli_neuralop_fno(peer: Path, tmp_path: Path) -> None:
    out = tmp_path / "fno.ckpt"
    result = run_module(MODULE, peer / "neuralop_fno2d_small.pt", "--in-shape", SHAPE, "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "89,809" in result.stdout
    assert_reproduces(out, peer, "neuralop_fno2d_small", FNO_PARAMS)


def test_data_config_gives_metadata_and_the_task_loads_like_stpred_eval(peer: Path, tmp_path: Path) -> None:
    from stpred.tasks import ForecastTask

    out = tmp_path / "mmnist.ckpt"
    result = run_module(MODULE, peer / "openstl_simvp_gsta_mmnist_small.pth", "--data", "mmnist",
                        "--data-option", "val_size=4", "--data-option", "test_size=4", "--data-option", "epoch_size=4",
                        "--out", out, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    ckpt = torch.load(out, weights_only=True)
    hp = dict(ckpt["hyper_parameters"])
    assert hp["data"]["dataset"] == "mmnist" and hp["data"]["data_range"] == 1.0
    assert hp["datamodule"]["_target_"].endswith("MovingMNISTDataModule")
    # what stpred-eval does with a checkpoint
    hp.pop("model_version")
    task = ForecastTask(**hp)
    task.load_state_dict(ckpt["state_dict"])
    x, y = reference_io(peer, "openstl_simvp_gsta_mmnist_small")
    with torch.no_grad():
        torch.testing.assert_close(task.eval()(x), y, atol=1e-4, rtol=0)


# --- refusals: one line, exit code 2, nothing written ---


def test_cli_refuses_a_wrong_in_shape_naming_the_first_tensor(peer: Path, tmp_path: Path) -> None:
    out = tmp_path / "simvp.ckpt"
    result = run_module(MODULE, peer / "openstl_simvp_gsta_mmnist_small.pth", "--in-shape", "12,1,64,64",
                        "--out", out, cwd=tmp_path)  # fmt: skip
    assert_refused(result, out, "tensor hid.enc.0.block.", "expected shape (96,)", "found (80,)")


def test_cli_refuses_another_arrangement(peer: Path, tmp_path: Path) -> None:
    out = tmp_path / "predformer.ckpt"
    result = run_module(MODULE, peer / "predformer_tsst_mmnist_small.pth", "--heads", "4", "--arrangement", "STTS",
                        "--in-shape", SHAPE, "--out", out, cwd=tmp_path)  # fmt: skip
    assert_refused(result, out, "--arrangement STTS", "(TSST)")


def test_cli_refuses_fno_channels_that_do_not_fit(peer: Path, tmp_path: Path) -> None:
    out = tmp_path / "fno.ckpt"
    result = run_module(MODULE, peer / "neuralop_fno2d_small.pt", "--in-shape", "10,2,64,64", "--out", out,
                        cwd=tmp_path)  # fmt: skip
    assert_refused(result, out, "tensor lifting.fcs.0.weight", "expected shape (32, 22, 1)", "found (32, 12, 1)")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"arrangement": "fac_st", "heads": 4}, "fac_st is not imported"),
        ({"arrangement": "TS", "heads": 4}, "--arrangement TS expects"),
        ({}, "pass --heads"),
        ({"heads": 5}, "does not divide"),
        ({"heads": 4, "model": "fno2d"}, "holds predformer weights"),
    ],
)
def test_predformer_refusals(peer: Path, tmp_path: Path, kwargs: dict, fragment: str) -> None:
    out = tmp_path / "p.ckpt"
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace("-", r"\-")):
        import_weights(peer / "predformer_tsst_mmnist_small.pth", out, in_shape=SHAPE, **kwargs)
    assert not out.exists()


def test_an_existing_output_needs_force(peer: Path, tmp_path: Path) -> None:
    out = tmp_path / "fno.ckpt"
    out.write_text("keep me")
    with pytest.raises(UserError, match="--force"):
        import_weights(peer / "neuralop_fno2d_small.pt", out, in_shape=SHAPE)
    assert out.read_text() == "keep me"
    import_weights(peer / "neuralop_fno2d_small.pt", out, in_shape=SHAPE, force=True)
    assert n_params(load_predictor(out).net) == FNO_PARAMS


# --- reading files without running their code ---


class _Exploit:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_metadata_pickle_with_a_foreign_global_is_refused_unexecuted(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    bad = tmp_path / "evil_metadata.pkl"
    bad.write_bytes(pickle.dumps({"n_modes": (4, 4), "x": _Exploit(marker)}))
    with pytest.raises(UserError, match="pickles the global pathlib"):
        read_metadata_pickle(bad)
    assert not marker.exists()


def test_metadata_pickle_reads_neuralop_names_as_inert_values(peer: Path) -> None:
    meta = read_metadata_pickle(peer / "neuralop_fno2d_small_metadata.pkl")
    assert meta["n_modes"] == (12, 12) and meta["hidden_channels"] == 16 and meta["_name"] == "FNO"
    assert meta["non_linearity"].name == "torch._C._nn.gelu"
    with pytest.raises(UserError, match="refused"):
        meta["non_linearity"](torch.zeros(1))
    ref = read_reference(peer / "neuralop_fno2d_small.pt")
    assert ref.meta["conv_module"].name == "neuralop.layers.spectral_convolution.SpectralConv"
    assert "_metadata" not in ref.state and len(ref.state) == 40


def test_weights_with_a_foreign_global_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    bad = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "x": _Exploit(marker)}, bad)
    with pytest.raises(UserError, match="weights_only=True"):
        import_weights(bad, tmp_path / "out.ckpt", in_shape=SHAPE)
    assert not marker.exists() and not (tmp_path / "out.ckpt").exists()


# --- every PredFormer arrangement and a deeper SimVP, through files laid out as the references lay them out ---

#: The reference's transformer names per PredFormerLayer, in the order they are registered (= run), and the stacks
#: of the full / factorised variants (whose files register space before temporal).
PREDFORMER_LAYOUTS = {
    "TSST": ["ts_temporal_transformer", "ts_space_transformer", "st_space_transformer", "st_temporal_transformer"],
    "STTS": ["st_space_transformer", "st_temporal_transformer", "ts_temporal_transformer", "ts_space_transformer"],
    "TS": ["ts_temporal_transformer", "ts_space_transformer"],
    "ST": ["st_space_transformer", "st_temporal_transformer"],
    "TST": ["temporal_transformer_first", "space_transformer", "temporal_transformer_second"],
    "STS": ["space_transformer_first", "temporal_transformer", "space_transformer_second"],
}
PF_SHAPE = (4, 2, 16, 16)  # C = 2: the head's (c p1 p2) row order matters
PF_KW = {"n_units": 2, "patch_size": 4, "dim": 16, "heads": 2, "dim_head": 8, "mlp_hidden": 24}


def _randomise(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _reference_gtb(sd: dict, block: int, ref: dict, prefix: str, k: int, with_norm: bool) -> None:
    b = f"blocks.{block}."
    for src, dst in (("norm1", "0.norm"), ("attn.proj", "0.fn.to_out.0"), ("norm2", "1.norm"),
                     ("mlp.fc_gate", "1.fn.fc1_g"), ("mlp.fc_x", "1.fn.fc1_x"), ("mlp.fc_out", "1.fn.fc2")):
        for n in ("weight", "bias"):
            ref[f"{prefix}layers.{k}.{dst}.{n}"] = sd[f"{b}{src}.{n}"]
        if src == "norm1":
            ref[f"{prefix}layers.{k}.0.fn.to_qkv.weight"] = sd[f"{b}attn.qkv.weight"]
    if with_norm:
        for n in ("weight", "bias"):
            ref[f"{prefix}norm.{n}"] = sd[f"{b}norm3.{n}"]


def predformer_reference_state(model: torch.nn.Module, arrangement: str) -> dict[str, torch.Tensor]:
    """The stpred model's weights under the reference's names; head rows reordered to ``(c p1 p2)`` by index."""
    sd, ref = model.state_dict(), {}
    ref["to_patch_embedding.1.weight"], ref["to_patch_embedding.1.bias"] = sd["embed.weight"], sd["embed.bias"]
    n = PF_KW["n_units"]
    if arrangement in PREDFORMER_LAYOUTS:
        names = PREDFORMER_LAYOUTS[arrangement]
        for i in range(n):
            for j, name in enumerate(names):
                _reference_gtb(sd, i * len(names) + j, ref, f"blocks.{i}.{name}.", 0, True)
    else:
        # full: one stack; fac_ts: temporal stack runs first but the file registers space_transformer first
        stacks = {"full": [("space_temporal_transformer", 0)],
                  "fac_ts": [("space_transformer", n), ("temporal_transformer", 0)]}[arrangement]
        for name, first in stacks:
            for k in range(n):
                _reference_gtb(sd, first + k, ref, f"{name}.", k, k == n - 1)
    c, p = PF_SHAPE[1], PF_KW["patch_size"]
    w, b = sd["head.1.weight"], sd["head.1.bias"]
    w_ref, b_ref = torch.empty_like(w), torch.empty_like(b)
    for ci in range(c):
        for i in range(p):
            for j in range(p):
                w_ref[ci * p * p + i * p + j] = w[(i * p + j) * c + ci]
                b_ref[ci * p * p + i * p + j] = b[(i * p + j) * c + ci]
    ref["mlp_head.0.weight"], ref["mlp_head.0.bias"] = sd["head.0.weight"], sd["head.0.bias"]
    ref["mlp_head.1.weight"], ref["mlp_head.1.bias"] = w_ref, b_ref
    return ref


@pytest.mark.parametrize("arrangement", [*PREDFORMER_LAYOUTS, "full", "fac_ts"])
def test_every_predformer_arrangement_imports_exactly(tmp_path: Path, arrangement: str) -> None:
    from stpred.models.predformer import PredFormer

    stacked = arrangement in ("full", "fac_ts")
    model = PredFormer(in_shape=PF_SHAPE, out_frames=4, legacy_stack_norm=stacked,
                       arrangement=arrangement if stacked else list(arrangement), **PF_KW).eval()  # fmt: skip
    _randomise(model)
    src = tmp_path / "checkpoint.pth"
    torch.save(predformer_reference_state(model, arrangement), src)
    out = tmp_path / "imported.ckpt"
    # the per-layer variants are read from the keys (STTS from their order); fac_ts needs the flag
    import_weights(src, out, in_shape=PF_SHAPE, heads=2, arrangement="fac_ts" if arrangement == "fac_ts" else None)
    net = load_predictor(out).net
    assert n_params(net) == n_params(model)
    x = torch.rand(2, *PF_SHAPE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), atol=1e-6, rtol=0)


OPENSTL_NAMES = (  # stpred -> OpenSTL, for the translator block's parts
    ("layer_scale1", "layer_scale_1"), ("layer_scale2", "layer_scale_2"), ("attn.proj_in.", "attn.proj_1."),
    ("attn.proj_out.", "attn.proj_2."), ("attn.dw_dilated.", "attn.spatial_gating_unit.conv_spatial."),
    ("attn.dw.", "attn.spatial_gating_unit.conv0."), ("attn.gate.", "attn.spatial_gating_unit.conv1."),
    ("mlp.dw.", "mlp.dwconv.dwconv."),
)  # fmt: skip


def test_simvp_with_middle_translator_blocks_and_two_upsamplings(tmp_path: Path) -> None:
    from stpred.models.simvp import SimVPv2

    model = SimVPv2(in_shape=(5, 2, 16, 16), out_frames=5, hid_S=4, hid_T=12, N_S=4, N_T=3, mlp_ratio=2.0).eval()
    _randomise(model)
    ref = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if key.startswith("encoder.layers."):
            name = f"enc.enc.{parts[2]}.conv.{parts[3]}.{parts[4]}"
        elif key.startswith("decoder.layers."):
            upsampling = parts[3] == "conv" and int(parts[2]) % 2 == 0  # decoder strides [2, 1] * (N_S / 2)
            name = f"dec.dec.{parts[2]}.conv.{'conv.0' if upsampling else parts[3]}.{parts[4]}"
        elif key.startswith("decoder.readout."):
            name = f"dec.readout.{parts[2]}"
        elif key.startswith("translator.proj_in."):
            name = f"hid.enc.0.reduction.{parts[2]}"
        elif key.startswith("translator.proj_out."):
            name = f"hid.enc.2.reduction.{parts[2]}"
        else:
            rest = ".".join(parts[3:])
            for new, old in OPENSTL_NAMES:
                rest = rest.replace(new, old) if rest.startswith(new) else rest
            name = f"hid.enc.{parts[2]}.block.{rest}"
        ref[name] = value
    src = tmp_path / "simvp.pth"
    torch.save(ref, src)
    out = tmp_path / "simvp.ckpt"
    import_weights(src, out, in_shape=(5, 2, 16, 16))
    net = load_predictor(out).net
    x = torch.rand(2, 5, 2, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        # OpenSTL's TAU translator has a squeeze-excitation MLP in its attention: not a gSTA block
        (lambda s: {**s, "hid.enc.0.block.attn.spatial_gating_unit.fc.0.weight": torch.zeros(5, 80)}, "gSTA"),
        # SimVP v1 (IncepU) has no hid.enc.{i}.block
        (lambda s: {k: v for k, v in s.items() if not k.startswith("hid.")} | {"hid.enc.0.conv1.weight":
                    torch.zeros(32, 80, 1, 1), "hid.dec.0.conv1.weight": torch.zeros(32, 64, 1, 1)}, "not gSTA"),
        (lambda s: {k: v for k, v in s.items() if k != "dec.readout.bias"}, "tensor decoder.readout.bias"),
        (lambda s: {f"x{k}": v for k, v in s.items()}, "cannot tell which reference"),
    ],
)
def test_openstl_files_stpred_cannot_reproduce_are_refused(peer: Path, tmp_path: Path, edit, fragment: str) -> None:
    state = torch.load(peer / "openstl_simvp_gsta_mmnist_small.pth", weights_only=True)
    src = tmp_path / "other.pth"
    torch.save(edit(dict(state)), src)
    with pytest.raises(UserError, match=fragment):
        import_weights(src, tmp_path / "out.ckpt", in_shape=SHAPE)
    assert not (tmp_path / "out.ckpt").exists()


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("preactivation", True, "preactivation=True"),
        ("norm", "group_norm", "norm='group_norm'"),
        ("n_modes", (12, 12, 12), "3-D"),
        ("channel_mlp_skip", "linear", "channel_mlp_skip='linear'"),
        ("use_channel_mlp", False, "use_channel_mlp=False"),
        ("factorization", "tucker", "factorization='tucker'"),
    ],
)
def test_neuralop_options_stpred_cannot_reproduce_are_refused(
    peer: Path, tmp_path: Path, key: str, value, fragment: str
) -> None:
    meta = dict(read_reference(peer / "neuralop_fno2d_small.pt").meta)
    meta = {k: v for k, v in meta.items() if k not in ("non_linearity", "conv_module")}  # plain values only
    meta_file = tmp_path / "fno_metadata.pkl"
    meta_file.write_bytes(pickle.dumps({**meta, key: value}))
    out = tmp_path / "out.ckpt"
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        import_weights(peer / "neuralop_fno2d_small.pt", out, in_shape=SHAPE, metadata_file=meta_file)
    assert not out.exists()
