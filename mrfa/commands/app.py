"""``mrfa app``: serve the local web page (Animate and Reconstruct tabs, progress, Cancel, a queue and an API).

Examples::

    mrfa app --checkpoint vox.pth.tar
    mrfa app --checkpoint runs/demo/snapshot.pt --port 7861 --max-frames 1000
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

INSTALL_HINT = "mrfa app needs the web-app extra: pip install -e '.[app]' (Gradio, served offline from this machine)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", default=[], type=Path, metavar="C",
                        help="a model to offer (repeatable): mrfa snapshot, official checkpoint or exported ONNX "
                             "folder; runs/*/snapshot.pt and *.pth files in the current folder are listed too")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; another host prints a warning)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--max-frames", type=int, default=3000, help="longest driving video accepted (frames)")
    parser.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload accepted (MB)")
    parser.add_argument("--queue-size", type=int, default=8, help="jobs that may wait while one runs")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD", help="ask for a login")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="folder for results and examples (default: a new temporary folder)")
    parser.add_argument("--no-face-figures", action="store_true",
                        help="skip the identity / pose / expression figures of each result")


def _settings(args: argparse.Namespace):
    from mrfa.app.jobs import find_checkpoints
    from mrfa.app.server import AppSettings

    for name, value, low in (("--port", args.port, 1), ("--max-frames", args.max_frames, 1),
                             ("--queue-size", args.queue_size, 1)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if not args.port <= 65535:
        raise ValueError(f"--port must be <= 65535, got {args.port}")
    if not 0 < args.max_upload_mb < float("inf"):
        raise ValueError(f"--max-upload-mb must be a positive number, got {args.max_upload_mb}")
    for path in args.checkpoint:
        if not path.exists():
            raise FileNotFoundError(f"checkpoint not found: {path}")
    auth = None
    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise ValueError("--auth takes USER:PASSWORD")
        auth = (user, password)
    found = find_checkpoints(list(args.checkpoint), [Path.cwd(), Path.cwd() / "runs"])
    return AppSettings(checkpoints=found, host=args.host, port=args.port, device=args.device,
                       max_frames=args.max_frames, max_upload_mb=args.max_upload_mb, queue_size=args.queue_size,
                       auth=auth, work_dir=args.work_dir, face_figures=not args.no_face_figures)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise ImportError(INSTALL_HINT)
    settings = _settings(args)
    from mrfa.app.server import App

    app = App(settings)
    models = ", ".join(str(p) for p in settings.checkpoints) or "none (the page says how to get one)"
    print(f"mrfa app: serving http://{settings.host}:{settings.port} (models: {models}; one job at a time, "
          f"{settings.queue_size} may wait; Ctrl-C stops)", file=sys.stderr, flush=True)
    app.launch(block=True)
    return 0
