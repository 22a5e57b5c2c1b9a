"""The ``mrfa`` console script: ``mrfa {train,animate,reconstruct,crop,evaluate,convert} ...``.

Each subcommand is a module of :mod:`mrfa.commands` exposing ``add_arguments(parser)`` and
``run(args) -> int``; this file only mounts them (imports are lazy so ``mrfa --help`` stays fast).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from types import ModuleType
from typing import Callable, Iterator, Optional


# name -> (loader of the module with add_arguments(parser) and run(args), help); imports are lazy so that
# `mrfa --help` stays fast and a command only loads what it needs
def _command(name: str) -> Callable[[], ModuleType]:
    """A loader of ``mrfa.commands.<name>`` (imported on first use)."""
    def load() -> ModuleType:
        if name == "train":
            from mrfa.commands import train as module
        elif name == "animate":
            from mrfa.commands import animate as module
        elif name == "reconstruct":
            from mrfa.commands import reconstruct as module
        elif name == "crop":
            from mrfa.commands import crop as module
        elif name == "evaluate":
            from mrfa.commands import evaluate as module
        elif name == "convert":
            from mrfa.commands import convert as module
        elif name == "export":
            from mrfa.commands import export as module
        else:
            from mrfa.commands import app as module
        return module
    return load


SUBCOMMANDS: dict[str, tuple[Callable[[], ModuleType], str]] = {
    "train": (_command("train"), "train a model from a YAML config (also: python tools/train.py)"),
    "animate": (_command("animate"), "animate a source portrait with a driving video"),
    "reconstruct": (_command("reconstruct"), "same-identity reconstruction of a dataset + metrics"),
    "crop": (_command("crop"), "VoxCeleb-style face crop of an image or video"),
    "evaluate": (_command("evaluate"), "score predictions against ground truth (L1/PSNR/SSIM/LPIPS/AKD/AED/CSIM)"),
    "convert": (_command("convert"), "convert an official MRFA checkpoint into an mrfa snapshot"),
    "export": (_command("export"), "export a checkpoint as ONNX graphs for the onnxruntime backend"),
    "app": (_command("app"), "serve the local web page (animate, reconstruct, progress, queue, API)"),
}


# options that name files or folders: an empty value is refused before anything runs
PATH_OPTIONS = {"output", "source", "driving", "checkpoint", "config", "data", "pairs", "input", "pred", "gt",
                "resume", "box_json", "recon_out", "work_dir"}


def _one_line(err: BaseException) -> str:
    """The first non-empty line of an error message (library messages are one sentence; foreign ones may not be)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


@contextlib.contextmanager
def _user_facing(prog: str) -> Iterator[None]:
    """Warnings as one line each (``PROG: warning: ...``), SIGTERM as an interrupt (so partial outputs are removed
    by the writers' cleanup, as for Ctrl-C)."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        print(f"{prog}: warning: {_one_line(message)}", file=sys.stderr)

    def terminate(signum, frame) -> None:  # noqa: ANN001
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate) if threading.current_thread() is threading.main_thread() \
        else None
    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


# OpenMP threads spin this long before sleeping (libgomp's default spins about 300k times). Next to another
# multi-threaded process (a second torch job) full spinning made `mrfa animate` 7x slower; this costs nothing alone.
# Measured on the 2-core AMD EPYC, demo model, 448 frames: alone 22 s either way; beside a 2-thread torch loop
# 162 s (default) vs 55 s (10000). Applied only when torch is not loaded yet and the user has not set it.
OPENMP_SPIN_COUNT = "10000"


def set_openmp_policy() -> None:
    """Set ``GOMP_SPINCOUNT`` for this process unless the user did or torch (libgomp) is already loaded."""
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)


def check_environment() -> None:
    """Environment variables mrfa's libraries read, checked before torch does (one sentence naming the variable).

    Raises:
        ValueError: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set to something other than a positive whole number.
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(name)
        if value is not None and value.strip() != "" and not (value.strip().isdigit() and int(value) > 0):
            raise ValueError(f"the environment variable {name}={value[:40]!r} is not a positive whole number "
                             "(unset it or give a thread count such as 2)")


def main(argv: Optional[list[str]] = None) -> int:
    """Run one ``mrfa`` command; returns its exit code (0 done, 1 error, 2 usage, 3 stopped on NaN loss,
    130 interrupted)."""
    set_openmp_policy()
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="mrfa", description="MRFA face animation: train, animate, evaluate.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    if name not in SUBCOMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}")
    prog = f"mrfa {name}"
    try:
        check_environment()
        module = SUBCOMMANDS[name][0]()
        subparser = argparse.ArgumentParser(prog=prog, description=SUBCOMMANDS[name][1])
        module.add_arguments(subparser)
        args = subparser.parse_args(argv[1:])
        for key, value in vars(args).items():  # an empty path is never meant (Path("") would be the current folder)
            if key in PATH_OPTIONS and isinstance(value, str) and value.strip() == "":
                raise ValueError(f"--{key.replace('_', '-')} is empty; name the file or folder")
        with _user_facing(prog):
            return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; partial outputs were removed", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{prog}: error: out of memory: this machine cannot hold the work (free memory, or use a smaller "
              "input, model or batch)", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError, ImportError) as e:  # one clear sentence, non-zero exit
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
