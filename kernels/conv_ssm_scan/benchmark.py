"""Timings of the conv-SSM scan: sequential reference vs the fast PyTorch path vs Triton (CUDA only).

``run()`` returns one row per (shape, implementation), for ``stpred-bench kernels``. Bytes are the minimal traffic
(docs/kernels.md §1.2 option A) in state-sized buffers S = B·L·2·P·H·W·4 bytes (float32): the forward reads Bu and
writes xs (2 S; the Triton kernel also writes x_last, S/L), the backward reads the incoming gradient and xs and
writes dBu (3 S; plus dΛ̄ partials of B·n_tiles·2·P floats), i.e. 5 S for forward+backward. Per direction the
effective bandwidth is that traffic over the direction's time (the backward's is ``fwd_bwd_ms - fwd_ms``), and
``pct_copy_fwd`` / ``pct_copy_bwd`` relate it to the measured device copy bandwidth, so the targets (scan >= 80 %
forward, >= 65 % backward of copy bandwidth) read off directly.

Usage: ``python -m stpred.kernels.conv_ssm_scan.benchmark [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from stpred.kernels._bench import copy_bandwidth_gbps, median_ms
from stpred.kernels.conv_ssm_scan import conv_ssm_scan_planar
from stpred.kernels.conv_ssm_scan.reference import conv_ssm_scan_reference

__all__ = ["run", "shapes"]

OP = "conv_ssm_scan"


def shapes(device: torch.device | str, quick: bool = False) -> list[tuple[int, int, int, int, int]]:
    """Benchmark shapes ``(B, L, P, H, W)``: ConvS5 Moving-MNIST at L=100 and 300, and one with B·P·H·W = 4M.

    On CPU (and with ``quick``) the sequence lengths are shortened; the rows record the shapes actually run.
    """
    on_cpu = torch.device(device).type == "cpu"
    if quick:
        return [(8, 20, 128, 16, 16), (8, 60, 128, 16, 16), (8, 4 if on_cpu else 20, 128, 64, 64)]
    return [(8, 100, 128, 16, 16), (8, 300, 128, 16, 16), (8, 8 if on_cpu else 100, 128, 64, 64)]


def _inputs(shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    b, length, p, h, w = shape
    radius = torch.exp(-torch.rand(p, device=device) * 0.5 - 1e-3)
    angle = (torch.rand(p, device=device) * 2 - 1) * torch.pi
    lam_bar = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    bu = torch.randn(b, length, 2, p, h, w, device=device)
    return lam_bar, bu


def _timed_pair(
    scan: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    inputs: tuple[torch.Tensor, ...],
    grad: torch.Tensor,
    setup: Callable[[torch.Tensor], None] | None,
    device: torch.device,
    warmup: int,
    iters: int,
) -> tuple[float, float]:
    def fwd() -> None:
        with torch.no_grad():
            scan(*inputs)

    def fwd_bwd() -> None:
        xs, _ = scan(*inputs)
        torch.autograd.grad(xs, inputs, grad)

    prepare = None if setup is None else (lambda: setup(grad))
    return (
        median_ms(fwd, device, warmup=warmup, iters=iters, setup=prepare),
        median_ms(fwd_bwd, device, warmup=warmup, iters=iters, setup=prepare),
    )


def _impls(device: torch.device) -> list[str]:
    impls = ["reference", "torch", "torch-inplace"]
    if device.type == "cuda":
        impls += ["triton", "triton-inplace"]
    return impls


def _case(impl: str, lam_bar: torch.Tensor, bu: torch.Tensor):
    """``(scan, inputs, setup)``: the callable, its inputs, and an untimed ``setup(grad)`` to run before each call
    (``None`` if none is needed). The reference runs on complex tensors, its native form (no conversions)."""
    if impl == "reference":
        lam_c = torch.complex(lam_bar[:, 0], lam_bar[:, 1]).requires_grad_()
        bu_c = torch.complex(bu[:, :, 0], bu[:, :, 1]).requires_grad_()
        return conv_ssm_scan_reference, (lam_c, bu_c), None
    if impl.endswith("-inplace"):
        return _inplace_case(lam_bar, bu, impl.removesuffix("-inplace"))

    def scan(lam: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return conv_ssm_scan_planar(lam, x, impl=impl)

    return scan, (lam_bar.clone().requires_grad_(), bu.clone().requires_grad_()), None


def _inplace_case(lam_bar: torch.Tensor, bu: torch.Tensor, impl: str = "torch"):
    """The in-place scan consumes Bu and the incoming gradient of xs. In ConvSSM those are fresh outputs of the B
    conv and of the C conv's backward, whose writes are not the scan's work (nor are they timed for the other
    rows, whose Bu and gradient also come from somewhere). So an untimed setup refills two persistent buffers
    before each call, and the timed call adopts them: Bu's buffer as the input's value, the gradient's buffer
    as the incoming gradient."""
    inputs = (lam_bar.clone().requires_grad_(), bu.clone().requires_grad_())
    bu_work, grad_work = torch.empty_like(bu), torch.empty_like(bu)

    def setup(grad: torch.Tensor) -> None:
        with torch.no_grad():
            bu_work.copy_(inputs[1])
            grad_work.copy_(grad)

    def scan(lam: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs, x_last = conv_ssm_scan_planar(lam, _Adopt.apply(x, bu_work.detach()), impl=impl, inplace=True)
        return _AdoptGrad.apply(xs, grad_work), x_last

    return scan, inputs, setup


class _Adopt(torch.autograd.Function):
    """``buf`` (already holding ``x``'s values) as a differentiable stand-in for ``x``: identity in both
    directions, without the copy (declared as an in-place write of ``buf``, so it is a non-leaf the scan may
    overwrite)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(buf)
        return buf

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g, None


class _AdoptGrad(torch.autograd.Function):
    """Identity whose backward hands on ``buf``, already holding the incoming gradient (the in-place scan then
    consumes it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
        ctx.buf = buf
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return ctx.buf, None


def _gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


def run(device: str | torch.device = "cpu", quick: bool = False) -> list[dict]:
    """Time forward and forward+backward of every implementation available on ``device``.

    Args:
        device: ``"cpu"`` or a CUDA device.
        quick: shorter sequences and fewer repetitions.

    Returns:
        Rows ``{op, shape, impl, fwd_ms, fwd_bwd_ms, gbps, pct_copy_bw, fwd_gbps, pct_copy_fwd, bwd_gbps,
        pct_copy_bwd, speedup}``: ``shape`` is ``(B, L, P, H, W)``; ``gbps`` is the minimal forward+backward
        traffic (5 state-sized float32 buffers) over ``fwd_bwd_ms``; ``fwd_gbps`` is 2 buffers over ``fwd_ms``,
        ``bwd_gbps`` 3 buffers over ``fwd_bwd_ms - fwd_ms``; each ``pct_copy_*`` relates one to the measured
        device copy bandwidth; ``speedup`` is the reference's ``fwd_bwd_ms`` over this row's.
    """
    device = torch.device(device)
    on_cpu = device.type == "cpu"
    warmup, iters = (1, 2) if quick else ((2, 5) if on_cpu else (3, 10))
    copy_bw = copy_bandwidth_gbps(device, n_bytes=1 << 26 if quick else 1 << 28)
    rows = []
    for shape in shapes(device, quick):
        lam_bar, bu = _inputs(shape, device)
        state_bytes = bu.numel() * bu.element_size()
        ref_ms = None
        for impl in _impls(device):
            scan, inputs, setup = _case(impl, lam_bar, bu)
            grad = torch.randn_like(inputs[1])
            fwd_ms, fb_ms = _timed_pair(scan, inputs, grad, setup, device, warmup, iters)
            ref_ms = fb_ms if impl == "reference" else ref_ms
            gbps = _gbps(5 * state_bytes, fb_ms)
            # The backward's time is the difference of two medians; timing noise can make it ~0 on tiny shapes.
            bwd_gbps = _gbps(3 * state_bytes, fb_ms - fwd_ms) if fb_ms > fwd_ms else None
            fwd_gbps = _gbps(2 * state_bytes, fwd_ms)
            rows.append(
                {
                    "op": OP,
                    "shape": shape,
                    "impl": impl,
                    "fwd_ms": fwd_ms,
                    "fwd_bwd_ms": fb_ms,
                    "gbps": gbps,
                    "pct_copy_bw": 100.0 * gbps / copy_bw,
                    "fwd_gbps": fwd_gbps,
                    "pct_copy_fwd": 100.0 * fwd_gbps / copy_bw,
                    "bwd_gbps": bwd_gbps,
                    "pct_copy_bwd": None if bwd_gbps is None else 100.0 * bwd_gbps / copy_bw,
                    "speedup": ref_ms / fb_ms,
                }
            )
            del scan, inputs, grad, setup
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(
        f"{'shape (B, L, P, H, W)':<26}{'impl':<15}{'fwd ms':>10}{'fwd+bwd ms':>12}{'GB/s':>8}{'% copy':>8}"
        f"{'% fwd':>8}{'% bwd':>8}{'x ref':>8}"
    )
    for row in run(args.device, args.quick):
        bwd = "-" if row["pct_copy_bwd"] is None else f"{row['pct_copy_bwd']:.1f}"
        print(
            f"{row['shape']!s:<26}{row['impl']:<15}{row['fwd_ms']:>10.1f}{row['fwd_bwd_ms']:>12.1f}"
            f"{row['gbps']:>8.1f}{row['pct_copy_bw']:>8.1f}{row['pct_copy_fwd']:>8.1f}{bwd:>8}{row['speedup']:>8.2f}"
        )


if __name__ == "__main__":
    main()
