"""stpred-serve: a web page to try checkpoints on clips and on gridded fields, served from this machine.

The clip page (``/``) classifies a clip (top-k bars over the checkpoint's test views) or forecasts it (context | truth
| forecast playing side by side, PSNR per lead against persistence). The field page (``/fields``) forecasts weather
grids or arrays from an init time: maps per lead behind a slider, RMSE per lead against persistence, the NetCDF to
download. Checkpoints: every shipped ``zoo:`` checkpoint plus each ``--ckpt``. Samples: the clips and ERA5 file of
``STPRED_DATA`` when it is set, plus ``--clips`` and ``--inputs``. The page needs no network: no external asset.

Usage:
    stpred-serve                                   # the zoo's checkpoints on http://127.0.0.1:7860
    stpred-serve --ckpt runs/quickstart/checkpoints/last.ckpt --clips my_clips/ --port 8000
    stpred-serve --ckpt zoo:era5-t2m-simvpv2 --inputs era5_t2m_2019-03_uk.nc --no-zoo
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from stpred.apps._cli import ArgumentParser, run_cli
from stpred.errors import UserError

__all__ = ["main", "listen"]

PROG = "stpred-serve"
DEFAULT_PORT = 7860


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog="examples:\n" + __doc__.split("Usage:\n", 1)[1].rstrip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--ckpt", action="append", default=[], help="a checkpoint to offer (.ckpt or zoo:<name>)")
    parser.add_argument("--clips", action="append", default=[], help="a sample clip, or a folder of them")
    parser.add_argument("--inputs", action="append", default=[], help="a sample field file (.nc, .npy, .h5)")
    parser.add_argument("--no-zoo", action="store_true", help="offer only the --ckpt checkpoints")
    parser.add_argument("--work-dir", type=Path, help="where jobs write (default: a temporary folder, removed at exit)")
    return parser.parse_args(argv)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; a bad port or an address in use is a :class:`UserError`."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a port number (0 .. 65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise UserError(f"--host {host}: {err.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(64)
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port") from None
    return sock


def _run(argv: list[str] | None) -> None:
    args = _parse(argv)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a port number (0 .. 65535)")

    import uvicorn

    from stpred.apps._serve_app import create_app
    from stpred.apps._serve_catalog import build_catalog

    catalog = build_catalog(args.ckpt, args.clips, args.inputs, use_zoo=not args.no_zoo)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="stpred-serve-"))
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    pages = {p: len(catalog.on_page(p)) for p in ("clips", "fields")}
    print(
        f"{PROG}: http://{shown}:{port}/ ({pages['clips']} clip and {pages['fields']} field checkpoint(s)); "
        "Ctrl-C stops",
        flush=True,
    )
    try:
        config = uvicorn.Config(create_app(catalog, work_dir), log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point; ``argv`` defaults to ``sys.argv[1:]``."""
    run_cli(PROG, lambda: _run(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
