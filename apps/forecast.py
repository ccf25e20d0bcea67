"""stpred-forecast: forecast weather and traffic grids from a saved checkpoint, written as CF-style NetCDF.

Commands:
    stpred-forecast --ckpt runs/era5_uk/checkpoints/last.ckpt era5_t2m_2019-03_uk.nc
    stpred-forecast --ckpt last.ckpt era5_t2m_2019-03_uk.nc --init-time 2019-03-20T12:00 --out uk.nc --plot
    stpred-forecast --ckpt last.ckpt /data/weatherbench/5.625deg     # a WeatherBench-1 folder, or a .zarr store
    stpred-forecast --ckpt taxibj.ckpt BJ16_M32x32_T30_InOut.h5 --init-time 2016033148
    stpred-forecast --ckpt ns_fno2d.ckpt vorticity.npy               # [T, C, H, W] in physical units
    stpred-forecast --ckpt arrays.ckpt series.nc --init-time 2020-05-01   # a data=arrays checkpoint, its own format

The checkpoint's metadata decides how INPUT is read. A weather checkpoint (``variables``, ``latitude``,
``longitude``) reads its variables and levels on its (cropped) grid from a NetCDF file, a WeatherBench-1 folder or a
Zarr store; a grid-flow checkpoint (TaxiBJ, ``flow_min``/``flow_max``) reads an ST-ResNet ``.h5`` file and scales it
as training did; any other forecaster reads a ``.npy`` array, or a file in the format a ``data=arrays`` checkpoint
was trained on. The model sees the ``T_in`` stamps ending at ``--init-time`` (default: the input's last ones); the
forecast is written in the data's own units. Missing input values (NaN) are filled as training did; the forecast is
NaN (``_FillValue``) where the input is masked, and the variables' ``stpred_mask``/``stpred_fill`` attributes say
so (``stpred.masking``); NaN where the training data had none is said in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stpred.apps._cli import ArgumentParser, run_cli
from stpred.apps._forecasting import PROG, default_output, plot_forecast, run_forecast, summary
from stpred.apps._outputs import check_output_file

__all__ = ["main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument(
        "input", type=Path, help="NetCDF file, WeatherBench-1 folder, Zarr store, ST-ResNet .h5 or .npy"
    )
    parser.add_argument(
        "--ckpt", type=Path, required=True, help="a forecasting .ckpt written by stpred-train, or zoo:<name>"
    )
    parser.add_argument("--init-time", help="last input stamp, ISO (2019-03-31T12:00) or YYYYMMDDSS; default: the last")
    parser.add_argument("--out", type=Path, help="output NetCDF (default: <input stem>_forecast.nc here)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--plot", action="store_true", help="also write a PNG beside the NetCDF")
    return parser.parse_args(argv)


def _run(argv: list[str] | None) -> None:
    args = _parse(argv)
    if args.plot:  # the PNG goes beside the NetCDF: checked before the forecast runs
        out = args.out or default_output(args.input)
        check_output_file(out.with_suffix(".png"), "--plot", fix="move it away or pick another --out")
    result, out = run_forecast(args.ckpt, args.input, init_time=args.init_time, out=args.out, device=args.device)
    png = None
    if args.plot:
        png = out.with_suffix(".png")
        plot_forecast(result, png)
    print(summary(result, out, png))


def main(argv: list[str] | None = None) -> None:
    run_cli(PROG, lambda: _run(argv))


if __name__ == "__main__":
    main()
