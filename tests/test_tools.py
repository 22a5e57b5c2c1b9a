"""Smoke runs of the benchmark tools on the tiny config (they are what the device check and the README run)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(*argv: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), *argv], capture_output=True,
                          text=True, cwd=ROOT, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_train_step_benchmark_runs() -> None:
    out = _tool("train-step", "--config", "configs/tiny.yaml", "--batch", "1", "--repeats", "1",
                "--set", "loss.backbone=random")
    assert "s/step" in out and "batch 1 x 64px" in out


def test_profile_benchmark_runs() -> None:
    out = _tool("profile", "--config", "configs/tiny.yaml", "--repeats", "1", "--top", "3",
                "--paths", "fp32 eager (reference)")
    assert "| convolution |" in out and "| **total** |" in out and "top operators" in out
