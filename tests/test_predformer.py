"""PredFormer (docs/models.md §3): the nine arrangements, exact parameter counts, SDPA against explicit softmax
attention, token order of the factorized passes, the non-persistent position code, classification, horizons and
errors.

Everything runs at tiny widths on the datamodules' real shapes; full-size models are built on the meta device.
"""

from __future__ import annotations

import inspect
import io
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from _helpers import n_params

from stpred import ConfigError, create_model
from stpred.layers import ClassifierHead
from stpred.models.predformer import (
    Attention,
    DropPath,
    GatedTransformerBlock,
    PredFormer,
    arrangement_layout,
    sinusoidal_position_encoding,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = {"dim": 16, "heads": 2, "dim_head": 8, "mlp_hidden": 32, "patch_size": 4}
SHAPES = {"mmnist": (10, 1, 64, 64), "taxibj": (4, 2, 32, 32), "weatherbench": (12, 1, 32, 64)}
# name: (arrangement, n_units, block kinds in order)
ARRANGEMENTS = {
    "full": ("full", 2, "FF"),
    "fac_ts": ("fac_ts", 2, "TTSS"),
    "fac_st": ("fac_st", 2, "SSTT"),
    "binary_ts": (["T", "S"], 2, "TSTS"),
    "binary_st": (["S", "T"], 1, "ST"),
    "triplet_tst": (["T", "S", "T"], 1, "TST"),
    "triplet_sts": (["S", "T", "S"], 1, "STS"),
    "quadruplet_tsst": (["T", "S", "S", "T"], 1, "TSST"),
    "quadruplet_stts": ("STTS", 1, "STTS"),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(arrangement: str, in_shape=(4, 2, 32, 32), out_frames: int | None = None, **kw) -> PredFormer:
    arr, n_units, _ = ARRANGEMENTS[arrangement]
    target = {} if "num_classes" in kw else {"out_frames": out_frames or in_shape[0]}
    return PredFormer(in_shape=in_shape, **{"arrangement": arr, "n_units": n_units, **TINY, **target, **kw})


# --- the nine arrangements ---


@pytest.mark.parametrize("data", SHAPES)
@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_every_arrangement_forward_backward(arrangement: str, data: str) -> None:
    in_shape = SHAPES[data]
    model = _tiny(arrangement, in_shape).train()
    assert "".join(model.kinds) == ARRANGEMENTS[arrangement][2]
    x = torch.randn(2, *in_shape)
    y = model(x)
    assert y.shape == (2, *in_shape) and torch.isfinite(y).all()
    (y - x).square().mean().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all() or not p.grad.any()]
    assert not bad, f"parameters without a finite non-zero gradient: {bad}"


def test_arrangement_layout_stacks() -> None:
    assert arrangement_layout("full", 3) == (("F",) * 3, (3,))
    assert arrangement_layout("fac_st", 2) == (("S", "S", "T", "T"), (2, 2))
    assert arrangement_layout(["s", "t", "s"], 2) == (("S", "T", "S") * 2, (1,) * 6)
    assert arrangement_layout("TSST", 1) == (("T", "S", "S", "T"), (1, 1, 1, 1))


# --- published parameter counts (docs/models.md §3.5), exact ---


@pytest.mark.parametrize(
    "in_shape, kwargs, expected",
    [
        pytest.param((10, 1, 64, 64), {}, 25_297_728, id="mmnist-TSSTx6"),
        pytest.param((4, 2, 32, 32), {"arrangement": "ST", "n_units": 4, "patch_size": 4}, 8_438_560, id="taxibj-ST"),
        pytest.param((4, 2, 32, 32), {"arrangement": "STS", "n_units": 2, "patch_size": 4}, 6_333_216, id="taxibj-STS"),
        pytest.param(
            (12, 1, 32, 64),
            {"arrangement": "fac_ts", "n_units": 4, "patch_size": 4, "mlp_hidden": 512},
            5_276_432,
            id="wb-FacTS",
        ),
        pytest.param(
            (12, 1, 32, 64),
            {"arrangement": "STS", "n_units": 2, "patch_size": 4, "mlp_hidden": 512},
            3_959_568,
            id="wb-STS",
        ),
        pytest.param((4, 3, 256, 256), {"arrangement": "TSST", "n_units": 3, "patch_size": 8}, 12_731_328, id="h36m"),
    ],
)
def test_published_parameter_counts(in_shape: tuple, kwargs: dict, expected: int) -> None:
    model = PredFormer(in_shape=in_shape, out_frames=in_shape[0], device="meta", **kwargs)
    assert n_params(model) == expected


def test_gtb_parameter_formula() -> None:
    # qkv 3D*256 + out 256D + D + 3 LNs 6D + SwiGLU 2(DH + H) + HD + D (docs/models.md §3.5)
    for hidden, expected in ((1024, 1_052_672), (512, 658_432)):
        assert n_params(GatedTransformerBlock(256, mlp_hidden=hidden, device="meta")) == expected


def test_legacy_stack_norm_drops_all_but_the_last_ln_of_each_stack() -> None:
    kw = {"arrangement": "fac_ts", "n_units": 4, "patch_size": 4, "mlp_hidden": 512, "device": "meta"}
    legacy = PredFormer(in_shape=(12, 1, 32, 64), out_frames=12, legacy_stack_norm=True, **kw)
    assert n_params(legacy) == 5_276_432 - 6 * 2 * 256
    has_ln = [isinstance(b.norm3, torch.nn.LayerNorm) for b in legacy.blocks]
    assert has_ln == [False, False, False, True] * 2
    full = PredFormer(
        in_shape=(4, 2, 32, 32), out_frames=4, arrangement="full", n_units=8, patch_size=4, legacy_stack_norm=True
    )
    assert n_params(full) == 8_438_560 - 7 * 2 * 256
    units = PredFormer(
        in_shape=(4, 2, 32, 32), out_frames=4, arrangement="STS", n_units=2, patch_size=4, legacy_stack_norm=True
    )
    assert n_params(units) == 6_333_216


# --- attention ---


def test_sdpa_matches_explicit_softmax_attention() -> None:
    attn = Attention(48, heads=4, dim_head=12).eval()
    x = torch.randn(3, 11, 48)
    q, k, v = (t.unflatten(-1, (4, 12)).transpose(1, 2) for t in (x @ attn.qkv.weight.T).chunk(3, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(12), dim=-1)
    expected = (weights @ v).transpose(1, 2).flatten(2) @ attn.proj.weight.T + attn.proj.bias
    assert attn.qkv.bias is None
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=0)


def test_attn_dropout_is_the_output_projection_dropout() -> None:
    attn = Attention(16, heads=2, dim_head=8, dropout=0.5).train()
    y = attn(torch.randn(4, 5, 16))
    # Dropout after the projection zeroes whole output entries (about half); weight dropout would zero none.
    assert 0.3 < (y == 0).float().mean() < 0.7


# --- token order of the factorized passes ---


def _loop_encode(model: PredFormer, x: torch.Tensor) -> torch.Tensor:
    """Hand-written reference: explicit loops over frames (spatial) and patch locations (temporal)."""
    p = model.patch_size
    b, t, c, h, w = x.shape
    rows, cols = h // p, w // p
    patches = [
        [
            x[:, ti, :, i * p : (i + 1) * p, j * p : (j + 1) * p].permute(0, 2, 3, 1).reshape(b, -1)
            for i in range(rows)
            for j in range(cols)
        ]
        for ti in range(t)
    ]
    z = torch.stack([torch.stack(frame, dim=1) for frame in patches], dim=1)  # [B, T, N, p^2 C]
    z = model.embed(z)
    n, d = z.shape[2], z.shape[3]
    code = sinusoidal_position_encoding(t * n, d)
    z = z + torch.stack([torch.stack([code[ti * n + ni] for ni in range(n)]) for ti in range(t)])
    for kind, block in zip(model.kinds, model.blocks):
        if kind == "S":
            z = torch.stack([block(z[:, ti]) for ti in range(t)], dim=1)
        elif kind == "T":
            z = torch.stack([block(z[:, :, ni]) for ni in range(n)], dim=2)
        else:
            z = block(z.reshape(b, t * n, d)).reshape(b, t, n, d)
    return z


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_encoder_matches_a_hand_written_loop(arrangement: str) -> None:
    model = _tiny(arrangement, (3, 2, 16, 24)).eval()
    x = torch.randn(2, 3, 2, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x), _loop_encode(model, x), atol=1e-5, rtol=1e-5)


