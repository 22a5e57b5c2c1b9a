"""Head pose, expression and cross-identity protocol: ground truth, self-evaluation, bad pair rows."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from real_data import real_path

import mrfa
from mrfa.commands import evaluate as ev
from mrfa.media.face import backend_status
from mrfa.metrics.pose import (
    MODEL,
    RIGID,
    correlation,
    expression_error,
    eye_openness,
    head_pose,
    mouth_openness,
    pose_errors,
    project,
    rotation_from_euler,
    similarity_align,
)

ROOT = Path(__file__).resolve().parents[1]
needs_dlib = pytest.mark.skipif(backend_status("dlib") is not None, reason="dlib-bin / face models not installed")


def _landmarks(yaw: float, pitch: float, roll: float, size: int = 256, depth: float = 450.0) -> np.ndarray:
    """[68, 2] landmarks whose rigid points are the generic face seen at a known pose (others: their mean)."""
    uv = project(MODEL, rotation_from_euler(yaw, pitch, roll), np.array([4.0, -6.0, depth]), size, (size / 2, size / 2))
    lm = np.tile(uv.mean(axis=0), (68, 1))
    lm[RIGID] = uv
    return lm


@pytest.mark.parametrize("pose", [(0, 0, 0), (25, -10, 8), (-40, 15, -20), (10, 30, 0), (55, 5, -5)])
def test_head_pose_recovers_a_known_rotation(pose):
    fit = head_pose(_landmarks(*pose), (256, 256))
    assert np.allclose((fit.yaw, fit.pitch, fit.roll), pose, atol=0.05) and fit.rms_px < 1e-3
    rng = np.random.default_rng(sum(pose) + 100)
    noisy = _landmarks(*pose) + rng.normal(0, 0.5, (68, 2))  # half-pixel landmark noise
    fit = head_pose(noisy, (256, 256))
    assert np.allclose((fit.yaw, fit.pitch, fit.roll), pose, atol=2.0)


def test_pose_error_between_two_known_poses():
    a, b = head_pose(_landmarks(20, -5, 3), (256, 256)), head_pose(_landmarks(-10, 10, -7), (256, 256))
    err = pose_errors(a, b)
    assert err["yaw_error"] == pytest.approx(30, abs=0.1) and err["pitch_error"] == pytest.approx(15, abs=0.1)
    assert err["roll_error"] == pytest.approx(10, abs=0.1) and err["pose_error"] == pytest.approx(55 / 3, abs=0.1)
    assert pose_errors(a, a)["pose_error"] == 0.0
    with pytest.raises(ValueError, match=r"\[68, 2\] landmarks"):
        head_pose(np.zeros((5, 2)), (256, 256))


@needs_dlib
def test_head_pose_reads_a_real_in_plane_rotation():
    from skimage.transform import rotate

    from mrfa.media.face import make_landmark_backend
    from mrfa.media.video import read_image

    path = real_path("fomm_demo_old/05.png")
    image, backend = read_image(path), make_landmark_backend("dlib")
    base = head_pose(backend.analyze(image, landmarks=True).landmarks, image.shape[:2])
    for angle in (8.0, -12.0):  # skimage rotates counter-clockwise: the head's roll changes by -angle
        turned = (rotate(image, angle, mode="edge") * 255).round().astype(np.uint8)
        lm = backend.analyze(turned, landmarks=True).landmarks
        err = pose_errors(head_pose(lm, image.shape[:2]), base)
        assert err["roll_error"] == pytest.approx(abs(angle), abs=2.0), err
        assert err["yaw_error"] < 2.0 and err["pitch_error"] < 2.0, err


def test_expression_error_and_openness():
    rng = np.random.default_rng(0)
    lm = rng.uniform(50, 200, (68, 2))
    lm[36:42] += [-30, 0]
    lm[42:48] += [30, 0]  # eyes apart: a positive inter-ocular distance
    theta = np.radians(20)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = (lm - 100) @ rot.T * 1.3 + [7, -4]  # same expression, other in-plane pose and size
    assert expression_error(lm, lm) < 1e-12 and expression_error(moved, lm) < 1e-9
    np.testing.assert_allclose(similarity_align(moved, lm), lm, atol=1e-9)
    opened = lm.copy()
    opened[56:59, 1] += 15
    opened[65:68, 1] += 15
    assert expression_error(opened, lm) > 0.01
    assert mouth_openness(opened) != mouth_openness(lm) and eye_openness(moved) == pytest.approx(eye_openness(lm))
    series = [0.1, 0.3, 0.2, 0.5, 0.4]
    assert correlation(series, series) == pytest.approx(1.0)
    assert correlation(series, [-x for x in series]) == pytest.approx(-1.0)
    assert correlation([0.2] * 5, series) is None and correlation(series[:2], series[:2]) is None
    assert correlation([0.1, None, 0.3, 0.2, 0.4], [0.1, 0.9, 0.3, 0.2, 0.4]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------- protocol
def _cli(argv: list[str]) -> tuple[int, dict, argparse.Namespace]:
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    args = parser.parse_args(argv)
    code = ev.run(args)
    report = json.loads(args.output.read_text()) if args.output.exists() else {}
    return code, report, args


def _clip(name: str, frames: int) -> Path:
    return real_path(name)


@needs_dlib
def test_a_clip_against_itself_scores_zero_motion_error_and_identity_one(tmp_path):
    clip = _clip("fomm_demo_old/04.mp4", 6)
    code, rep, _ = _cli(["--pred", str(clip), "--gt", str(clip), "--output", str(tmp_path / "self.json"),
                         "--metrics", "akd,aed,csim,pose,expression,jitter,flicker", "--max-frames", "6"])
    assert code == 0
    mean = rep["overall"]["mean"]
    assert mean["pose_error"] == 0.0 and mean["expression_error"] < 1e-12 and mean["akd"] == 0.0
    assert mean["csim"] == pytest.approx(1.0) and mean["aed"] == pytest.approx(0.0, abs=1e-6)
    block = next(iter(rep["temporal"]["per_video"].values()))
    assert block["jitter"] == block["jitter_ref"] and block["flicker"] == block["flicker_ref"]
    assert block["mouth_open_corr"] in (None, pytest.approx(1.0)) and block["frames_without_face"] == 0
    assert len(block["pose_track"]["out"]) == 6 and block["pose_track"]["out"] == block["pose_track"]["ref"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = mrfa.load_config(ROOT / "configs" / "tiny.yaml")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    mrfa.save_snapshot(path, mrfa.build_model(cfg), cfg)
    return path


@needs_dlib
def test_pairs_with_checkpoint_animate_and_bad_rows_are_reported(tmp_path, tiny_ckpt, capsys):
    import imageio.v3 as iio

    portrait = _clip("fomm_demo_old/05.png", 1)
    drv = _clip("fomm_demo_old/04.mp4", 4)
    data = tmp_path / "data"
    data.mkdir()
    (data / "src.png").write_bytes(portrait.read_bytes())
    (data / "drv.mp4").write_bytes(drv.read_bytes())
    (data / "broken.mp4").write_bytes(b"not a video at all")
    iio.imwrite(data / "src2.png", iio.imread(portrait)[::-1].copy())
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("source,driving\nsrc.png,drv.mp4\nmissing.png,drv.mp4\nsrc2.png,broken.mp4\n")
    out = tmp_path / "eval" / "cross.json"
    code, rep, _ = _cli(["--pairs", str(pairs), "--data", str(data), "--checkpoint", str(tiny_ckpt),
                         "--output", str(out), "--max-frames", "4", "--smooth"])
    err = capsys.readouterr().err
    assert code == 1, err  # some pairs failed: non-zero, but the others are scored and the report is written
    assert [f["row"] for f in rep["failed_pairs"]] == [2, 3]
    assert "missing.png does not exist" in rep["failed_pairs"][0]["error"]
    assert "broken.mp4" in rep["failed_pairs"][1]["error"]
    assert "pair 2 (missing.png, drv.mp4) failed" in err and "2 of 3 pairs failed" in err
    assert rep["overall"]["frames"] == 4 and "csim_source" in rep["overall"]["mean"]
    assert "pose_error" in rep["overall"]["mean"] and set(rep["not_computed"]) == {"auh", "fid"}
    assert max(p.name for p in (tmp_path / "eval" / "animations" / "drv-src").iterdir()) == "0000003.png"
    empty = tmp_path / "empty.csv"
    empty.write_text("source,driving\n")
    code, _, _ = _cli(["--pairs", str(empty), "--data", str(data), "--checkpoint", str(tiny_ckpt),
                       "--output", str(tmp_path / "e.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "has no pairs" in err[0] and not (tmp_path / "e.json").exists()


def test_default_pair_list(tmp_path):
    import imageio.v3 as iio

    from mrfa.metrics.evaluate import default_pairs

    for name in ("b", "a", "c"):
        iio.imwrite(tmp_path / f"{name}.png", np.zeros((8, 8, 3), np.uint8))
    rows = default_pairs(tmp_path, max_pairs=5)
    assert [(r["source"], r["driving"]) for r in rows] == [("a.png", "b.png"), ("b.png", "c.png"), ("c.png", "a.png")]
    assert len(default_pairs(tmp_path, max_pairs=2)) == 2
    (tmp_path / "one").mkdir()
    iio.imwrite(tmp_path / "one" / "a.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="at least 2 videos"):
        default_pairs(tmp_path / "one")
