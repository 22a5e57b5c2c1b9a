"""One-shot GPU check of mrfa's lookup kernels and model: run once on a machine with a CUDA GPU (< 8 minutes).

Steps (each with its own time limit; every step's output is kept):
  1. environment: GPU, compute capability, torch / CUDA / Triton / nvcc versions
  2. verbose build of the CUDA extension into a fresh directory (toolkit, arch and build time printed)
  3. the ``cuda``-marked tests (both kernels vs the exact stencil reference, gradcheck, determinism, parity)
  4. tools/benchmark.py corr at 256 px batch 16 and 512 px batch 4: forward and forward+backward, time and peak
     memory, reference vs CUDA kernel vs Triton kernel
  5. the full-model forward, fp32 and bf16, batch 1 and 32 (tools/benchmark.py forward)
  6. one training step at batch 8 (tools/benchmark.py train-step, random-weight perceptual backbone)
Writes OUT/device_check.json and OUT/device_check.md (a Markdown table of every step and its figures).

Set-up on a machine that has its own CUDA PyTorch (never let pip replace it):
    pip install --no-deps -e .                   # mrfa itself over the machine's torch
    pip install --no-index --no-deps --find-links WHEELS pyyaml tqdm pytest iniconfig pluggy packaging pygments
or pass ``--wheels WHEELS`` and the script installs whichever of those is missing. A wheel folder for a
Python 3.12 machine is made, on a machine with network, by:
    pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --no-deps \\
        pyyaml tqdm pytest iniconfig pluggy packaging pygments -d WHEELS

Without a GPU the script says so and exits with status 2 (nothing is run).

Example:
    python tools/device_check.py --out device_check_out [--wheels local/device-wheels] [--fixtures DIR]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED = {"yaml": "pyyaml", "tqdm": "tqdm", "pytest": "pytest", "numpy": "numpy"}
PYTEST_HELPERS = ("iniconfig", "pluggy", "packaging", "pygments")


def gpu_state() -> tuple[bool, str]:
    """(usable, one line): whether torch sees a CUDA GPU, and why not."""
    try:
        import torch
    except ImportError as exc:
        return False, f"PyTorch is not importable ({exc})"
    if torch.version.cuda is None:
        return False, f"this PyTorch build ({torch.__version__}) has no CUDA support, so no GPU can be used"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False: no CUDA GPU is visible to PyTorch"
    return True, f"{torch.cuda.get_device_name(0)} (sm_{''.join(map(str, torch.cuda.get_device_capability(0)))})"


def install_missing(wheels: Path | None) -> list[str]:
    missing = [pkg for mod, pkg in NEEDED.items() if importlib.util.find_spec(mod) is None]
    if missing and wheels is not None:
        extra = [p for p in PYTEST_HELPERS if importlib.util.find_spec(p) is None] if "pytest" in missing else []
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links",
                        str(wheels), *missing, *extra], check=False)
        missing = [pkg for mod, pkg in NEEDED.items() if importlib.util.find_spec(mod) is None]
    if importlib.util.find_spec("mrfa") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(ROOT)],
                       check=False)
    return missing


def run_step(name: str, cmd: list[str], limit_s: float, log_dir: Path, env: dict | None = None) -> dict:
    """Run one step; keep its output in log_dir/<name>.log; never raise."""
    print(f"\n=== {name}: {' '.join(cmd)}  (limit {limit_s:.0f} s)", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit_s,
                              env={**os.environ, **(env or {})}, check=False)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = 124
        out = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or ""))
        out += f"\n[stopped after {limit_s:.0f} s]"
    seconds = time.perf_counter() - start
    (log_dir / f"{name}.log").write_text(out)
    tail = "\n".join(out.strip().splitlines()[-25:])
    print(tail, flush=True)
    print(f"--- {name}: exit {rc} in {seconds:.1f} s", flush=True)
    return {"name": name, "command": cmd, "rc": rc, "seconds": round(seconds, 1), "tail": tail}


BUILD_SNIPPET = """
import json, os, time, torch
from torch.utils import cpp_extension
from mrfa.ops.corr_lookup import build
dev = torch.device('cuda', 0)
start = time.perf_counter()
build.load_extension(dev)
print(json.dumps({'build_s': round(time.perf_counter() - start, 1), 'cuda_home': cpp_extension.CUDA_HOME,
                  'arch': 'sm_%d%d' % torch.cuda.get_device_capability(dev), 'torch': torch.__version__,
                  'torch_cuda': torch.version.cuda, 'directory': str(build.build_directory(dev))}))
