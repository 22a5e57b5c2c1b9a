"""Smoke runs of the benchmark tools on the tiny config (they are what the device check and the README run)."""
from __future__ import annotations

import json
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


def test_profile_benchmark_runs(tmp_path: Path) -> None:
    out = _tool("profile", "--config", "configs/tiny.yaml", "--repeats", "1", "--peak-size", "256",
                "--paths", "fp32 eager (reference)", "--speed fastest", "--json", str(tmp_path / "p.json"))
    assert "| refine head 64 px |" in out and "| generator decoder |" in out and "| **forward** |" in out
    assert "matmul peak fp32" in out and "% of the bound" in out
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [r["path"] for r in rows] == ["fp32 eager (reference)", "--speed fastest"]
    assert "refine head 64 px" not in rows[1]["rows"]  # the finest level is not refined


def test_block_clock_accounts_for_the_whole_forward() -> None:
    """Self times add up to the forward's wall time and self FLOPs to the counter's total."""
    import time

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import mrfa

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from bench_profile import OUTSIDE, BlockClock, instrument
    finally:
        sys.path.remove(str(ROOT / "tools"))
    model = mrfa.build_model(mrfa.load_config(ROOT / "configs" / "tiny.yaml")).eval()
    x = torch.rand(1, 3, 64, 64)
    counter = FlopCounterMode(display=False)
    clock = BlockClock(counter.get_total_flops)
    restore = instrument(model, clock)
    with torch.inference_mode(), counter:
        t0 = time.perf_counter()
        clock.open(OUTSIDE)
        model(x, x)
        clock.close()
        wall = time.perf_counter() - t0
    for owner, name, original in restore:
        setattr(owner, name, original)
    assert not clock.stack
    assert abs(sum(clock.seconds.values()) - wall) < 0.05 * wall
    assert abs(sum(clock.gflop.values()) - counter.get_total_flops() / 1e9) < 1e-9
    assert clock.calls["structure encoder (driving)"] == 1 and clock.calls["keypoint detector: HRNet (x2)"] == 2
    assert clock.gflop["generator decoder"] > 0 and clock.seconds["warps (grid_sample)"] > 0
    import torch.nn.functional as F

    assert not hasattr(F.grid_sample, "__wrapped__")  # restored