def test_fac_st_output_keeps_token_order() -> None:
    model = _tiny("fac_st", (3, 1, 16, 16)).eval()
    x = torch.randn(2, 3, 1, 16, 16)
    with torch.no_grad():
        z = model.encode(x)
        y = model(x)
        # The head maps token (t, n) to frame t, patch n; the reference's bug read (b n t) as (b t n).
        torch.testing.assert_close(y, model.unpatchify(model.head(_loop_encode(model, x))), atol=1e-5, rtol=1e-5)
        wrong = model.unpatchify(model.head(z.transpose(1, 2).reshape(z.shape)))
    assert not torch.allclose(y, wrong, atol=1e-3)


@pytest.mark.parametrize("kind", ["T", "S"])
def test_single_block_mixes_only_its_own_axis(kind: str) -> None:
    model = PredFormer(in_shape=(5, 1, 16, 16), out_frames=5, arrangement=[kind], n_units=1, **TINY).eval()
    x = torch.randn(1, 5, 1, 16, 16)
    x2 = x.clone()
    x2[0, 2, 0, 4:8, 8:12] += 1.0  # frame 2, patch row 1, column 2: token n = 1 * 4 + 2 = 6
    with torch.no_grad():
        change = model.patchify(model(x2) - model(x)).abs().amax(dim=-1)[0]  # per output token [T, N]
    touched = torch.zeros(5, 16, dtype=torch.bool)
    if kind == "T":
        touched[:, 6] = True  # that patch location, every frame
    else:
        touched[2] = True  # every patch of that frame
    assert torch.all(change[~touched] == 0)
    assert torch.all(change[touched] > 1e-5)


