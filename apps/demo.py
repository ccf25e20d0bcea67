"""stpred-demo: run video inference demos on clips with a trained checkpoint.

A classification checkpoint (Kinetics-400: SqueezeTime, LRCN...) samples each clip as the Kinetics test split
does (the checkpoint's test clips x crops, or --views), averages the class probabilities over the views, prints
the top-k labels and writes ``<clip>_classes.json`` and ``<clip>_annotated.mp4`` (the clip with the labels and bars).

A clip is a video file or a folder of images, one frame per image in natural name order (``0001.png, 0002.png``
or ``frame2.png`` before ``frame10.png``), read as the ``data=frames`` datamodule reads a sequence; a folder of
videos or of such image folders stands for each of them (outputs are named after the video's stem or the folder).

A video forecasting checkpoint (Moving MNIST, Kinetics forecasting) takes T_in context frames from --start at the
checkpoint's frame stride, forecasts --horizon frames (rolling the model forward on its own output past its
out_frames) and writes ``<clip>_forecast.mp4`` (truth | forecast), ``<clip>_forecast.png`` (rows input / truth /
forecast) and ``<clip>_forecast.json`` (per-lead MSE and PSNR where the clip has the true frames).

Usage:
    stpred-demo --ckpt runs/k400_squeezetime/checkpoints/last.ckpt clips/arm_wrestling.mp4
    stpred-demo --ckpt k400.ckpt clips/ --views 1,1 --top-k 3 --out demo_out/     # every video in clips/
    stpred-demo --ckpt mmnist_simvpv2.ckpt clip.mp4 --start 20 --horizon 30 --device cuda
    stpred-demo --ckpt runs/frames/checkpoints/last.ckpt my_frames/seq_001/     # a folder of images is one clip
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stpred.apps._cli import ArgumentParser, resolve_device, run_cli
from stpred.apps._clips import collect_clips, parse_views, probe_clips
from stpred.apps._outputs import check_output_folder
from stpred.errors import UserError

if TYPE_CHECKING:
    from stpred.apps._video_demo import ForecastResult

__all__ = ["main"]

PROG = "stpred-demo"
DEFAULT_TOP_K = 5
DEFAULT_MAX_FRAMES = 300  # a whole 10 s Kinetics clip at 30 fps


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog="examples:\n" + __doc__.split("Usage:\n", 1)[1].rstrip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "clips", nargs="+", metavar="CLIP", help="video files or folders of images (one clip each), or folders of them"
    )
    parser.add_argument("--ckpt", required=True, help="a .ckpt written by stpred-train, or zoo:<name> (stpred-zoo)")
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out/)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when present")
    parser.add_argument("--top-k", type=int, default=None, help="classify: labels to show (default 5)")
    parser.add_argument(
        "--views", default=None, metavar="CLIPS,CROPS", help="classify: views per clip (default: the checkpoint's)"
    )
    parser.add_argument(
        "--max-frames", type=int, default=DEFAULT_MAX_FRAMES, help="classify: frames in the annotated video"
    )
    parser.add_argument("--start", type=int, default=0, help="forecast: first context frame (default 0)")
    parser.add_argument("--horizon", type=int, default=None, help="forecast: frames to forecast (default out_frames)")
    return parser.parse_args(argv)


def _positive(value: int, option: str, minimum: int = 1) -> int:
    if value < minimum:
        raise UserError(f"{option} must be >= {minimum}, got {value}")
    return value


def _note_ignored(args: argparse.Namespace, kind: str) -> None:
    ignored = {
        "classify": {"--start": args.start != 0, "--horizon": args.horizon is not None},
        "forecast": {"--views": args.views is not None, "--top-k": args.top_k is not None},
    }[kind]
    for option in (o for o, given in ignored.items() if given):
        print(f"{PROG}: note: {option} does not apply to a {kind} checkpoint; ignored", file=sys.stderr)


def _top_k_table(clip: Path, top: list[dict], views: tuple[int, int], model: str) -> str:
    header = f"{clip.name}  ({model}, {views[0] * views[1]} views = {views[0]} clips x {views[1]} crops)"
    rows = [f"  {rank:>4}  {row['probability']:>11.2%}  {row['label']}" for rank, row in enumerate(top, 1)]
    return "\n".join([header, "  rank  probability  label", *rows])


def _forecast_summary(clip: Path, result: ForecastResult, written: list[Path]) -> str:
    scored = [r["psnr"] for r in result.metrics if r["psnr"] is not None]
    score = f"mean PSNR {sum(scored) / len(scored):.2f} dB over {len(scored)} lead(s)" if scored else "no truth frames"
    return (
        f"{clip.name}: {len(result.forecast)} frames forecast from frames {result.context_indices} "
        f"({result.steps} pass(es)); {score}; wrote {', '.join(p.name for p in written)}"
    )


def _run(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    top_k = _positive(DEFAULT_TOP_K if args.top_k is None else args.top_k, "--top-k")
    _positive(args.max_frames, "--max-frames")
    _positive(args.start, "--start", minimum=0)
    if args.horizon is not None:
        _positive(args.horizon, "--horizon")
    check_output_folder(args.out, "--out")  # before a checkpoint is loaded or a clip decoded

    from tqdm.auto import tqdm

    from stpred.apps import _video_demo as demo
    from stpred.checkpoint import load_predictor

    predictor = load_predictor(args.ckpt, map_location=resolve_device(args.device))
    kind = demo.demo_kind(predictor, args.ckpt)
    _note_ignored(args, kind)
    views = parse_views(args.views, predictor.metadata) if kind == "classify" else None
    horizon = args.horizon or predictor.out_frames
    clips = collect_clips(args.clips)
    infos = probe_clips(clips)  # and, for forecasts, their lengths checked before anything is written
    if kind == "forecast":
        stride = int(predictor.metadata.get("frame_stride") or 1)
        for clip, info in infos.items():
            demo.forecast_frame_indices(clip, info.num_frames, args.start, predictor.in_shape[0], horizon, stride)
    out = Path(args.out)
    record = {"checkpoint": str(args.ckpt), "model": predictor.model_name}
    for clip in tqdm(clips, desc=PROG, unit="clip", disable=len(clips) < 2):
        info = infos[clip]
        if kind == "classify":
            result = demo.classify_clip(predictor, clip, info, views)
            top = result.top_k(predictor.class_names, top_k)
            written = demo.write_classification(out, clip, info, result, top, record, args.max_frames)
            tqdm.write(_top_k_table(clip, top, views, predictor.model_name))
            tqdm.write(f"  wrote {', '.join(str(p) for p in written)}")
        else:
            result = demo.forecast_clip(predictor, clip, info, args.start, horizon)
            written = demo.write_forecast(out, clip, result, {**record, "out_frames": predictor.out_frames})
            tqdm.write(_forecast_summary(clip, result, written))


def main(argv: list[str] | None = None) -> None:
    """Console entry point; ``argv`` defaults to ``sys.argv[1:]``."""
    run_cli(PROG, lambda: _run(argv))


if __name__ == "__main__":
    main()
