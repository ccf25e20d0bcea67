"""ConvS5 generation time per frame at several horizons (called by ``stpred-bench``; also runnable on its own).

Definition: the model scans ``context`` frames (one parallel scan per layer), then generates frames one
:meth:`ConvS5.step` at a time. The **time of frame k** (k >= 2; frame 1 comes out of the conditioning scan) is the
median wall time of the single step that produces frame k, repeated from the real state reached after generating
frames 1..k-1 (the rollout up to there is not timed; ``step`` returns new states and never mutates its inputs, so
every repetition does the same work). The repetitions go round-robin over the horizons. A recurrent rollout is
O(1) per frame, so the figure must be flat in k.

Commands:
    python -m stpred.apps._bench_generation                 # CPU_CONFIG at frames 10, 100, 400
    python -m stpred.apps._bench_generation --published --frames 10,20
    python -m stpred.apps._bench_generation --device cuda --published
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

__all__ = ["CPU_CONFIG", "check_device", "parse_horizons", "run", "main"]

PROG = "python -m stpred.apps._bench_generation"

# A CPU-feasible configuration (same structure as the published one at half the width and half the depth):
# encoder 32/64/128 with two pooling stages (16x16 latents at 64x64), d_model 128, ssm_size 128 (P 64), 4 layers.
CPU_CONFIG: dict[str, Any] = {"d_model": 128, "ssm_size": 128, "n_layers": 4, "widths": [32, 64, 128]}


def check_device(text: str) -> str:
    """``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` naming a visible GPU, as torch's device string."""
    from stpred.apps._cli import resolve_device
    from stpred.errors import UserError

    match = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", text)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise UserError(f"--device {text} is not a device here; use cpu, cuda, cuda:N or auto (cuda when present)")
    if match.group(1) == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {text} was asked for, but no CUDA device is visible; use --device cpu or auto")
    if match.group(2) is not None and int(match.group(2)) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UserError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0 .. cuda:{count - 1}")
    return resolve_device(text)


def parse_horizons(text: str) -> list[int]:
    """``--frames``: comma-separated horizons, each at least 2 (frame 1 comes from the conditioning scan)."""
    from stpred.errors import UserError

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise UserError(f"--frames must be comma-separated whole numbers such as 10,100,400, got '{text}'")
    frames = [int(p) for p in parts]
    if min(frames) < 2:
        raise UserError(
            f"--frames {text}: horizons must be frames >= 2 (frame 1 comes from the conditioning scan), e.g. 10,100"
        )
    return frames


def run(
    device: str = "cpu",
    frames: Sequence[int] = (10, 100, 400),
    batch: int = 1,
    *,
    context: int = 10,
    image_size: int = 64,
    channels: int = 1,
    warmup: int = 2,
    iters: int = 5,
    **model_kwargs: Any,
) -> list[dict[str, Any]]:
    """Time per generated frame of ConvS5 at each horizon in ``frames``.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        frames: horizons k (>= 2) at which the step producing frame k is timed.
        batch: sequences generated together.
        context: conditioning frames (scanned in parallel).
        image_size: frame height and width.
        channels: frame channels.
        warmup: untimed repetitions per horizon.
        iters: timed repetitions per horizon, taken round-robin over the horizons (the median is reported).
        **model_kwargs: ConvS5 hyperparameters; none on CPU means :data:`CPU_CONFIG`, none on a GPU means the
            published defaults (d_model 256, ssm_size 256, 8 layers).

    Returns:
        One row per horizon: ``model``, ``config``, ``params``, ``device``, ``threads``, ``batch``, ``context``,
        ``frame``, ``ms_per_frame``, ``frames_per_s`` (batch / time), ``vs_first`` (time / time at the first
        horizon), ``condition_ms`` (the context scan) and ``state_shape`` (per layer).
    """
    from stpred.errors import UserError
    from stpred.kernels import median_ms
    from stpred.models.convs5 import ConvS5

    horizons = sorted(int(k) for k in frames)
    if not horizons or horizons[0] < 2:
        raise UserError(f"frames must be horizons >= 2 (frame 1 comes from the conditioning scan), got {list(frames)}")
    if batch < 1 or iters < 1:
        raise UserError(f"batch and iters must be at least 1, got batch={batch}, iters={iters}")
    kwargs = model_kwargs or (CPU_CONFIG if torch.device(device).type == "cpu" else {})
    shape = (context, channels, image_size, image_size)
    model = ConvS5(in_shape=shape, out_frames=horizons[-1], **kwargs).to(device).eval()
    x = torch.rand(batch, context, channels, image_size, image_size, device=device)

    with torch.no_grad():
        condition_ms = median_ms(lambda: model.condition(x), device, warmup=1, iters=max(1, iters // 2))
        frame, states = model.condition(x)
        produced, steps = 1, {}
        for k in horizons:
            while produced < k - 1:
                frame, states = model.step(frame, states)
                produced += 1
            steps[k] = partial(model.step, frame, states)
        for fn in steps.values():
            median_ms(fn, device, warmup=warmup, iters=1)
        # Round-robin over the horizons, so that load on a shared machine hits every horizon alike.
        times: dict[int, list[float]] = {k: [] for k in horizons}
        for _ in range(iters):
            for k, fn in steps.items():
                times[k].append(median_ms(fn, device, warmup=0, iters=1))
    config = ", ".join(f"{name}={v}" for name, v in kwargs.items()) or "published defaults"
    rows: list[dict[str, Any]] = []
    for k in horizons:
        ms = statistics.median(times[k])
        rows.append(
            {
                "model": "convs5",
                "config": config,
                "params": sum(p.numel() for p in model.parameters()),
                "device": device,
                "threads": torch.get_num_threads(),
                "batch": batch,
                "context": context,
                "frame": k,
                "ms_per_frame": ms,
                "frames_per_s": batch / (ms * 1e-3),
                "condition_ms": condition_ms,
                "state_shape": list(states[0].shape),
            }
        )
    for row in rows:
        row["vs_first"] = row["ms_per_frame"] / rows[0]["ms_per_frame"]
    return rows


def _main(argv: Sequence[str] | None) -> None:
    from stpred.apps._cli import ArgumentParser

    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", default="10,100,400", help="comma-separated horizons")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--published", action="store_true", help="the published size instead of CPU_CONFIG")
    args = parser.parse_args(argv)
    for key in ("batch", "iters"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1, got {getattr(args, key)}")
    frames, device = parse_horizons(args.frames), check_device(args.device)
    published = {"d_model": 256, "ssm_size": 256, "n_layers": 8, "widths": [64, 128, 256]}
    rows = run(device, frames, args.batch, iters=args.iters, **(published if args.published else {}))
    for row in rows:
        print(
            f"frame {row['frame']:>5}: {row['ms_per_frame']:8.2f} ms/frame ({row['vs_first']:.2f}x first), "
            f"{row['frames_per_s']:.1f} frames/s; condition {row['condition_ms']:.1f} ms; {row['params']:,} params; "
            f"{row['config']}; {row['device']}, {row['threads']} threads, batch {row['batch']}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    from stpred.apps._cli import run_cli

    run_cli(PROG, lambda: _main(argv))


if __name__ == "__main__":
    main()