def test_patchify_layout_and_inverse() -> None:
    model = _tiny("binary_st", (2, 3, 8, 12))
    x = torch.randn(2, 2, 3, 8, 12)
    tokens = model.patchify(x)
    assert tokens.shape == (2, 2, 6, 48)
    # token n = row * (W / p) + col; vector (p1 p2 c)
    torch.testing.assert_close(tokens[1, 0, 4], x[1, 0, :, 4:8, 4:8].permute(1, 2, 0).reshape(-1))
    assert torch.equal(model.unpatchify(tokens), x)


# --- position code ---


def test_position_code_values_and_layout() -> None:
    code = sinusoidal_position_encoding(50, 8)
    for p, i in [(0, 0), (0, 1), (1, 0), (1, 1), (7, 2), (7, 3), (49, 6), (49, 7)]:
        angle = p / 10000 ** (2 * (i // 2) / 8)
        assert code[p, i].item() == pytest.approx(math.sin(angle) if i % 2 == 0 else math.cos(angle), abs=1e-6)
    model = _tiny("full", (3, 1, 16, 16))
    assert model.pos_embed.shape == (3, 16, 16) and not model.pos_embed.requires_grad
    # positions are flattened time-major: token (t, n) has position t * N + n
    assert torch.equal(model.pos_embed[2, 5], sinusoidal_position_encoding(48, 16)[2 * 16 + 5])


def test_position_code_is_a_non_persistent_buffer_and_state_dict_round_trips() -> None:
    torch.manual_seed(0)
    model = _tiny("quadruplet_tsst").eval()
    assert "pos_embed" in dict(model.named_buffers())
    state = model.state_dict()
    assert not any("pos_embed" in k for k in state)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    torch.manual_seed(1)
    clone = _tiny("quadruplet_tsst").eval()
    clone.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    x = torch.randn(2, 4, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))


# --- horizons ---


def test_truncation_and_chunked_rollout_reuse_the_single_pass() -> None:
    torch.manual_seed(0)
    base = _tiny("triplet_sts").eval()
    short, long = _tiny("triplet_sts", out_frames=3).eval(), _tiny("triplet_sts", out_frames=10).eval()
    short.load_state_dict(base.state_dict())
    long.load_state_dict(base.state_dict())
    x = torch.randn(2, 4, 2, 32, 32)
    with torch.no_grad():
        y4, y3, y10 = base(x), short(x), long(x)
        y8 = base(y4)
        y12 = base(y8)
    assert y3.shape == (2, 3, 2, 32, 32) and torch.equal(y3, y4[:, :3])
    assert y10.shape == (2, 10, 2, 32, 32)
    torch.testing.assert_close(y10, torch.cat([y4, y8, y12[:, :2]], dim=1))


def test_wrong_input_shape_fails_clearly() -> None:
    model = _tiny("binary_ts")
    with pytest.raises(ValueError, match="T_in"):
        model(torch.randn(2, 5, 2, 32, 32))
    with pytest.raises(ValueError, match="in_shape"):
        model(torch.randn(2, 4, 2, 32, 16))


# --- classification ---


def test_classification_logits_and_gradients() -> None:
    model = create_model("predformer", in_shape=(8, 3, 32, 32), num_classes=7, arrangement="TSST", n_units=1, **TINY)
    assert isinstance(model.head, ClassifierHead) and model.out_frames is None
    x = torch.randn(3, 8, 3, 32, 32)
    logits = model.train()(x)
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 3, 6])).backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not bad, f"parameters without a gradient: {bad}"
    model.eval()
    with torch.no_grad():
        z = model.encode(x).mean(dim=(1, 2))
        torch.testing.assert_close(model(x), model.head.fc(z))


