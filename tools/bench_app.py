"""The web app's cost over the command line on the same job (``python tools/benchmark.py app``).

One run measures, on one source photo and one driving clip (default: the app's synthetic examples, 50 frames at
256 px) with one checkpoint:

* ``mrfa animate`` as a whole process (start, model load, decode, render, encode), median of ``--repeats``;
* the same job in-process with the model already loaded (``mrfa.inference.pipeline.animate_to_file``);
* the same job through a live ``mrfa app`` server and gradio_client (upload, queue, render, download), and the
  time from submitting to the first rendered frame reported by the progress;
* the page's load time (HTTP GET of the page).

and prints the app's overhead against the in-process job and against the command.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model to serve (e.g. runs/demo/snapshot.pt)")
    parser.add_argument("--source", default=None, help="source photo (default: the app's synthetic example)")
    parser.add_argument("--driving", default=None, help="driving clip (default: the app's synthetic example)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures as JSON here")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: argparse.Namespace) -> int:
    from gradio_client import Client, handle_file

    from mrfa.app.server import _examples
    from mrfa.inference.animate import Animator
    from mrfa.inference.pipeline import AnimateRequest, animate_to_file
    from mrfa.utils.machine import cpu_name

    work = Path(tempfile.mkdtemp(prefix="mrfa-bench-app-"))
    args.checkpoint = str(Path(args.checkpoint).resolve())
    source, driving = (args.source, args.driving) if args.source and args.driving else _examples(work / "ex")[0]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cli = []
    for i in range(args.repeats):
        out = work / f"cli-{i}.mp4"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mrfa", "animate", "--checkpoint", args.checkpoint, "--source", source,
                        "--driving", driving, "--output", str(out), "--quiet", "--device", "cpu"], check=True,
                       env=env, stdout=subprocess.DEVNULL)
        cli.append(time.perf_counter() - start)
    animator = Animator.from_checkpoint(args.checkpoint, device="cpu")
    inproc = []
    for i in range(args.repeats + 1):  # the first run warms up
        start = time.perf_counter()
        animate_to_file(animator, AnimateRequest(source=Path(source), driving=Path(driving),
                                                 output=work / f"inproc-{i}.mp4"))
        inproc.append(time.perf_counter() - start)
    inproc = inproc[1:]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mrfa", "app", "--checkpoint", args.checkpoint, "--port",
                               str(port), "--device", "cpu", "--work-dir", str(work / "app"), "--no-face-figures"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("bench_app: the server did not start")
                time.sleep(0.3)
        loads = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            urllib.request.urlopen(url, timeout=10).read()
            loads.append(time.perf_counter() - start)
        client = Client(url, verbose=False)
        app, first = [], []
        for i in range(args.repeats + 1):  # the first call loads the model
            start = time.perf_counter()
            job = client.submit(source=handle_file(source), driving=handle_file(driving), api_name="/animate")
            first_frame = None
            while not job.done():
                status = job.status()
                data = getattr(status, "progress_data", None) or []
                if first_frame is None and any((getattr(p, "index", 0) or 0) > 0 for p in data):
                    first_frame = time.perf_counter() - start
                time.sleep(0.02)
            job.result()
            app.append(time.perf_counter() - start)
            first.append(first_frame)
        app_warm, first_warm = app[1:], [f for f in first[1:] if f is not None]
    finally:
        server.terminate()
        server.wait(timeout=30)
    med = statistics.median
    figures = {
        "cpu": cpu_name(), "threads": os.cpu_count(), "checkpoint": args.checkpoint, "source": source,
        "driving": driving, "repeats": args.repeats,
        "mrfa_animate_process_s": round(med(cli), 3), "in_process_job_s": round(med(inproc), 3),
        "app_job_s": round(med(app_warm), 3), "app_first_call_s": round(app[0], 3),
        "app_overhead_vs_in_process_s": round(med(app_warm) - med(inproc), 3),
        "app_vs_mrfa_animate": round(med(app_warm) / med(cli), 3),
        "submit_to_first_frame_s": round(med(first_warm), 3) if first_warm else None,
        "page_load_s": round(med(loads), 4),
    }
    for key, value in figures.items():
        print(f"{key:32s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    sys.exit(run(p.parse_args()))
