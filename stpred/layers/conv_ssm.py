"""ConvS5's ConvSSM block (Smith et al., NeurIPS 2023; docs/models.md §1.2-1.3), reimplemented from the equations.

State ``x_k = Λ̄ ⊙ x_{k-1} + conv_{k_B}(u_k; B̄)`` with one complex Λ̄_p per state channel, output
``y_k = 2·Re(conv_{k_C}(x_k; C̃))`` plus a feed-through. Both complex convs are real convs over the B·L frames on
the planar layout ``[Re; Im]``; only the recurrence runs in :mod:`stpred.kernels.conv_ssm_scan`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stpred.errors import check
from stpred.kernels.conv_ssm_scan import IMPLS, conv_ssm_scan_planar, conv_ssm_step_planar

__all__ = ["ConvSSM", "hippo_legs_blocks"]

_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
    "elu": lambda: nn.ELU(),
    "tanh": lambda: nn.Tanh(),
}
_C_D_CONFIGS = ("resnet", "standard")
_RE_LAMBDA_MAX = -1e-4
# JAX's he_normal draws from a normal truncated at ±2σ; dividing σ by this factor restores the variance 2/fan_in.
_TRUNC_STD_CORRECTION = 0.87962566103423978


def hippo_legs_blocks(ssm_size: int, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S5's block-diagonal HiPPO-LegS eigendecomposition, keeping one eigenvalue of each conjugate pair.

    Each block of size ``n = ssm_size / blocks`` uses the normal part ``S = A + p·pᵀ`` of HiPPO-LegS, whose diagonal
    is ``-1/2``; ``eigh(-i·(S + I/2))`` gives the imaginary parts in ascending order and the first ``n/2`` are kept.

    Args:
        ssm_size: total state size (even multiple of ``blocks``).
        blocks: number of diagonal blocks.

    Returns:
        ``(lambda_im [P], v [ssm_size, P])`` in float64/complex128, ``P = ssm_size / 2``; ``v`` is block diagonal
        with orthonormal columns, so ``V⁻¹ = Vᴴ`` on the kept subspace.
    """
    n = ssm_size // blocks
    idx = torch.arange(n, dtype=torch.float64)
    root = torch.sqrt(2 * idx + 1)
    a = torch.tril(-root[:, None] * root[None, :], diagonal=-1) - torch.diag(idx + 1)
    p = torch.sqrt(idx + 0.5)
    normal = a + p[:, None] * p[None, :]
    skew = normal - torch.diag(torch.diagonal(normal))
    w, vecs = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    half = n // 2
    lambda_im = w[:half].repeat(blocks)
    v = torch.zeros(ssm_size, ssm_size // 2, dtype=torch.complex128)
    for k in range(blocks):
        v[k * n : (k + 1) * n, k * half : (k + 1) * half] = vecs[:, :half]
    return lambda_im, v


def _he_normal(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
    std = math.sqrt(2.0 / fan_in) / _TRUNC_STD_CORRECTION
    return nn.init.trunc_normal_(torch.empty(shape, dtype=torch.float64), std=std, a=-2 * std, b=2 * std)


class ConvSSM(nn.Module):
    """One ConvS5 ConvSSM layer: ``[B, L, U, H, W] -> [B, L, U, H, W]`` with a carried complex state.

    Parameters (the "SSM core", :meth:`ssm_core_num_params`): ``lambda_re``, ``lambda_im``, ``log_step`` ``[P]``,
    ``b_tilde [P, k_B·k_B·U, 2]`` (columns ordered (kh, kw, u); trailing (re, im)) and
    ``c_tilde [k_C, k_C, P, U, 2]``; plus the feed-through convs and norms. ``P = ssm_size // 2``: one of each
    conjugate eigenvalue pair is kept and ``2·Re`` accounts for the other.

    Args:
        d_model: channels U of the input and output.
        ssm_size: S5 state size; must be even. P = ssm_size // 2 complex state channels.
        blocks: HiPPO blocks (``ssm_size / blocks`` must be even).
        kernel_b: odd size of the B conv. kernel_c: odd size of the C conv. kernel_d: odd size of the D conv
            (``"standard"`` only).
        c_d_config: ``"resnet"`` (y → GN → act → conv3×3 → GN → act → conv3×3 → + y → act; no D·u term) or
            ``"standard"`` (y + conv_{k_D}(u) → GN → act).
        dt_min: smallest initial step Δ. dt_max: largest initial step Δ.
        clip_eigs: clip Re Λ at -1e-4 so that ``|Λ̄| < 1``.
        activation: ``"gelu" | "gelu_tanh" | "relu" | "silu" | "elu" | "tanh"``.
        norm_groups: GroupNorm groups; must divide d_model.
        impl: scan implementation, one of :data:`stpred.kernels.conv_ssm_scan.IMPLS`.
        device: parameter device. dtype: parameter dtype (real floating).

    Examples:
        >>> layer = ConvSSM(8, 4, norm_groups=4, impl="torch")
        >>> y, x_last = layer(torch.randn(2, 5, 8, 6, 6))
        >>> tuple(y.shape), tuple(x_last.shape)
        ((2, 5, 8, 6, 6), (2, 2, 2, 6, 6))
        >>> y1, x1 = layer.step(torch.randn(2, 8, 6, 6), x_last)
        >>> tuple(y1.shape)
        (2, 8, 6, 6)
    """

    def __init__(
        self,
        d_model: int,
        ssm_size: int,
        *,
        blocks: int = 1,
        kernel_b: int = 3,
        kernel_c: int = 3,
        kernel_d: int = 3,
        c_d_config: str = "resnet",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        clip_eigs: bool = True,
        activation: str = "gelu",
        norm_groups: int = 32,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _validate(d_model, ssm_size, blocks, (kernel_b, kernel_c, kernel_d), c_d_config, dt_min, dt_max, activation)
        check(
            isinstance(norm_groups, int) and norm_groups >= 1 and d_model % norm_groups == 0,
            f"ConvSSM: norm_groups={norm_groups} must be a positive divisor of d_model={d_model}",
        )
        check(impl in IMPLS, f"ConvSSM: impl must be one of {'|'.join(IMPLS)}, got {impl!r}")
        check(
            dtype is None or (dtype.is_floating_point and not dtype.is_complex),
            f"ConvSSM: dtype must be a real floating dtype, got {dtype}",
        )
        self.d_model, self.ssm_size, self.state_size = d_model, ssm_size, ssm_size // 2
        self.blocks, self.kernel_b, self.kernel_c, self.kernel_d = blocks, kernel_b, kernel_c, kernel_d
        self.c_d_config, self.clip_eigs, self.impl = c_d_config, clip_eigs, impl
        factory = {"device": device, "dtype": dtype}
        p, u = self.state_size, d_model

        self.lambda_re = nn.Parameter(torch.empty(p, **factory))
        self.lambda_im = nn.Parameter(torch.empty(p, **factory))
        self.log_step = nn.Parameter(torch.empty(p, **factory))
        self.b_tilde = nn.Parameter(torch.empty(p, kernel_b * kernel_b * u, 2, **factory))
        self.c_tilde = nn.Parameter(torch.empty(kernel_c, kernel_c, p, u, 2, **factory))
        self._dt_range = (dt_min, dt_max)

        if c_d_config == "resnet":
            self.norm1 = nn.GroupNorm(norm_groups, u, **factory)
            self.conv1 = nn.Conv2d(u, u, 3, padding=1, **factory)
            self.norm2 = nn.GroupNorm(norm_groups, u, **factory)
            self.conv2 = nn.Conv2d(u, u, 3, padding=1, **factory)
        else:
            self.d_conv = nn.Conv2d(u, u, kernel_d, padding=kernel_d // 2, bias=False, **factory)
            self.norm = nn.GroupNorm(norm_groups, u, **factory)
        self.act = _ACTIVATIONS[activation]()
        self._cache: tuple[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self.reset_ssm_parameters()

    def reset_ssm_parameters(self) -> None:
        """S5/HiPPO initialisation of Λ, B̃, C̃ and log Δ (docs/models.md §1.3), drawn from torch's global RNG."""
        p, u, kb, kc = self.state_size, self.d_model, self.kernel_b, self.kernel_c
        lambda_im, v = hippo_legs_blocks(self.ssm_size, self.blocks)
        b = _he_normal((self.ssm_size, u * kb * kb), fan_in=u * kb * kb)
        c = _he_normal((kc, kc, u, self.ssm_size), fan_in=self.ssm_size * kc * kc)
        b_tilde = v.conj().t() @ b.to(torch.complex128)  # V⁻¹B: [P, U·k_B²]
        c_tilde = (c.to(torch.complex128) @ v).transpose(-1, -2)  # CV: [k_C, k_C, P, U]
        log_lo, log_hi = math.log(self._dt_range[0]), math.log(self._dt_range[1])
        with torch.no_grad():
            self.lambda_re.fill_(-0.5)
            self.lambda_im.copy_(lambda_im)
            self.log_step.copy_(torch.rand(p, dtype=torch.float64) * (log_hi - log_lo) + log_lo)
            self.b_tilde.copy_(torch.view_as_real(b_tilde))
            self.c_tilde.copy_(torch.view_as_real(c_tilde.contiguous()))
        self._cache = None

    def ssm_core_num_params(self) -> int:
        """Parameters of the SSM core: Λ (re, im), log Δ, B̃ and C̃ (1,180,032 for P=128, U=256, k=3)."""
        core = (self.lambda_re, self.lambda_im, self.log_step, self.b_tilde, self.c_tilde)
        return sum(t.numel() for t in core)

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ZOH discretisation, as real tensors ready for the kernels.

        Returns:
            ``lam_bar [P, 2]`` (Re, Im of Λ̄ = exp(ΛΔ)); ``w_b [2P, U, k_B, k_B]``, the B conv weight
            ``[Re B̄; Im B̄]`` with ``B̄ = ((Λ̄ - 1)/Λ)·B̃``; ``w_c [U, 2P, k_C, k_C]``, the C conv weight
            ``[2 Re C̃; -2 Im C̃]`` so that ``conv([x_re; x_im]; w_c) = 2·Re(conv(x; C̃))``.
        """
        p, u, kb = self.state_size, self.d_model, self.kernel_b
        lam_re = self.lambda_re.clamp(max=_RE_LAMBDA_MAX) if self.clip_eigs else self.lambda_re
        lam = torch.complex(lam_re, self.lambda_im)
        lam_bar = torch.exp(lam * torch.exp(self.log_step))
        b_bar = ((lam_bar - 1) / lam)[:, None] * torch.view_as_complex(self.b_tilde)
        b_bar = b_bar.view(p, kb, kb, u).permute(0, 3, 1, 2)
        w_b = torch.cat([b_bar.real, b_bar.imag], dim=0)
        c_tilde = torch.view_as_complex(self.c_tilde)
        w_c = torch.cat([2 * c_tilde.real, -2 * c_tilde.imag], dim=2).permute(3, 2, 0, 1)
        return torch.view_as_real(lam_bar), w_b.contiguous(), w_c.contiguous()

    def _discretized(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Λ̄, B̄ and C weights; cached for generation, recomputed whenever autograd needs them or a parameter
        changed (keyed on each core parameter's version counter and storage). Never cached under ``torch.compile``:
        the key reads data pointers, which Dynamo cannot trace, and the compiled graph recomputes them cheaply."""
        core = (self.lambda_re, self.lambda_im, self.log_step, self.b_tilde, self.c_tilde)
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(t.requires_grad for t in core)):
            return self.discretize()
        key = (self.clip_eigs,) + tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in core)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.discretize())
        return self._cache[1]

    def clear_cache(self) -> None:
        """Drop the cached discretisation (needed only after editing parameters through ``.data``)."""
        self._cache = None

    def _feedthrough(self, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.c_d_config == "resnet":
            h = self.conv1(self.act(self.norm1(y)))
            h = self.conv2(self.act(self.norm2(h)))
            return self.act(h + y)
        return self.act(self.norm(y + self.d_conv(u)))

    def _check_input(self, u: torch.Tensor, x: torch.Tensor | None, frame_dims: int) -> None:
        if u.dim() != frame_dims + 3 or u.shape[-3] != self.d_model:
            layout = "[B, L, U, H, W]" if frame_dims == 2 else "[B, U, H, W]"
            raise ValueError(f"ConvSSM expects u as {layout} with U={self.d_model}, got {tuple(u.shape)}")
        b, h, w = u.shape[0], u.shape[-2], u.shape[-1]
        if x is not None and x.shape != (b, 2, self.state_size, h, w):
            raise ValueError(
                f"ConvSSM state must be [B, 2, P, H, W] = {(b, 2, self.state_size, h, w)}, got {tuple(x.shape)}"
            )

    def forward(self, u: torch.Tensor, x0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Parallel (scan) mode over a whole sequence.

        Args:
            u: ``[B, L, U, H, W]``.
            x0: initial state ``[B, 2, P, H, W]`` (planar (re, im)), or ``None`` for zeros.

        Returns:
            ``(y [B, L, U, H, W], x_last [B, 2, P, H, W])``; ``x_last`` feeds the next chunk or :meth:`step`.
        """
        self._check_input(u, x0, frame_dims=2)
        b, length, _, h, w = u.shape
        lam_bar, w_b, w_c = self._discretized()
        frames = u.reshape(b * length, self.d_model, h, w)
        bu = F.conv2d(frames, w_b, padding=self.kernel_b // 2).view(b, length, 2, self.state_size, h, w)
        # bu is this call's own temporary and xs feeds only the C conv (whose backward allocates xs's gradient),
        # so the scan may overwrite both instead of allocating two more state-sized buffers.
        xs, x_last = conv_ssm_scan_planar(lam_bar, bu, x0, impl=self.impl, inplace=True)
        y = F.conv2d(xs.reshape(b * length, 2 * self.state_size, h, w), w_c, padding=self.kernel_c // 2)
        return self._feedthrough(y, frames).view(b, length, self.d_model, h, w), x_last

    def step(self, u: torch.Tensor, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrent step for O(1)-per-frame generation: ``x ← Λ̄x + B̄*u``, ``y = 2·Re(C̃*x)`` + feed-through.

        Args:
            u: one frame ``[B, U, H, W]``.
            x: previous state ``[B, 2, P, H, W]`` or ``None`` for zeros.

        Returns:
            ``(y [B, U, H, W], x_new [B, 2, P, H, W])``.
        """
        self._check_input(u, x, frame_dims=1)
        b, _, h, w = u.shape
        lam_bar, w_b, w_c = self._discretized()
        bu = F.conv2d(u, w_b, padding=self.kernel_b // 2).view(b, 2, self.state_size, h, w)
        x_new = conv_ssm_step_planar(lam_bar, bu, x)
        y = F.conv2d(x_new.to(w_c.dtype).reshape(b, 2 * self.state_size, h, w), w_c, padding=self.kernel_c // 2)
        return self._feedthrough(y, u), x_new

    def train(self, mode: bool = True) -> ConvSSM:
        self._cache = None
        return super().train(mode)


def _validate(
    d_model: int,
    ssm_size: int,
    blocks: int,
    kernels: tuple[int, int, int],
    c_d_config: str,
    dt_min: float,
    dt_max: float,
    activation: str,
) -> None:
    check(isinstance(d_model, int) and d_model >= 1, f"ConvSSM: d_model must be a positive int, got {d_model!r}")
    check(
        isinstance(ssm_size, int) and ssm_size >= 2 and ssm_size % 2 == 0,
        f"ConvSSM: ssm_size must be a positive even int (P = ssm_size // 2 conjugate pairs), got {ssm_size!r}",
    )
    check(
        isinstance(blocks, int) and blocks >= 1 and ssm_size % blocks == 0 and (ssm_size // blocks) % 2 == 0,
        f"ConvSSM: blocks={blocks!r} must divide ssm_size={ssm_size} into blocks of even size",
    )
    for name, k in zip(("kernel_b", "kernel_c", "kernel_d"), kernels):
        check(isinstance(k, int) and k >= 1 and k % 2 == 1, f"ConvSSM: {name} must be a positive odd int, got {k!r}")
    check(c_d_config in _C_D_CONFIGS, f"ConvSSM: c_d_config must be one of {_C_D_CONFIGS}, got {c_d_config!r}")
    check(
        all(isinstance(v, (int, float)) for v in (dt_min, dt_max)) and 0 < dt_min <= dt_max,
        f"ConvSSM: need numbers 0 < dt_min <= dt_max, got dt_min={dt_min!r}, dt_max={dt_max!r}",
    )
    check(activation in _ACTIVATIONS, f"ConvSSM: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