# --- blocks ---


def test_gtb_structure_and_initialisation() -> None:
    torch.manual_seed(0)
    block = GatedTransformerBlock(256, mlp_hidden=1024, drop_path=0.2)
    norms = [m for m in block.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 3
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 5 and all(m.bias is None or torch.all(m.bias == 0) for m in linears)
    assert block.mlp.fc_gate.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert block.mlp.fc_gate.weight.abs().max().item() < 0.2
    assert block.attn.qkv.out_features == 3 * 256 and block.attn.proj.in_features == 256


def test_drop_path_is_uniform_and_per_sample() -> None:
    model = _tiny("quadruplet_tsst", drop_path=0.3, n_units=3)
    assert [b.drop_path.p for b in model.blocks] == [0.3] * 12
    torch.manual_seed(0)
    y = DropPath(0.5).train()(torch.ones(4000, 3, 2))
    per_sample = y.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 2).all(1))
    assert 0.45 < (per_sample[:, 0] == 0).float().mean() < 0.55
    assert torch.equal(DropPath(0.5).eval()(torch.ones(3, 2)), torch.ones(3, 2))


# --- errors ---


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"in_shape": (10, 1, 64, 60)}, ["H and W", "patch_size=8", "W=60"]),
        ({"in_shape": (10, 1, 64)}, ["in_shape"]),
        ({"arrangement": ["T", "X"]}, ["arrangement", "T/S"]),
        ({"arrangement": "fac_xy"}, ["arrangement", "full|fac_ts|fac_st"]),
        ({"arrangement": []}, ["arrangement"]),
        ({"arrangement": 3}, ["arrangement"]),
        ({"n_units": 0}, ["n_units"]),
        ({"patch_size": 0}, ["patch_size"]),
        ({"dim": 0}, ["dim"]),
        ({"heads": -1}, ["heads"]),
        ({"dim_head": 2.5}, ["dim_head"]),
        ({"mlp_hidden": None}, ["mlp_hidden"]),
        ({"dropout": 1.0}, ["dropout"]),
        ({"attn_dropout": -0.1}, ["attn_dropout"]),
        ({"drop_path": 1.5}, ["drop_path"]),
        ({"out_frames": 0}, ["out_frames"]),
        ({"num_classes": 10}, ["exactly one", "out_frames", "num_classes"]),
        ({"out_frames": None}, ["exactly one"]),
        ({"out_frames": None, "num_classes": 1}, ["num_classes", ">= 2"]),
        ({"legacy_stack_norm": "yes"}, ["legacy_stack_norm"]),
    ],
)
def test_config_errors(kwargs: dict, words: list[str]) -> None:
    args = {"in_shape": (10, 1, 64, 64), "out_frames": 10, **kwargs}
    with pytest.raises(ConfigError) as excinfo:
        PredFormer(in_shape=args.pop("in_shape"), out_frames=args.pop("out_frames"), device="meta", **args)
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.startswith("predformer:")
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"


