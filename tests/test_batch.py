"""Dataset-scale runs on torchrun (2 processes, gloo, CPU) on generated data: the exact split, a merged report equal
to a one-process run, resume after kill -9 of one rank without redoing finished items, a bad item among good ones,
and a refused resume with another checkpoint; plus ``mrfa animate --pairs``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mrfa
from mrfa.config import load_config
from mrfa.inference.batch import WorkItem, split
from mrfa.media.video import video_info, write_image, write_video

ROOT = Path(__file__).resolve().parents[1]


def _clip(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    base = np.stack([xx * 4, yy * 4, np.full_like(xx, 100 + 20 * seed)], -1).astype(np.float64)
    return np.stack([np.clip(base + 15 * np.sin(t / 4 + seed) + rng.normal(0, 3, base.shape), 0, 255)
                     for t in range(n)]).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("batch")
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    out = {"dir": d}
    for name, seed in (("ckpt", 0), ("other_ckpt", 1)):
        torch.manual_seed(seed)
        out[name] = d / f"{name}.pt"
        mrfa.save_snapshot(out[name], mrfa.build_model(cfg), cfg)
    for split_name, count, frames in (("five", 5, 24), ("one", 1, 12), ("long", 6, 60)):
        folder = d / split_name / "test"
        folder.mkdir(parents=True)
        for i in range(count):
            write_video(folder / f"v{i}.mp4", _clip(frames + 4 * i, i), fps=10)
        out[split_name] = d / split_name
    bad = d / "bad" / "test"
    bad.mkdir(parents=True)
    for i in range(3):
        write_video(bad / f"v{i}.mp4", _clip(10, i), fps=10)
    (bad / "v1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(500))  # a broken video among good ones
    out["bad"] = d / "bad"
    write_image(d / "face.png", _clip(1, 9)[0])
    out["face"] = d / "face.png"
    return out


def _torchrun(*argv: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "mrfa",
            *argv]


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _recon(data, split_name: str, out: Path, ckpt: str = "ckpt", *extra: str) -> list[str]:
    return ["reconstruct", "--checkpoint", str(data[ckpt]), "--data", str(data[split_name]), "--output", str(out),
            "--device", "cpu", "--quiet", "--no-mp4", *extra]


def _comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("seconds",)}


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))}


def test_split_is_exact_and_balanced() -> None:
    items = [WorkItem(f"v{i}", w) for i, w in enumerate([100, 10, 30, 50, 20])]
    shares = [split(items, 2, r) for r in range(2)]
    keys = sorted(it.key for share in shares for it in share)
    assert keys == sorted(it.key for it in items)  # each once, no padding
    loads = [sum(it.weight for it in share) for share in shares]
    assert loads == [110, 100]  # 100 + 10 | 50 + 30 + 20
    assert [len(split(items[:1], 2, r)) for r in range(2)] == [1, 0]
    assert split(items, 1, 0) == items


def test_two_ranks_equal_one_process(data, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert _run([sys.executable, "-m", "mrfa", *_recon(data, "five", one)]).returncode == 0
    proc = _run(_torchrun(*_recon(data, "five", two)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = json.loads((one / "metrics.json").read_text())
    b = json.loads((two / "metrics.json").read_text())
    assert _comparable(a) == _comparable(b)  # per video and overall, bit for bit
    records = _records(two)
    assert sorted(records) == [f"v{i}" for i in range(5)]
    expected = {it.key: r for r in range(2) for it in split(
        [WorkItem(f"v{i}", 24 + 4 * i) for i in range(5)], 2, r)}
    assert {k: rec["rank"] for k, rec in records.items()} == expected  # each item done by its one rank
    assert {rec["rank"] for rec in records.values()} == {0, 1}
    for i in range(5):
        assert len(list((two / "png" / f"v{i}").glob("*.png"))) == 24 + 4 * i


def test_one_item_on_two_ranks(data, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(_torchrun(*_recon(data, "one", out)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = _records(out)
    assert list(records) == ["v0"] and records["v0"]["rank"] == 0
    assert json.loads((out / "metrics.json").read_text())["overall"]["frames"] == 12


def test_kill_one_rank_then_the_same_command_completes_without_redoing(data, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = _torchrun(*_recon(data, "long", out))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    launcher = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not list((out / "records").glob("*.json")):
        time.sleep(0.2)
    assert list((out / "records").glob("*.json")), "no item finished before the deadline"
    children = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    assert children, "no rank process found"
    os.kill(int(children[-1]), signal.SIGKILL)  # kill -9 one rank mid-run
    launcher.wait(timeout=120)
    assert launcher.returncode != 0
    finished = {k: (out / "records" / f"{k}.json").read_bytes() for k in _records(out)}
    assert 0 < len(finished) < 6
    proc = _run(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = _records(out)
    assert sorted(records) == [f"v{i}" for i in range(6)]
    for key, content in finished.items():
        assert (out / "records" / f"{key}.json").read_bytes() == content, f"{key} was redone"
    single = tmp_path / "single"
    assert _run([sys.executable, "-m", "mrfa", *_recon(data, "long", single)]).returncode == 0
    assert _comparable(json.loads((out / "metrics.json").read_text())) == \
        _comparable(json.loads((single / "metrics.json").read_text()))
    assert not [p for p in out.rglob("*") if ".partial-" in p.name]


def test_bad_item_is_recorded_and_the_run_goes_on(data, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(_torchrun(*_recon(data, "bad", out)))
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert [f["item"] for f in report["failed_items"]] == ["v1"]
    assert report["overall"]["videos"] == 2 and report["overall"]["frames"] == 20
    # one line of ours names the item (torchrun itself then reports the non-zero exit with its own block)
    assert any(ln.startswith("mrfa reconstruct: warning: v1 failed: could not open video") for ln in
               proc.stderr.splitlines())


def test_resume_with_another_checkpoint_is_refused(data, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run([sys.executable, "-m", "mrfa", *_recon(data, "one", out)]).returncode == 0
    before = (out / "metrics.json").read_bytes()
    proc = _run(_torchrun(*_recon(data, "one", out, "other_ckpt")))
    assert proc.returncode != 0 and "another checkpoint" in proc.stderr and "--overwrite" in proc.stderr
    assert (out / "metrics.json").read_bytes() == before


def test_animate_pairs_one_output_per_row(data, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    rows = [f"{data['face']},{data['five'] / 'test' / f'v{i}.mp4'}" for i in range(3)]
    pairs.write_text("source,driving,result\n" + "\n".join(f"{r},clip{i}.mp4" for i, r in enumerate(rows)) + "\n")
    out = tmp_path / "anim"
    proc = _run(_torchrun("animate", "--checkpoint", str(data["ckpt"]), "--pairs", str(pairs), "--output", str(out),
                          "--device", "cpu", "--quiet"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert sorted(i["output"] for i in report["items"]) == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]
    for i in range(3):
        assert video_info(out / f"clip{i}.mp4").num_frames == 24 + 4 * i
    before = {p.name: p.read_bytes() for p in (out / "records").glob("*.json")}
    again = _run([sys.executable, "-m", "mrfa", "animate", "--checkpoint", str(data["ckpt"]), "--pairs", str(pairs),
                  "--output", str(out), "--device", "cpu", "--quiet"])
    assert again.returncode == 0  # resumed: every record matched, nothing was redone
    assert {p.name: p.read_bytes() for p in (out / "records").glob("*.json")} == before


def test_evaluate_pairs_two_ranks_equal_one_process(data, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    pairs = tmp_path / "in" / "pairs.csv"  # relative paths would start from its folder, which holds no output
    pairs.write_text("source,driving\n" + "\n".join(
        f"{data['face']},{data['bad'] / 'test' / f'v{i}.mp4'}" for i in range(3)) + "\n")  # v1 is broken
    reports = {}
    for label, launcher in (("one", [sys.executable, "-m", "mrfa"]), ("two", _torchrun()[:-2] + ["-m", "mrfa"])):
        out = tmp_path / label
        proc = _run([*launcher, "evaluate", "--pairs", str(pairs), "--checkpoint", str(data["ckpt"]), "--output",
                     str(out / "cross.json"), "--device", "cpu", "--max-frames", "6"])
        assert proc.returncode == 1, proc.stderr[-3000:]  # the broken pair is reported, the others scored
        reports[label] = json.loads((out / "cross.json").read_text())
    a, b = reports["one"], reports["two"]
    assert [f["row"] for f in a["failed_pairs"]] == [2]
    drop = ("pred", "seconds")
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    assert a["overall"]["videos"] == 2
