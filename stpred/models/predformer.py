"""PredFormer: a pure transformer of Gated Transformer Blocks over patch tokens, in nine space-time arrangements.

Paper: Tang et al., "PredFormer: Transformers Are Effective Spatial-Temporal Predictive Learners",
arXiv:2410.04733. Original repository: https://github.com/yyyujintang/PredFormer (a fork of OpenSTL v0.3,
Apache-2.0). This is an independent reimplementation from the architecture description in ``docs/models.md`` §3.

Layout: ``[B, T, C, H, W]`` in and out. Frames are cut into ``p x p`` patches, ``[B, T, N, p^2 C]`` with
``N = HW / p^2``, embedded by one linear layer to ``D`` channels, and a fixed 1-D sinusoidal code over the flattened
``T * N`` positions is added. Gated Transformer Blocks (GTBs) then mix the tokens through one of three views:

- temporal ``T``: ``(B*N, T, D)``, every patch location attends over time;
- spatial ``S``: ``(B*T, N, D)``, every frame attends over its patches;
- full: ``(B, T*N, D)``, joint space-time attention.

The nine arrangements of the paper are ``arrangement="full"`` (``n_units`` joint GTBs), ``"fac_ts"`` / ``"fac_st"``
(``n_units`` temporal GTBs then ``n_units`` spatial ones, or the reverse) and a repeated unit given as a list of
``T``/``S`` tokens: ``[T, S]`` / ``[S, T]`` (binary), ``[T, S, T]`` / ``[S, T, S]`` (triplet), ``[T, S, S, T]`` /
``[S, T, T, S]`` (quadruplet), each repeated ``n_units`` times. A head LN -> Linear(D -> p^2 C) unpatchifies the
tokens back to frames.

GTB: ``x += DropPath(MHSA(LN x))``; ``x += DropPath(SwiGLU(LN x))``; ``x = LN(x)``. Attention runs through
``F.scaled_dot_product_attention`` (the reference uses a naive einsum); ``attn_dropout`` is the dropout after the
output projection, as in the reference, not a dropout on the attention weights.

Differences from the reference code (docs/models.md §3.6):

- Fac-S-T keeps the token order: the reference reshapes the final ``(b n) t d`` tensor as if it were ``(b t n)``.
- The position code is a non-persistent buffer, rebuilt deterministically; the reference's ``nn.Parameter(...).view``
  drops it from the state_dict.
- The patch vector is ``(p1 p2 c)`` both in the embedding and in the head (the reference reads its head output as
  ``(c p1 p2)``, a fixed permutation of the learned head that changes nothing but checkpoint layout).
- Every GTB ends with its own LN (3 LNs per GTB, docs/models.md §3.5). The reference's full and factorized variants
  build a whole stack of GTBs with one final LN; ``legacy_stack_norm=True`` reproduces that for parameter parity.

Horizon: the position code is sized for ``T_in``, so one pass maps ``T_in`` frames to ``T_in`` frames. With
``T_out < T_in`` the output is truncated; with ``T_out > T_in`` the model is applied to its own output
``T_out // T_in`` times plus a truncated remainder (chunked autoregression, docs/models.md §2.3).

Classification: with ``num_classes`` instead of ``out_frames`` the encoder tokens are averaged and fed to
:class:`stpred.layers.ClassifierHead`, giving logits ``[B, num_classes]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from stpred.errors import check
from stpred.layers.drop import DropPath
from stpred.layers.heads import ClassifierHead
from stpred.models import _validate as V
from stpred.models.base import SpatioTemporalModel
from stpred.registry import register_model

__all__ = [
    "Attention",
    "SwiGLU",
    "GatedTransformerBlock",
    "PredFormer",
    "arrangement_layout",
    "sinusoidal_position_encoding",
]

_NAMED = ("full", "fac_ts", "fac_st")
# Token view per block kind: (to the attention batch, back to [B, T, N, D]).
_VIEWS = {
    "T": ("b t n d -> (b n) t d", "(b n) t d -> b t n d"),
    "S": ("b t n d -> (b t) n d", "(b t) n d -> b t n d"),
    "F": ("b t n d -> b (t n) d", "b (t n) d -> b t n d"),
}


def sinusoidal_position_encoding(
    length: int, dim: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Fixed 1-D sinusoidal code ``[length, dim]`` (Vaswani et al.), computed in float64 then cast.

    Entry ``(p, i)`` is ``sin(p / 10000^(2*(i//2)/dim))`` for even ``i`` and ``cos(...)`` for odd ``i``.

    Args:
        length: number of positions.
        dim: channels.
        device: output device.
        dtype: output dtype (float32 when None).

    Examples:
        >>> sinusoidal_position_encoding(3, 4)[1, :2]
        tensor([0.8415, 0.5403])
    """
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    i = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2.0 * torch.div(i, 2, rounding_mode="floor") / dim)
    code = torch.where(i.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return code.to(device=device, dtype=dtype or torch.float32)


def arrangement_layout(arrangement: str | Sequence[str], n_units: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Block kinds and stack sizes of an arrangement.

    Args:
        arrangement: ``"full"``, ``"fac_ts"``, ``"fac_st"``, or a unit of ``"T"``/``"S"`` tokens (a list, or a
            string such as ``"TSST"``).
        n_units: joint GTBs (full), GTBs per factorized stack (fac), or repeats of the unit.

    Returns:
        ``(kinds, stacks)``: one of ``"T"``, ``"S"``, ``"F"`` per GTB in order, and the sizes of the consecutive
        stacks the reference builds (one stack for full, two for fac, one per GTB for units).
    """
    if isinstance(arrangement, str) and arrangement.lower() in _NAMED:
        name = arrangement.lower()
        if name == "full":
            return ("F",) * n_units, (n_units,)
        first, second = ("T", "S") if name == "fac_ts" else ("S", "T")
        return (first,) * n_units + (second,) * n_units, (n_units, n_units)
    unit = tuple(str(tok).upper() for tok in arrangement)
    kinds = unit * n_units
    return kinds, (1,) * len(kinds)


class Attention(nn.Module):
    """Multi-head self-attention ``[B', L, D] -> [B', L, D]`` through ``F.scaled_dot_product_attention``.

    qkv is one bias-free Linear(D -> 3 * heads * dim_head); the output is Linear(heads * dim_head -> D) + Dropout.

    Args:
        dim: token channels D.
        heads: attention heads.
        dim_head: channels per head.
        dropout: dropout after the output projection (the reference's ``attn_dropout``).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int = 32,
        dropout: float = 0.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False, **fk)
        self.proj = nn.Linear(heads * dim_head, dim, **fk)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(dim_head), no mask, no weight dropout
        return self.drop(self.proj(rearrange(out, "b h l d -> b l (h d)")))


class SwiGLU(nn.Module):
    """Gated MLP ``[..., D] -> [..., D]``: ``Drop(W2(Drop(SiLU(W_g x) * W_x x)))``.

    Args:
        dim: token channels D.
        hidden: hidden channels H.
        dropout: dropout after the gate and after W2.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        dropout: float = 0.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.fc_gate = nn.Linear(dim, hidden, **fk)
        self.fc_x = nn.Linear(dim, hidden, **fk)
        self.fc_out = nn.Linear(hidden, dim, **fk)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(F.silu(self.fc_gate(x)) * self.fc_x(x))
        return self.drop(self.fc_out(h))


class GatedTransformerBlock(nn.Module):
    """Gated Transformer Block ``[B', L, D] -> [B', L, D]`` on whatever token view it is given.

    ``x += DropPath(MHSA(LN x))``; ``x += DropPath(SwiGLU(LN x))``; ``x = LN(x)``. Linear weights are
    trunc_normal(0.02) with zero biases, LayerNorms (1, 0).

    Args:
        dim: token channels D.
        heads: attention heads.
        dim_head: channels per head.
        mlp_hidden: SwiGLU hidden channels H.
        dropout: SwiGLU dropout.
        attn_dropout: dropout after the attention output projection.
        drop_path: stochastic-depth rate of both residual branches.
        post_norm: end with the third LN (False only inside a legacy stack, see :class:`PredFormer`).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 8,
        dim_head: int = 32,
        mlp_hidden: int = 1024,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        post_norm: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(dim, **fk)
        self.attn = Attention(dim, heads, dim_head, attn_dropout, **fk)
        self.norm2 = nn.LayerNorm(dim, **fk)
        self.mlp = SwiGLU(dim, mlp_hidden, dropout, **fk)
        self.drop_path = DropPath(drop_path)
        self.norm3 = nn.LayerNorm(dim, **fk) if post_norm else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return self.norm3(x)


@register_model("predformer")
class PredFormer(SpatioTemporalModel):
    """PredFormer ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]`` (or logits ``[B, num_classes]``).

    The defaults are the published Moving-MNIST model (Quadruplet-TSST, 6 units, patch 8: 25,297,728 parameters).

    Args:
        in_shape: ``(T_in, C, H, W)``; H and W divisible by ``patch_size``.
        out_frames: forecast length T_out (forecasting); give exactly one of ``out_frames`` and ``num_classes``.
        num_classes: number of classes (classification on pooled encoder tokens).
        arrangement: ``"full"``, ``"fac_ts"``, ``"fac_st"``, or a unit of ``"T"``/``"S"`` tokens such as
            ``["T", "S", "S", "T"]`` (or the string ``"TSST"``).
        n_units: repeats of the unit; for ``"full"`` the number of joint GTBs, for ``"fac_*"`` the GTBs per stack.
        patch_size: patch side p.
        dim: token channels D.
        heads: attention heads.
        dim_head: channels per head.
        mlp_hidden: SwiGLU hidden channels H (1024; 512 in the WeatherBench model).
        dropout: SwiGLU dropout.
        attn_dropout: dropout after the attention output projection.
        drop_path: stochastic depth, the same rate in every GTB.
        head_dropout: dropout before the classifier's linear layer (classification only).
        legacy_stack_norm: for ``"full"``/``"fac_*"``, one LN after each stack of GTBs instead of one per GTB, as
            in the reference code (``2 * D * (n_units - 1)`` fewer parameters per stack); no effect on units.
        device: parameter device.
        dtype: parameter dtype.

    Examples:
        >>> model = PredFormer(in_shape=(4, 2, 32, 32), out_frames=4, arrangement=["S", "T", "S"], n_units=1,
        ...                    dim=32, heads=2, dim_head=16, mlp_hidden=64, patch_size=4)
        >>> model(torch.zeros(2, 4, 2, 32, 32)).shape
        torch.Size([2, 4, 2, 32, 32])
    """

    name = "predformer"
    classifies = True
    input_hint = "the position code is sized for T_in * N tokens, so rebuild the model for another shape"

    def __init__(
        self,
        *,
        in_shape: Sequence[int],
        out_frames: int | None = None,
        num_classes: int | None = None,
        arrangement: str | Sequence[str] = ("T", "S", "S", "T"),
        n_units: int = 6,
        patch_size: int = 8,
        dim: int = 256,
        heads: int = 8,
        dim_head: int = 32,
        mlp_hidden: int = 1024,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        head_dropout: float = 0.0,
        legacy_stack_norm: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_shape=in_shape, out_frames=out_frames, num_classes=num_classes)
        _validate(
            self.in_shape, arrangement, n_units, patch_size, dim, heads, dim_head, mlp_hidden,
            dropout, attn_dropout, drop_path, head_dropout, legacy_stack_norm,
        )  # fmt: skip
        t_in, c, h, w = self.in_shape
        fk = {"device": device, "dtype": dtype}
        self.fixed_grid = True
        self.patch_size = int(patch_size)
        self.grid = (h // patch_size, w // patch_size)
        n = self.grid[0] * self.grid[1]
        kinds, stacks = arrangement_layout(arrangement, int(n_units))
        self.kinds = kinds
        ends = set(itertools.accumulate(stacks))

        self.embed = nn.Linear(patch_size * patch_size * c, dim, **fk)
        # Deterministic, so it is rebuilt rather than stored: checkpoints stay free of it (docs/models.md §3.6).
        code = sinusoidal_position_encoding(t_in * n, dim, device=device, dtype=dtype)
        self.register_buffer("pos_embed", rearrange(code, "(t n) d -> t n d", t=t_in), persistent=False)
        self.blocks = nn.ModuleList(
            GatedTransformerBlock(
                dim,
                heads=heads,
                dim_head=dim_head,
                mlp_hidden=mlp_hidden,
                dropout=dropout,
                attn_dropout=attn_dropout,
                drop_path=drop_path,
                post_norm=not legacy_stack_norm or (i + 1) in ends,
                **fk,
            )
            for i in range(len(kinds))
        )
        # Consecutive blocks of one kind share a token view, so each run is rearranged once.
        self._runs = _runs(kinds)
        if self.num_classes is None:
            self.head = nn.Sequential(nn.LayerNorm(dim, **fk), nn.Linear(dim, patch_size * patch_size * c, **fk))
        else:
            self.head = ClassifierHead(dim, self.num_classes, dropout=head_dropout)
            if device is not None or dtype is not None:
                self.head.to(**{k: v for k, v in fk.items() if v is not None})

    def extra_repr(self) -> str:
        target = f"out_frames={self.out_frames}" if self.num_classes is None else f"num_classes={self.num_classes}"
        return f"in_shape={self.in_shape}, {target}, kinds={''.join(self.kinds)}, patch_size={self.patch_size}"

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, H, W] -> [B, T, N, p^2 C]`` with patches in row-major order and vectors ``(p1 p2 c)``."""
        p = self.patch_size
        return rearrange(x, "b t c (h p1) (w p2) -> b t (h w) (p1 p2 c)", p1=p, p2=p)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, T, N, p^2 C] -> [B, T, C, H, W]``, the inverse of :meth:`patchify`."""
        p = self.patch_size
        return rearrange(tokens, "b t (h w) (p1 p2 c) -> b t c (h p1) (w p2)", h=self.grid[0], p1=p, p2=p)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding, position code and every GTB: ``[B, T_in, C, H, W] -> [B, T_in, N, D]``."""
        z = self.embed(self.patchify(x)) + self.pos_embed
        b, t = z.shape[:2]
        for kind, start, stop in self._runs:
            to_view, back = _VIEWS[kind]
            v = rearrange(z, to_view)
            for block in self.blocks[start:stop]:
                v = block(v)
            z = rearrange(v, back, b=b, t=t)
        return z

    def _single_pass(self, x: torch.Tensor) -> torch.Tensor:
        return self.unpatchify(self.head(self.encode(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]``, or classify to logits ``[B, num_classes]``."""
        self.check_input(x)
        if self.num_classes is not None:
            return self.head(self.encode(x).mean(dim=(1, 2)))
        t_in, t_out = self.in_shape[0], self.out_frames
        chunks, done = [], 0
        while done < t_out:
            x = self._single_pass(x)
            chunks.append(x[:, : t_out - done])
            done += t_in
        return torch.cat(chunks, dim=1)


def _runs(kinds: Sequence[str]) -> list[tuple[str, int, int]]:
    runs: list[tuple[str, int, int]] = []
    for i, kind in enumerate(kinds):
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1], i + 1)
        else:
            runs.append((kind, i, i + 1))
    return runs


