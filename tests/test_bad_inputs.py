"""Bad input, hostile files and interruptions: every command answers with one clear line and loses nothing.

Table-driven. Each case runs one ``mrfa`` command in-process on tiny media made here and asserts:
the exit code; for errors, the last stderr line is ``mrfa CMD: error: ...`` and names the thing; no traceback;
every input file is byte-identical afterwards (checksums); no existing file changed unless ``--overwrite`` was
given; no partial output (hidden ``.partial-*`` siblings) is left behind. Interruptions (SIGINT / SIGTERM) run in
a subprocess.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import mrfa
from mrfa.checkpoint import CheckpointError
from mrfa.cli import main as mrfa_main
from mrfa.config import config_to_dict, load_config
from mrfa.media.video import write_video
from mrfa.media.writer import FrameWriter

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


# ------------------------------------------------------------------------------------------ media made here
def _png_with_size(path: Path, width: int, height: int) -> None:
    """A valid 1x1 PNG whose header claims ``width x height`` (a decompression bomb, header only)."""
    iio.imwrite(path, np.zeros((1, 1, 3), np.uint8), extension=".png")
    data = bytearray(path.read_bytes())
    start = data.index(b"IHDR")
    data[start + 4:start + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[start:start + 17])) & 0xFFFFFFFF
    data[start + 17:start + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def _frames(n: int, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([np.stack([(xx * 4 + t * 8) % 256, (yy * 4) % 256, np.full_like(xx, 128)], -1)
                     for t in range(n)]).astype(np.uint8)


class Hostile:
    """A pickle that would create a file if it were ever unpickled with weights_only=False."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    cfg = load_config(TINY)
    model = mrfa.build_model(cfg)
    m: dict[str, Path] = {"dir": d, "ckpt": d / "tiny.pt"}
    mrfa.save_snapshot(m["ckpt"], model, cfg)
    m["src"] = d / "source.png"
    iio.imwrite(m["src"], _frames(1, 96)[0])
    m["src16"] = d / "source16.png"
    iio.imwrite(m["src16"], (_frames(1, 32)[0, ..., 0].astype(np.uint16) * 257))
    m["grey"] = d / "grey.png"
    iio.imwrite(m["grey"], _frames(1, 64)[0, ..., 0])
    m["drv"] = d / "driving.mp4"
    write_video(m["drv"], _frames(12), fps=10)
    m["long"] = d / "long.mp4"
    write_video(m["long"], _frames(400), fps=25)
    with FrameWriter(d / "faststart.mp4", fps=10) as w:  # moov first, as phones and the web write them
        for frame in _frames(40):
            w.write(frame)
    data = (d / "faststart.mp4").read_bytes()
    m["trunc"] = d / "truncated.mp4"
    m["trunc"].write_bytes(data[: int(len(data) * 0.6)])
    m["empty_mp4"] = d / "empty.mp4"
    m["empty_mp4"].write_bytes(b"")
    m["corrupt"] = d / "corrupt.png"
    m["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    m["bomb"] = d / "bomb.png"
    _png_with_size(m["bomb"], 50_000, 50_000)
    m["empty_ckpt"] = d / "empty.pt"
    m["empty_ckpt"].write_bytes(b"")
    m["random_ckpt"] = d / "random.pt"
    m["random_ckpt"].write_bytes(os.urandom(4096))
    huge = config_to_dict(cfg)
    huge["model"]["generator"].update(block_expansion=1024, max_features=4096)
    huge["model"]["dense_motion"].update(block_expansion=1024, max_features=4096)
    m["huge_ckpt"] = d / "huge.pt"
    torch.save({"format": "mrfa-snapshot/1", "config": huge, "model": {}}, m["huge_ckpt"])
    m["hostile_ckpt"] = d / "hostile.pt"
    m["hostile_marker"] = d / "PWNED"
    with open(m["hostile_ckpt"], "wb") as f:
        pickle.dump({"model": Hostile(str(m["hostile_marker"]))}, f)
    nan_model = mrfa.build_model(cfg)
    with torch.no_grad():
        for p in nan_model.parameters():
            p.fill_(float("nan"))
    m["nan_ckpt"] = d / "nan.pt"
    mrfa.save_snapshot(m["nan_ckpt"], nan_model, cfg)
    m["list_yaml"] = d / "list.yaml"
    m["list_yaml"].write_text("- a\n- b\n")
    data_root = d / "data" / "test"
    data_root.mkdir(parents=True)
    write_video(data_root / "clip.mp4", _frames(6), fps=10)
    m["data"] = d / "data"
    return m


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _partials(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".partial-" in p.name)


# ------------------------------------------------------------------------------------------ the table
@dataclass
class Case:
    name: str
    argv: Callable[[dict[str, Path], Path], list[str]]  # (media, output folder) -> mrfa argv
    code: int  # expected exit code
    says: tuple[str, ...] = ()  # substrings of the last stderr line (errors) or of stderr (warnings)
    setup: Optional[Callable[[dict[str, Path], Path], None]] = None  # prepare existing outputs in the folder
    keeps: tuple[str, ...] = ()  # files in the output folder that must not change
    absent: tuple[str, ...] = ()  # outputs that must not exist afterwards
    never: tuple[str, ...] = ("Traceback",)
    warns: tuple[str, ...] = field(default_factory=tuple)  # warning lines expected (exit 0 cases)


def _anim(m: dict[str, Path], out: Path, *extra: str, src: str = "src", drv: str = "drv", ckpt: str = "ckpt",
          output: str = "out.mp4") -> list[str]:
    return ["animate", "--checkpoint", str(m[ckpt]), "--source", str(m[src]), "--driving", str(m[drv]),
            "--output", str(out / output) if not output.startswith("/") else output, "--quiet", "--device", "cpu",
            *extra]


def _mine(m: dict[str, Path], out: Path) -> None:
    (out / "holiday").mkdir()
    (out / "holiday" / "photo.jpg").write_bytes(b"precious")
    (out / "holiday" / "sub").mkdir()
    (out / "holiday" / "sub" / "notes.txt").write_bytes(b"precious too")


def _existing(name: str, content: bytes = b"old result") -> Callable[[dict[str, Path], Path], None]:
    return lambda m, out: (out / name).write_bytes(content)


def _copy_drv(m: dict[str, Path], out: Path) -> None:
    (out / "drv.mp4").write_bytes(m["drv"].read_bytes())


def _old_frames(m: dict[str, Path], out: Path) -> None:
    (out / "frames").mkdir()
    for i in range(3):
        iio.imwrite(out / "frames" / f"{i:07d}.png", np.zeros((4, 4, 3), np.uint8))


def _train(m: dict[str, Path], out: Path, *sets: str, config: Optional[Path] = None) -> list[str]:
    return ["train", "--config", str(config or TINY), "--output", str(out / "run"), "--dry-run",
            *(["--set", *sets] if sets else [])]


CASES = [
    # --- animate: outputs (the data-loss cases first)
    Case("animate_onto_foreign_folder", lambda m, o: _anim(m, o, output=str(o / "holiday") + "/"), 1,
         ("holiday", "did not write", "never deleted"), setup=_mine,
         keeps=("holiday/photo.jpg", "holiday/sub/notes.txt")),
    Case("animate_existing_file", lambda m, o: _anim(m, o), 1, ("out.mp4", "already exists", "--overwrite"),
         setup=_existing("out.mp4"), keeps=("out.mp4",)),
    Case("animate_existing_file_overwrite", lambda m, o: _anim(m, o, "--overwrite"), 0, ("wrote",),
         setup=_existing("out.mp4")),
    Case("animate_old_frames_no_overwrite", lambda m, o: _anim(m, o, output=str(o / "frames")), 1,
         ("earlier mrfa output", "--overwrite"), setup=_old_frames, keeps=("frames/0000000.png",)),
    Case("animate_old_frames_overwrite", lambda m, o: _anim(m, o, "--overwrite", output=str(o / "frames")), 0,
         ("wrote",), setup=_old_frames),
    Case("animate_output_is_driving", lambda m, o: _anim(m, o, "--overwrite", drv="copy", output=str(o / "drv.mp4")),
         1, ("would overwrite the input",), setup=_copy_drv, keeps=("drv.mp4",)),
    Case("animate_output_is_source", lambda m, o: _anim(m, o, "--overwrite", output=str(m["src"])), 1,
         ("would overwrite the input", "source.png")),
    Case("animate_bad_suffix", lambda m, o: _anim(m, o, output="out.xyz"), 1, ("'.xyz'",), absent=("out.xyz",)),
    # --- animate: inputs
    Case("animate_missing_source", lambda m, o: _anim(m, o) [:4] + [str(o / "nope.png")] + _anim(m, o)[5:], 1,
         ("nope.png", "not found"), absent=("out.mp4",)),
    Case("animate_missing_driving", lambda m, o: _anim(m, o)[:6] + [str(o / "nope.mp4")] + _anim(m, o)[7:], 1,
         ("nope.mp4",), absent=("out.mp4",)),
    Case("animate_corrupt_source", lambda m, o: _anim(m, o, src="corrupt"), 1, ("corrupt.png", "could not read"),
         never=("Traceback", "imageio[pyav]", "plugin")),
    Case("animate_bomb_source", lambda m, o: _anim(m, o, src="bomb"), 1, ("bomb.png", "50000x50000", "Mpx"),
         never=("Traceback", "plugin pillow")),
    Case("animate_driving_is_image", lambda m, o: _anim(m, o, drv="src"), 1, ("is an image",)),
    Case("animate_empty_driving", lambda m, o: _anim(m, o, drv="empty_mp4"), 1, ("empty.mp4",),
         never=("Traceback", "ffmpeg version", "configuration:")),
    Case("animate_truncated_driving", lambda m, o: _anim(m, o, drv="trunc"), 0, ("wrote",),
         warns=("truncated",)),
    Case("animate_fps_zero", lambda m, o: _anim(m, o, "--fps", "0"), 1, ("--fps", "between 0.01 and 1000")),
    Case("animate_fps_huge", lambda m, o: _anim(m, o, "--fps", "1e9"), 1, ("--fps", "between 0.01 and 1000")),
    Case("animate_fps_tiny", lambda m, o: _anim(m, o, "--fps", "1e-9"), 1, ("--fps", "between 0.01 and 1000"),
         absent=("out.mp4",)),
    Case("animate_batch_zero", lambda m, o: _anim(m, o, "--batch-size", "0"), 1, ("--batch-size",)),
    Case("animate_source_16bit", lambda m, o: _anim(m, o, src="src16"), 0, ("wrote",), warns=("upscaled",)),
    Case("animate_source_grey", lambda m, o: _anim(m, o, src="grey"), 0, ("wrote",)),
    Case("animate_best_frame_past_end", lambda m, o: _anim(m, o, "--best-frame", "99"), 1, ("past the end",),
         absent=("out.mp4",)),
    Case("animate_unknown_device", lambda m, o: _anim(m, o)[:-2] + ["--device", "tpu"], 1, ("tpu",)),
    # --- checkpoints (animate, reconstruct, convert, train --resume, the Python API)
    Case("animate_empty_checkpoint", lambda m, o: _anim(m, o, ckpt="empty_ckpt"), 1, ("empty.pt", "empty (0 bytes)"),
         absent=("out.mp4",)),
    Case("animate_random_checkpoint", lambda m, o: _anim(m, o, ckpt="random_ckpt"), 1,
         ("random.pt", "not a readable PyTorch checkpoint"), never=("Traceback", "weights_only", "WeightsUnpickler")),
    Case("animate_huge_config_checkpoint", lambda m, o: _anim(m, o, ckpt="huge_ckpt"), 1,
         ("huge.pt", "parameters", "refusing")),
    Case("animate_hostile_pickle", lambda m, o: _anim(m, o, ckpt="hostile_ckpt"), 1,
         ("hostile.pt", "never unpickles")),
    Case("animate_nan_weights", lambda m, o: _anim(m, o, ckpt="nan_ckpt"), 1, ("NaN", "nothing was written"),
         absent=("out.mp4",), warns=("NaN / inf",)),
    Case("animate_checkpoint_is_folder", lambda m, o: _anim(m, o)[:2] + [str(m["dir"])] + _anim(m, o)[3:], 1,
         ("is a folder",)),
    Case("reconstruct_empty_checkpoint", lambda m, o: ["reconstruct", "--checkpoint", str(m["empty_ckpt"]), "--data",
                                                       str(m["data"]), "--output", str(o / "rec"), "--quiet"], 1,
         ("empty (0 bytes)",), absent=("rec",)),
    Case("reconstruct_into_foreign_folder", lambda m, o: ["reconstruct", "--checkpoint", str(m["ckpt"]), "--data",
                                                          str(m["data"]), "--output", str(o / "holiday"), "--quiet"],
         1, ("did not write",), setup=_mine, keeps=("holiday/photo.jpg", "holiday/sub/notes.txt")),
    Case("reconstruct_missing_data", lambda m, o: ["reconstruct", "--checkpoint", str(m["ckpt"]), "--data",
                                                   str(o / "nothing"), "--output", str(o / "rec"), "--quiet"], 1,
         ("nothing",)),
    Case("reconstruct_ok_then_again", lambda m, o: ["reconstruct", "--checkpoint", str(m["ckpt"]), "--data",
                                                    str(m["data"]), "--output", str(o / "rec"), "--quiet",
                                                    "--no-mp4"], 0, ("frames",)),
    Case("convert_empty_checkpoint", lambda m, o: ["convert", str(m["empty_ckpt"]), str(o / "c.pt")], 1,
         ("empty (0 bytes)",), absent=("c.pt",)),
    Case("convert_onto_itself", lambda m, o: ["convert", str(m["ckpt"]), str(m["ckpt"])], 1,
         ("would overwrite the input",)),
    Case("train_resume_empty_state", lambda m, o: ["train", "--resume", str(m["empty_ckpt"]), "--dry-run"], 1,
         ("empty",)),
    # --- crop
    Case("crop_onto_its_input", lambda m, o: ["crop", "--input", str(o / "drv.mp4"), "--output", str(o / "drv.mp4"),
                                              "--overwrite"], 1, ("would overwrite the input",), setup=_copy_drv,
         keeps=("drv.mp4",)),
    Case("crop_unknown_suffix", lambda m, o: ["crop", "--input", str(m["src"]), "--output", str(o / "x.xyz")], 1,
         ("x.xyz", "image file"), absent=("x.xyz",)),
    Case("crop_corrupt_image", lambda m, o: ["crop", "--input", str(m["corrupt"]), "--output", str(o / "c.png"),
                                             "--detector", "dlib"], 1, ("corrupt.png",),
         never=("Traceback", "imageio[pyav]")),
    Case("crop_bomb_image", lambda m, o: ["crop", "--input", str(m["bomb"]), "--output", str(o / "c.png"),
                                          "--detector", "dlib"], 1, ("bomb.png", "Mpx")),
    Case("crop_empty_video", lambda m, o: ["crop", "--input", str(m["empty_mp4"]), "--output", str(o / "c.mp4"),
                                           "--detector", "dlib"], 1, ("empty.mp4",),
         never=("Traceback", "ffmpeg version", "configuration:"), absent=("c.mp4",)),
    Case("crop_existing_output", lambda m, o: ["crop", "--input", str(m["src"]), "--output", str(o / "c.png")], 1,
         ("already exists",), setup=_existing("c.png"), keeps=("c.png",)),
    # --- evaluate
    Case("evaluate_missing_pred", lambda m, o: ["evaluate", "--pred", str(o / "nope"), "--gt", str(m["data"]),
                                                "--output", str(o / "e.json")], 2, ("does not exist",),
         absent=("e.json",)),
    Case("evaluate_existing_report", lambda m, o: ["evaluate", "--pred", str(m["data"] / "test"), "--gt",
                                                   str(m["data"] / "test"), "--output", str(o / "e.json"),
                                                   "--metrics", "l1"], 2, ("already exists",),
         setup=_existing("e.json", b"{}"), keeps=("e.json",)),
    # --- train configs
    Case("train_batch_size_zero", lambda m, o: _train(m, o, "train.batch_size=0"), 1, ("train.batch_size", ">= 1")),
    Case("train_batch_size_negative", lambda m, o: _train(m, o, "train.batch_size=-2"), 1,
         ("train.batch_size", ">= 1"), never=("Traceback", "lower")),
    Case("train_checkpoint_every_zero", lambda m, o: _train(m, o, "train.checkpoint_every=0"), 1,
         ("train.checkpoint_every",)),
    Case("train_betas_one_value", lambda m, o: _train(m, o, "train.betas=[0.5]"), 1, ("train.betas", "2 values")),
    Case("train_num_kp_zero", lambda m, o: _train(m, o, "model.num_kp=0"), 1, ("model.num_kp",)),
    Case("train_max_steps_negative", lambda m, o: _train(m, o, "train.max_steps=-1"), 1, ("train.max_steps",),
         absent=("run",)),
    Case("train_nan_loss_weight", lambda m, o: _train(m, o, "loss.equivariance_value=.nan"), 1,
         ("loss.equivariance_value", "finite")),
    Case("train_yaml_list_with_set", lambda m, o: _train(m, o, "train.lr=0.1", config=m["list_yaml"]), 1,
         ("list.yaml", "mapping")),
    Case("train_unknown_key", lambda m, o: _train(m, o, "train.bogus=1"), 1, ("train.bogus",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, media: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if case.setup is not None:
        case.setup(media, out)
    if case.name == "animate_output_is_driving":
        media = {**media, "copy": out / "drv.mp4"}
    inputs_before = _checksums(media["dir"])
    kept_before = {k: hashlib.sha256((out / k).read_bytes()).hexdigest() for k in case.keeps}
    code = mrfa_main(case.argv(media, out))
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == case.code, f"exit {code}, stderr: {err[-2000:]}"
    for bad in case.never:
        assert bad not in err, f"{bad!r} in stderr: {err[-2000:]}"
    if case.code != 0:
        assert lines and lines[-1].startswith(f"mrfa {case.argv(media, out)[0]}: error: "), err[-2000:]
        for word in case.says:
            assert word in lines[-1], f"{word!r} not in {lines[-1]!r}"
    for word in case.warns:
        assert any(": warning: " in ln and word in ln for ln in lines), f"no warning with {word!r}: {err[-2000:]}"
    assert _checksums(media["dir"]) == inputs_before, "an input file changed"
    assert not media["hostile_marker"].exists(), "a hostile pickle was executed"
    for name, digest in kept_before.items():
        assert (out / name).exists() and hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    for name in case.absent:
        assert not (out / name).exists(), f"{name} was written"
    assert _partials(out) == [], "partial outputs left behind"


def test_repeat_reconstruct_resumes_and_other_options_need_overwrite(media: dict[str, Path], tmp_path: Path,
                                                                     capsys) -> None:
    argv = ["reconstruct", "--checkpoint", str(media["ckpt"]), "--data", str(media["data"]), "--output",
            str(tmp_path / "rec"), "--quiet", "--no-mp4"]
    assert mrfa_main(argv) == 0
    record = tmp_path / "rec" / "records" / "clip.json"
    before = record.read_bytes()
    assert mrfa_main(argv) == 0 and record.read_bytes() == before  # the same command resumes: nothing redone
    assert mrfa_main(argv + ["--truncate-png"]) == 1
    assert "other options" in capsys.readouterr().err and record.read_bytes() == before
    assert mrfa_main(argv + ["--truncate-png", "--overwrite"]) == 0 and record.read_bytes() != before


def test_python_api_refuses_hostile_and_huge(media: dict[str, Path]) -> None:
    from mrfa.inference.animate import Animator

    for key, words in (("huge_ckpt", "parameters"), ("empty_ckpt", "empty"), ("hostile_ckpt", "never unpickles")):
        with pytest.raises(CheckpointError, match=words):
            Animator.from_checkpoint(media[key], device="cpu")
    assert not media["hostile_marker"].exists()


def test_early_training_error_leaves_no_run_folder(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    code = mrfa_main(["train", "--config", str(TINY), "--output", str(run), "--set",
                      f"data.root={tmp_path / 'no-such-data'}", "data.synthetic=false"])
    assert code == 1 and "no-such-data" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_removes_partial_output(sig: int, media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    cmd = [sys.executable, "-m", "mrfa", *_anim(media, tmp_path, drv="long", output=str(out))[0:],
           "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".result.partial-*")) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("mrfa animate: interrupted")
    assert not out.exists() and list(tmp_path.glob(".result*")) == []


def test_stale_partials_of_a_killed_run_are_removed(media: dict[str, Path], tmp_path: Path) -> None:
    """A SIGKILLed writer leaves its hidden temporary file; the next write of the same output removes it."""
    stale = tmp_path / ".out.partial-999999-deadbeef.mp4"  # PID 999999 does not run
    stale.write_bytes(b"half a video")
    live = tmp_path / f".out.partial-{os.getpid()}-cafecafe.mp4"  # a live writer's file is left alone
    live.write_bytes(b"being written")
    assert mrfa_main(_anim(media, tmp_path)) == 0
    assert not stale.exists() and live.exists()


def test_flow_accuracy_accepts_prior_only(tmp_path: Path) -> None:
    """Every tool accepts every model variant: the flow-accuracy evaluation of a prior-only model."""
    from mrfa.builders import build_model
    from mrfa.data.synthetic import generate_dataset, motion_clips
    from mrfa.metrics.flow import evaluate_flow

    cfg = load_config(TINY, ["model.refinement.prior_only=true"])
    generate_dataset(tmp_path / "syn", num_train=1, num_test=1, num_frames=3, size=64)
    result = evaluate_flow(build_model(cfg), motion_clips(tmp_path / "syn", "test", max_videos=1))
    assert np.isfinite(result["prior"]) and np.isfinite(result["refined_last_level_in"])


def test_huge_source_is_reduced_in_steps() -> None:
    """An 8000 px photo is box-reduced before the anti-aliased resize (defect 14); ordinary inputs are untouched."""
    from skimage.transform import resize

    from mrfa.media.crop import CropBox, apply_crop

    yy, xx = np.mgrid[0:4096, 0:4096]
    img = np.stack([np.sin(xx / 300) * 100 + 128, np.cos(yy / 250) * 100 + 128, (xx + yy) % 512 / 2],
                   -1).astype(np.uint8)
    ref = np.clip(np.rint(resize(img, (256, 256), order=1, anti_aliasing=True, preserve_range=True)), 0, 255)
    out = apply_crop(img, CropBox(0, 0, 4096), 256).astype(float)
    assert 10 * np.log10(255 ** 2 / ((out - ref) ** 2).mean()) > 35
    small = img[:2048, :2048]  # 8x: the exact FOMM resize, bit for bit
    ref_small = np.clip(np.rint(resize(small, (256, 256), order=1, anti_aliasing=True, preserve_range=True)), 0, 255)
    assert np.array_equal(apply_crop(small, CropBox(0, 0, 2048), 256), ref_small.astype(np.uint8))


def test_resumed_run_does_not_duplicate_log_lines(tmp_path: Path) -> None:
    """Steps logged after the last training state (a killed run) are dropped when the run resumes from it."""
    import json as _json

    from mrfa.training.logging import _truncate_log

    log = tmp_path / "log.jsonl"
    log.write_text("".join(_json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 8)) + '{"step": 8, "lo')
    _truncate_log(log, 5)  # the state was saved at step 5; 6, 7 and the torn line 8 will be logged again
    assert [_json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_failed_audio_mux_is_reported_not_claimed(tmp_path: Path) -> None:
    """A driving 'video' whose audio cannot be copied: the writer says so and does not claim audio."""
    with FrameWriter(tmp_path / "o.mp4", fps=5, audio_from=tmp_path / "missing.mp4") as w:
        for frame in _frames(3):
            w.write(frame)
    assert (tmp_path / "o.mp4").exists() and not w.audio_muxed and "missing.mp4" in (w.audio_error or "")


# ------------------------------------------------------------------------------------------ nothing lost, round two
def _noise(n: int, size: int = 96, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MB tmpfs (needs permission to mount; skipped with the reason otherwise)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("mounting a small tmpfs is not permitted here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_never_reported_as_success(small_disk: Path) -> None:
    """Free space just around the video's size hits the case where only ffmpeg's trailer fails: the write must fail
    and the previous output must stay, at every fill level."""
    import shutil as _shutil

    from mrfa.media.ffmpeg import count_packets
    from mrfa.media.writer import WriteError

    frames = _noise(40)
    probe = small_disk / "probe.mp4"
    with FrameWriter(probe, fps=10) as w:
        for f in frames:
            w.write(f)
    size = probe.stat().st_size
    probe.unlink()
    outcomes = set()
    for slack in range(-24 * 1024, 12 * 1024, 2048):
        for p in small_disk.iterdir():
            p.unlink()
        (small_disk / "out.mp4").write_bytes(b"previous good output")
        filler = _shutil.disk_usage(small_disk).free - size - slack
        (small_disk / "filler").write_bytes(b"\0" * max(filler, 0))
        try:
            with FrameWriter(small_disk / "out.mp4", fps=10, overwrite=True) as w:
                for f in frames:
                    w.write(f)
        except WriteError as err:
            assert "disk is full" in str(err), err
            assert (small_disk / "out.mp4").read_bytes() == b"previous good output"
            outcomes.add("refused")
        else:
            assert count_packets(small_disk / "out.mp4") == len(frames), f"success claimed at slack {slack}"
            outcomes.add("written")
        assert _partials(small_disk) == []
    assert outcomes == {"refused", "written"}, outcomes


def test_hidden_entries_are_not_mrfa_output(media: dict[str, Path], tmp_path: Path, capsys) -> None:
    only_hidden = tmp_path / "hidden"
    only_hidden.mkdir()
    (only_hidden / ".env").write_text("SECRET=1")
    assert mrfa_main(_anim(media, tmp_path, output=str(only_hidden) + "/")) == 1
    assert ".env" in capsys.readouterr().err
    frames = tmp_path / "frames"
    _old_frames(media, tmp_path)
    (frames / ".git").mkdir()
    assert mrfa_main(_anim(media, tmp_path, "--overwrite", output=str(frames))) == 1
    assert ".git" in capsys.readouterr().err
    assert (only_hidden / ".env").read_text() == "SECRET=1" and (frames / ".git").is_dir()
    assert sorted(p.name for p in frames.iterdir()) == [".git", "0000000.png", "0000001.png", "0000002.png"]


def test_training_never_writes_over_a_folder_it_does_not_own(tmp_path: Path, capsys) -> None:
    run = tmp_path / "mine"
    run.mkdir()
    config = run / "config.yaml"  # the user's config, inside the folder given as --output
    config.write_text(TINY.read_text() + "# my notes\n")
    before = config.read_bytes()
    assert mrfa_main(["train", "--config", str(config), "--output", str(run), "--dry-run"]) == 1
    assert "already holds files" in capsys.readouterr().err and config.read_bytes() == before
    other = tmp_path / "other"  # --resume A --output B: B holds another run
    other.mkdir()
    (other / "training-state.pt").write_bytes(b"run B's state")
    (other / "snapshot.pt").write_bytes(b"run B's snapshot")
    src = tmp_path / "a"
    src.mkdir()
    (src / "training-state.pt").write_bytes(b"run A's state")
    assert mrfa_main(["train", "--config", str(TINY), "--resume", str(src), "--output", str(other)]) == 1
    assert "already holds a training state" in capsys.readouterr().err
    assert (other / "training-state.pt").read_bytes() == b"run B's state"
    assert (other / "snapshot.pt").read_bytes() == b"run B's snapshot"
    assert not (other / "config.yaml").exists()


def test_refused_resume_keeps_the_run_config(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("the run's config\n")
    (run / "training-state.pt").write_bytes(b"not a training state")
    assert mrfa_main(["train", "--config", str(TINY), "--resume", str(run)]) == 1
    capsys.readouterr()
    assert (run / "config.yaml").read_text() == "the run's config\n"


def test_outputs_never_land_inside_inputs(media: dict[str, Path], tmp_path: Path, capsys) -> None:
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "clip.mp4").write_bytes(media["drv"].read_bytes())
    (gt / "notes.json").write_text("{}")
    assert mrfa_main(["evaluate", "--pred", str(gt), "--gt", str(gt), "--output", str(gt / "notes.json"),
                      "--overwrite"]) == 2
    assert "inside the input folder" in capsys.readouterr().err and (gt / "notes.json").read_text() == "{}"
    assert mrfa_main(["reconstruct", "--checkpoint", str(media["ckpt"]), "--data", str(media["data"]), "--output",
                      str(media["data"] / "rec"), "--quiet", "--no-mp4"]) == 1
    assert "inside the input folder" in capsys.readouterr().err and not (media["data"] / "rec").exists()


def test_reconstruct_overwrite_replaces_the_folder_whole(media: dict[str, Path], tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    argv = ["reconstruct", "--checkpoint", str(media["ckpt"]), "--data", str(media["data"]), "--output", str(rec),
            "--quiet", "--no-mp4"]
    assert mrfa_main(argv) == 0
    (rec / "png" / "old-clip").mkdir()  # a video of an earlier run that the new one does not cover
    (rec / "png" / "old-clip" / "0000000.png").write_bytes((rec / "png" / "clip" / "0000000.png").read_bytes())
    assert mrfa_main(argv + ["--overwrite"]) == 0
    assert sorted(p.name for p in (rec / "png").iterdir()) == ["clip"]


def test_second_concurrent_writer_refuses(tmp_path: Path) -> None:
    from mrfa.media.writer import OutputError, atomic_write_text

    first, second = FrameWriter(tmp_path / "o.mp4", fps=5), FrameWriter(tmp_path / "o.mp4", fps=5)
    for w, value in ((first, 0), (second, 255)):
        w.write(np.full((16, 16, 3), value, np.uint8))
    first.close()
    kept = (tmp_path / "o.mp4").read_bytes()
    with pytest.raises(OutputError, match="another run"):
        second.close()
    assert (tmp_path / "o.mp4").read_bytes() == kept and _partials(tmp_path) == []
    a, b = FrameWriter(tmp_path / "f", fps=5), FrameWriter(tmp_path / "f", fps=5)  # frame folders too
    for w in (a, b):
        w.write(np.zeros((8, 8, 3), np.uint8))
    a.close()
    with pytest.raises(OutputError, match="another run"):
        b.close()
    atomic_write_text(tmp_path / "r.json", "1")
    with pytest.raises(OutputError, match="another run"):
        atomic_write_text(tmp_path / "r.json", "2")
    assert (tmp_path / "r.json").read_text() == "1" and _partials(tmp_path) == []


def test_audio_mux_keeps_every_frame(tmp_path: Path) -> None:
    from mrfa.media.ffmpeg import count_packets, exe, file_arg

    clip = tmp_path / "talk.mp4"  # 25 frames at 25 fps with an audio track 10 ms shorter than the video
    subprocess.run([exe(), "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=64x64:r=25:d=1", "-f", "lavfi",
                    "-i", "sine=f=440:d=0.99", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    file_arg(clip)], check=True)
    with FrameWriter(tmp_path / "out.mp4", fps=25, audio_from=clip) as w:
        for f in _noise(25, 64):
            w.write(f)
    assert w.audio_muxed and count_packets(tmp_path / "out.mp4") == 25


def test_file_names_are_never_ffmpeg_urls(tmp_path: Path, monkeypatch) -> None:
    from mrfa.media.video import read_video, video_info

    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "a.mp4", _frames(12), fps=10)
    write_video(tmp_path / "b.mp4", _frames(12), fps=10)
    odd = tmp_path / "concat:a.mp4|b.mp4"
    write_video(odd, _frames(5), fps=10)
    assert video_info(Path("concat:a.mp4|b.mp4")).num_frames == 5
    assert len(read_video("concat:a.mp4|b.mp4")) == 5


def test_fifo_and_devices_are_refused_not_waited_on(media: dict[str, Path], tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "driving.mp4"
    os.mkfifo(fifo)
    signal.alarm(60)  # a regression would block on the pipe forever
    try:
        assert mrfa_main(["animate", "--checkpoint", str(media["ckpt"]), "--source", str(media["src"]),
                          "--driving", str(fifo), "--output", str(tmp_path / "o.mp4"), "--quiet"]) == 1
        assert "named pipe (FIFO)" in capsys.readouterr().err
        (tmp_path / "in").mkdir()
        pairs = tmp_path / "in" / "pairs.csv"
        os.mkfifo(pairs)
        assert mrfa_main(["evaluate", "--pairs", str(pairs), "--pred", str(media["data"]), "--data",
                          str(media["data"]), "--output", str(tmp_path / "m.json")]) == 2
        assert "named pipe (FIFO)" in capsys.readouterr().err
        assert mrfa_main(["animate", "--checkpoint", "/dev/zero", "--source", str(media["src"]), "--driving",
                          str(media["drv"]), "--output", str(tmp_path / "o.mp4"), "--quiet"]) == 1
        assert "is a device" in capsys.readouterr().err
    finally:
        signal.alarm(0)


def test_config_bombs_are_refused_by_shape(tmp_path: Path, capsys) -> None:
    bomb = tmp_path / "bomb.yaml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}] "
                                                     for i in range(8)]
    bomb.write_text("\n".join(lines) + "\n")
    assert mrfa_main(["train", "--config", str(bomb), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "aliases" in err and len(err) < 500
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    assert mrfa_main(["train", "--config", str(big), "--dry-run"]) == 1
    assert "too large" in capsys.readouterr().err
    dup = tmp_path / "dup.yaml"
    dup.write_text("model:\n  image_size: 64\nmodel:\n  image_size: 128\n")
    assert mrfa_main(["train", "--config", str(dup), "--dry-run"]) == 1
    assert "appears twice" in capsys.readouterr().err
    assert mrfa_main(["train", "--config", str(TINY), "--set", "train.betas=[0.5,", "--dry-run"]) == 1
    assert "neither a Python nor a YAML literal" in capsys.readouterr().err
    shared: list = [0]
    for _ in range(40):
        shared = [shared, shared]
    cfg = config_to_dict(load_config(TINY))
    cfg["model"]["extra"] = shared
    ckpt = tmp_path / "shared.pt"
    torch.save({"format": "mrfa-snapshot/1", "config": cfg, "model": {}}, ckpt)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="more than"):
        mrfa.load_checkpoint(ckpt)
    assert time.perf_counter() - start < 30  # refused by shape; the expanded tree would take minutes


def test_long_output_names_fit_their_temporary_name(tmp_path: Path) -> None:
    name = "n" * 246 + ".mp4"  # a valid 250-byte name
    with FrameWriter(tmp_path / name, fps=5) as w:
        w.write(np.zeros((8, 8, 3), np.uint8))
    assert (tmp_path / name).is_file() and _partials(tmp_path) == []


def test_pairs_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    from mrfa.metrics.evaluate import read_pairs

    pairs = tmp_path / "pairs.csv"
    pairs.write_bytes("\ufeffsource,driving\na.png,b.mp4\n".encode("utf-8"))
    assert read_pairs(pairs) == [{"source": "a.png", "driving": "b.mp4"}]


def test_checkpoint_asking_for_more_memory_than_the_machine_is_refused(media: dict[str, Path], monkeypatch) -> None:
    import mrfa.checkpoint as ck

    need = ck.estimate_forward_bytes(load_config(TINY).model)
    monkeypatch.setattr(ck, "total_memory_bytes", lambda: need // 2)
    with pytest.raises(CheckpointError, match="working memory"):
        mrfa.load_checkpoint(media["ckpt"])
    big = load_config(REPO / "configs" / "vox256.yaml").model
    big.image_size = 1024  # the official model at 1024 px: about 30 GiB per frame
    assert ck.estimate_forward_bytes(big) > 25 * 2**30


def test_a_1000_fps_video_keeps_its_rate(tmp_path: Path) -> None:
    from mrfa.media.ffmpeg import exe, file_arg
    from mrfa.media.video import video_info

    fast = tmp_path / "fast.mp4"  # ffmpeg's probe prints "1k fps" for it
    subprocess.run([exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=s=64x64:r=1000:d=0.02", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", file_arg(fast)], check=True)
    assert video_info(fast).fps == 1000.0


def test_unbounded_option_values_are_refused(media: dict[str, Path], tmp_path: Path, capsys) -> None:
    src = str(media["src"])
    assert mrfa_main(["crop", "--input", src, "--output", str(tmp_path / "c.png"), "--size", "30000"]) == 1
    assert "--size must be between 16 and 4096" in capsys.readouterr().err
    base = ["evaluate", "--pred", str(media["data"]), "--gt", str(media["data"]), "--output", str(tmp_path / "m.json")]
    for extra, words in ((["--dlib-upsample", "9"], "--dlib-upsample must be between 0 and 3"),
                         (["--max-frames", "-1"], "--max-frames must be >= 1"),
                         (["--psnr-cap", "nan"], "--psnr-cap must be a positive number"),
                         (["--result-pattern", "{source.__class__}"], "may only use {source} and {driving}"),
                         (["--result-pattern", "{source:>999999999}"], "may only use {source} and {driving}"),
                         (["--result-pattern", "{foo}"], "may only use {source} and {driving}")):
        assert mrfa_main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
    assert mrfa_main(["evaluate", "--pred", str(media["data"]), "--gt", str(media["data"]), "--output",
                      str(tmp_path / "m2.json"), "--checkpoint", str(media["ckpt"]), "--data", str(media["data"]),
                      "--reconstruct-fn", "os:system"]) == 2
    assert "only functions of mrfa" in capsys.readouterr().err


def test_gif_bombs_are_refused_and_gifs_stream(tmp_path: Path) -> None:
    from PIL import Image

    from mrfa.media.video import VideoReadError, iter_video_frames, video_info

    bomb = tmp_path / "bomb.gif"
    Image.new("P", (16000, 16000)).save(bomb)  # a few hundred KB that decode to 256 MB per frame
    with pytest.raises(VideoReadError, match="Mpx"):
        video_info(bomb)
    with pytest.raises(VideoReadError, match="Mpx"):
        next(iter_video_frames(bomb))
    small = tmp_path / "small.gif"
    frames = [Image.fromarray(f) for f in _frames(5, 32)]
    frames[0].save(small, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert len(list(iter_video_frames(small))) == 5
    assert Image.MAX_IMAGE_PIXELS is not None  # reading never switches Pillow's own check off for the process


def test_cmyk_jpeg_is_read_in_its_colours(tmp_path: Path) -> None:
    from PIL import Image

    from mrfa.media.video import read_image

    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    assert np.abs(read_image(path).astype(int) - rgb).mean() < 8


def test_foreign_files_as_checkpoints_are_named(media: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n" * 10)
    for path, kind in ((media["src"], "a PNG image"), (text, "a text file")):
        with pytest.raises(CheckpointError, match=kind):
            mrfa.load_checkpoint(path)


def test_audio_only_file_as_driving_is_named(media: dict[str, Path], tmp_path: Path, capsys) -> None:
    from mrfa.media.ffmpeg import exe, file_arg

    audio = tmp_path / "speech.mp4"
    subprocess.run([exe(), "-v", "error", "-f", "lavfi", "-i", "sine=d=0.5", "-c:a", "aac", file_arg(audio)],
                   check=True)
    assert mrfa_main(["animate", "--checkpoint", str(media["ckpt"]), "--source", str(media["src"]), "--driving",
                      str(audio), "--output", str(tmp_path / "o.mp4"), "--quiet"]) == 1
    assert "holds only audio" in capsys.readouterr().err


def test_more_inputs_get_one_sentence(media: dict[str, Path], tmp_path: Path, capsys) -> None:
    # a training state without its progress
    run = tmp_path / "run"
    run.mkdir()
    state = {"format": "mrfa-state/1", "config": config_to_dict(load_config(TINY)), "model": {}}
    torch.save(state, run / "training-state.pt")
    assert mrfa_main(["train", "--resume", str(run)]) == 1
    err = capsys.readouterr().err
    assert "damaged training state" in err and "Traceback" not in err
    # --cache-mb that is not a finite number of megabytes
    for value in ("inf", "nan"):
        assert mrfa_main(_anim(media, tmp_path, "--cache-mb", value)) == 1
        assert "--cache-mb must be a number" in capsys.readouterr().err
    # a key with a look-alike letter (Cyrillic 'а' in 'image_size') shows its code points
    bad = tmp_path / "lookalike.yaml"
    bad.write_text("model:\n  im\u0430ge_size: 64\n")
    assert mrfa_main(["train", "--config", str(bad), "--dry-run"]) == 1
    assert "U+0430" in capsys.readouterr().err
    # convert --config with one of our YAMLs reads it as ours (its own error, not 'missing official key')
    ours = tmp_path / "ours.yaml"
    ours.write_text(TINY.read_text() + "model_typo: 1\n")
    assert mrfa_main(["convert", str(media["ckpt"]), str(tmp_path / "c.pt"), "--config", str(ours)]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'model_typo'" in err and "official" not in err
    # an empty --output is named before anything is loaded
    assert mrfa_main(["animate", "--checkpoint", str(media["ckpt"]), "--source", str(media["src"]), "--driving",
                      str(media["drv"]), "--output", "", "--quiet"]) == 1
    assert "--output is empty" in capsys.readouterr().err


def test_bad_thread_count_variable_is_named(media: dict[str, Path], tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert mrfa_main(_anim(media, tmp_path)) == 1
    err = capsys.readouterr().err
    assert "OMP_NUM_THREADS='lots' is not a positive whole number" in err and not (tmp_path / "out.mp4").exists()


def test_dataset_repeats_are_bounded(capsys) -> None:
    assert mrfa_main(["train", "--config", str(TINY), "--set", "data.num_repeats=1000000000", "--dry-run"]) == 1
    assert "'data.num_repeats' must be in [1, 100000]" in capsys.readouterr().err