# --- configs ---


def test_model_config_equals_constructor_defaults() -> None:
    cfg = yaml.safe_load((CONFIGS / "model" / "predformer.yaml").read_text())
    assert cfg["name"] == "predformer"
    sig = inspect.signature(PredFormer.__init__).parameters
    defaults = {k: p.default for k, p in sig.items() if p.default is not inspect.Parameter.empty}
    defaults = {k: v for k, v in defaults.items() if k not in ("device", "dtype", "out_frames", "num_classes")}
    defaults["arrangement"] = list(defaults["arrangement"])
    assert cfg["kwargs"] == defaults


RECIPES = {
    "mmnist_predformer": ("mmnist", 25_297_728, {"optimizer": "adamw", "lr": 1e-3, "scheduler": "onecycle"}, 2000),
    "taxibj_predformer": ("taxibj", 6_333_216, {"optimizer": "adamw", "lr": 1e-3, "scheduler": "onecycle"}, 200),
    "weatherbench_t2m_predformer": (
        "weatherbench",
        5_276_432,
        {"optimizer": "adamw", "lr": 5e-4, "scheduler": "cosine", "warmup_epochs": 0},
        50,
    ),
}


@pytest.mark.parametrize("experiment", RECIPES)
def test_experiment_is_the_published_recipe(experiment: str) -> None:
    data, params, optim, epochs = RECIPES[experiment]
    cfg = yaml.safe_load((CONFIGS / "experiment" / f"{experiment}.yaml").read_text())
    assert cfg["task_name"] == experiment
    assert {"override /data": data} in cfg["defaults"] and {"override /model": "predformer"} in cfg["defaults"]
    model = create_model(
        "predformer", in_shape=SHAPES[data], out_frames=SHAPES[data][0], device="meta", **cfg["model"]["kwargs"]
    )
    assert n_params(model) == params
    assert {k: cfg["optim"][k] for k in optim} == optim and cfg["optim"]["weight_decay"] == 1e-2
    assert cfg["data"]["batch_size"] == 16 and cfg["trainer"]["max_epochs"] == epochs


@pytest.mark.parametrize("experiment", RECIPES)
def test_experiment_composes(experiment: str, tmp_path: Path) -> None:
    data = RECIPES[experiment][0]
    from _hydra import compose_config

    cfg = compose_config("train", [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.model.name == "predformer" and cfg.data.batch_size == 16
    assert {k: cfg.optim[k] for k in RECIPES[experiment][2]} == RECIPES[experiment][2]
    in_shape = SHAPES[data]
    model = create_model("predformer", in_shape=in_shape, out_frames=in_shape[0], device="meta", **cfg.model.kwargs)
    assert n_params(model) == RECIPES[experiment][1]