def _validate(
    in_shape: tuple[int, int, int, int],
    arrangement: str | Sequence[str],
    n_units: int,
    patch_size: int,
    dim: int,
    heads: int,
    dim_head: int,
    mlp_hidden: int,
    dropout: float,
    attn_dropout: float,
    drop_path: float,
    head_dropout: float,
    legacy_stack_norm: bool,
) -> None:
    m = "predformer"
    named = isinstance(arrangement, str) and arrangement.lower() in _NAMED
    if not named:
        tokens = list(arrangement) if isinstance(arrangement, (str, Sequence)) else []
        check(
            len(tokens) > 0 and all(isinstance(tok, str) and tok.upper() in ("T", "S") for tok in tokens),
            f"predformer: arrangement must be one of {'|'.join(_NAMED)} or a unit of T/S tokens such as "
            f"[T, S, S, T], got {arrangement!r}",
        )
    V.integer(m, "n_units", n_units)
    V.integer(m, "patch_size", patch_size)
    _, _, h, w = in_shape
    check(
        h % patch_size == 0 and w % patch_size == 0,
        f"predformer: H and W must be divisible by patch_size={patch_size}, got H={h}, W={w}; "
        "pad or crop the grid, or pick a patch size that divides both",
    )
    for name, v in (("dim", dim), ("heads", heads), ("dim_head", dim_head), ("mlp_hidden", mlp_hidden)):
        V.integer(m, name, v)
    for name, rate in (
        ("dropout", dropout),
        ("attn_dropout", attn_dropout),
        ("drop_path", drop_path),
        ("head_dropout", head_dropout),
    ):
        V.rate(m, name, rate)
    V.flag(m, "legacy_stack_norm", legacy_stack_norm)
