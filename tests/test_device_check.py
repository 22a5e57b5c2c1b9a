"""tools/device_check.py on a machine without a GPU: one clear sentence, non-zero exit, nothing run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run the real device check instead")
def test_device_check_refuses_without_gpu(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "device_check.py"), "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 2
    assert "no GPU present" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_device_check_runs_its_steps_and_writes_the_report(tmp_path, monkeypatch):
    """The orchestration with stand-in steps: each step's exit code and output land in the JSON and Markdown, a
    failing step makes the exit non-zero, and a spent budget leaves the rest 'not run' (no GPU needed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("device_check", ROOT / "tools" / "device_check.py")
    dc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dc)
    monkeypatch.setattr(dc, "gpu_state", lambda: (True, "stand-in GPU"))
    monkeypatch.setattr(dc, "install_missing", lambda wheels: [])
    monkeypatch.setattr(dc, "environment", lambda: {"gpu": "stand-in"})
    py = sys.executable
    steps = [("ok", [py, "-c", "print('all good')"], 30), ("fails", [py, "-c", "import sys; sys.exit(3)"], 30),
             ("slow", [py, "-c", "import time; time.sleep(30)"], 1), ("late", [py, "-c", "print(1)"], 30)]
    monkeypatch.setattr(dc, "plan", lambda py, out: steps)
    out = tmp_path / "out"
    assert dc.main(["--out", str(out), "--budget", "12"]) == 1
    report = json.loads((out / "device_check.json").read_text())
    rcs = {s["name"]: s["rc"] for s in report["steps"]}
    assert rcs["ok"] == 0 and rcs["fails"] == 3 and rcs["slow"] == 124  # the step's own limit stopped it
    assert "all good" in report["steps"][0]["tail"] and (out / "ok.log").read_text().strip() == "all good"
    md = (out / "device_check.md").read_text()
    assert "| ok | 0 |" in md and "| fails | 3 |" in md and "stand-in" in md
    assert rcs["late"] in (0, None)  # run if budget was left, else recorded as not run