"""


def environment() -> dict:
    import torch

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(0), "capability": "sm_{}{}".format(*torch.cuda.get_device_capability(0)),
           "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    nvcc = shutil.which("nvcc")
    if nvcc:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout
        env["nvcc"] = (re.findall(r"release ([\d.]+)", out) or ["?"])[0]
    else:
        env["nvcc"] = None
    return env


def markdown(report: dict) -> str:
    lines = ["# mrfa device check", ""]
    env = report.get("environment", {})
    lines += ["| item | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env.items()] + [""]
    lines += ["| step | exit | seconds |", "|---|---:|---:|"]
    lines += [f"| {s['name']} | {s['rc']} | {s['seconds']} |" for s in report["steps"]] + [""]
    for s in report["steps"]:
        lines += [f"## {s['name']}", "", "```", s["tail"], "```", ""]
    return "\n".join(lines)


def plan(py: str, out: Path) -> list[tuple[str, list[str], float]]:
    """The steps: (name, command, time limit in seconds)."""
    return [
        ("build", [py, "-c", BUILD_SNIPPET], 180),
        ("cuda-tests", [py, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                        "tests/test_corr_lookup.py", "tests/test_corr_kernels.py", "-rs"], 150),
        ("benchmark-corr", [py, "tools/benchmark.py", "corr", "--sizes", "256:16", "512:4",
                            "--out", str(out / "corr")], 120),
        ("model-forward", [py, "tools/benchmark.py", "forward", "--device", "cuda", "--batch", "1", "32",
                           "--paths", "fp32 eager (reference)", "bf16", "--repeats", "5",
                           "--json", str(out / "forward.json")], 90),
        ("train-step", [py, "tools/benchmark.py", "train-step", "--config", "configs/vox256.yaml", "--device", "cuda",
                        "--batch", "8", "--repeats", "3",
                        "--set", "loss.backbone=random"], 60),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("device_check_out"))
    parser.add_argument("--wheels", type=Path, default=None, help="folder of wheels for missing test packages")
    parser.add_argument("--fixtures", type=Path, default=None, help="parity fixtures (MRFA_FIXTURES) for parity tests")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for all steps together")
    args = parser.parse_args(argv)

    usable, line = gpu_state()
    if not usable:
        print(f"mrfa device check: no GPU present: {line}. This script checks the CUDA and Triton kernels on a GPU; "
              "on a CPU-only machine run `make test` (it covers both kernels by emulation / interpreter).",
              file=sys.stderr)
        return 2
    print(f"mrfa device check on {line}")
    missing = install_missing(args.wheels)
    if missing:
        print(f"mrfa device check: missing Python packages {missing}; pass --wheels with their wheels", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    report: dict = {"environment": environment(), "steps": []}
    print(json.dumps(report["environment"], indent=1))
    py = sys.executable
    env = {"MRFA_EXT_DIR": str((args.out / "ext").resolve()), "MRFA_EXT_VERBOSE": "1"}
    if args.fixtures:
        env["MRFA_FIXTURES"] = str(args.fixtures.resolve())
    steps = plan(py, args.out)
    for name, cmd, limit in steps:
        left = deadline - time.monotonic()
        if left < 10:
            report["steps"].append({"name": name, "command": cmd, "rc": None, "seconds": 0,
                                    "tail": "not run: the time budget is spent"})
            continue
        report["steps"].append(run_step(name, cmd, min(limit, left), args.out, env))
    (args.out / "device_check.json").write_text(json.dumps(report, indent=1))
    (args.out / "device_check.md").write_text(markdown(report))
    failed = [s["name"] for s in report["steps"] if s["rc"] != 0]
    print(f"\nwrote {args.out / 'device_check.json'} and {args.out / 'device_check.md'}; "
          f"{'all steps passed' if not failed else 'failed or not run: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
