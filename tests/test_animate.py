"""Animation / reconstruction API and CLIs: input kinds, outputs, caching, best frame, errors.

Tiny 64 px model on CPU; media are made on the fly with imageio and the imageio-ffmpeg binary (lavfi).
The relative / adapt-scale semantics themselves are checked against the official fixture in test_parity.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch

import mrfa
from mrfa.cli import main as mrfa_main
from mrfa.inference.animate import Animator
from mrfa.inference.best_frame import find_best_frame, normalized_landmarks
from mrfa.media.frames import load_image, square_frame
from mrfa.inference.reconstruct import reconstruct
from mrfa.media.face import FaceDetection, NoFaceError
from mrfa.media.video import read_video, video_info
from mrfa.media.writer import FrameWriter, OutputError, output_kind

ROOT = Path(__file__).resolve().parents[1]
S = 64  # tiny model size


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP spin-waiting makes
    them up to 7x slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return mrfa.build_model(mrfa.load_config(ROOT / "configs" / "tiny.yaml")).eval()


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    mrfa.save_snapshot(path, model, model.config)
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Small inputs of every kind (videos have 5 frames at 10 fps unless noted)."""
    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)  # non-square
    out = {}
    for name, arr, kw in [("jpg", img, {}), ("png", img, {}), ("webp", img, {"lossless": True}),
                          ("grey", img[..., 0], {}), ("rgba", np.dstack([img, np.full(img.shape[:2], 9, np.uint8)]), {}),
                          ("png16", (img[..., 0].astype(np.uint16) * 257), {})]:
        suffix = {"grey": "png", "rgba": "png", "png16": "png"}.get(name, name)
        out[name] = d / f"source_{name}.{suffix}"
        iio.imwrite(out[name], arr, plugin="pillow", **kw)
    src = "testsrc=size=72x64:rate=10"
    ffmpeg("-f", "lavfi", "-i", src, "-frames:v", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "d.mp4"))
    ffmpeg("-f", "lavfi", "-i", src, "-frames:v", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "d.mov"))
    ffmpeg("-f", "lavfi", "-i", src, "-frames:v", "5", "-c:v", "libvpx-vp9", str(d / "d.webm"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=10", "-f", "lavfi", "-i", "sine=frequency=440",
           "-frames:v", "5", "-t", "0.5", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(d / "audio.mp4"))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440", "-t", "0.5", "-c:a", "aac", str(d / "audio_only.mp4"))
    frames = read_video(d / "d.mp4")
    iio.imwrite(d / "d.gif", frames, plugin="pillow", duration=100, loop=0)
    (d / "folder").mkdir()
    for t, f in enumerate(frames):
        iio.imwrite(d / "folder" / f"{t}.png", f, plugin="pillow")
    out.update(mp4=d / "d.mp4", mov=d / "d.mov", webm=d / "d.webm", gif=d / "d.gif", folder=d / "folder",
               audio=d / "audio.mp4", audio_only=d / "audio_only.mp4")
    (d / "empty").mkdir()
    out["empty"] = d / "empty"
    (d / "corrupt.mp4").write_bytes(b"\x00not a video" * 50)
    out["corrupt_video"] = d / "corrupt.mp4"
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8 broken jpeg" * 10)
    out["corrupt_image"] = d / "corrupt.jpg"
    (d / "bad_folder").mkdir()  # frame 3 of 5 is not an image: fails half-way through the animation
    for t, f in enumerate(frames):
        if t == 3:
            (d / "bad_folder" / f"{t}.png").write_bytes(b"broken")
        else:
            iio.imwrite(d / "bad_folder" / f"{t}.png", f, plugin="pillow")
    out["bad_folder"] = d / "bad_folder"
    return out


def animate_cli(ckpt: Path, source: Path, driving: Path, output: Path, *extra: str) -> int:
    return mrfa_main(["animate", "--checkpoint", str(ckpt), "--source", str(source), "--driving", str(driving),
                      "--output", str(output), "--device", "cpu", "--quiet", *extra])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


class FakeDetector:
    """Face backend stand-in: the landmarks of a frame are looked up from its mean grey level."""

    name = "fake"

    def __init__(self, table: dict[int, np.ndarray], box: tuple[float, float, float, float] = (0.35, 0.3, 0.65, 0.6)):
        self.table, self.box = table, box

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        lm = self.table.get(int(round(float(image.mean()))))
        if lm is None:
            return []
        h, w = image.shape[:2]
        box = np.array([self.box[0] * w, self.box[1] * h, self.box[2] * w, self.box[3] * h])
        return [FaceDetection(box=box, score=1.0, raw_box=box, landmarks=lm)]


# ------------------------------------------------------------------------------------------ Python API
def test_animate_matches_model_and_caches_source(model):
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    drv = rng.integers(0, 256, (7, S, S, 3), dtype=np.uint8)
    animator = Animator(model, device="cpu", batch_size=3)
    out = np.stack(list(animator.animate(src, drv, adapt_scale=True)))
    assert out.shape == (7, S, S, 3) and out.dtype == np.uint8
    s = torch.from_numpy(src).permute(2, 0, 1)[None].float() / 255
    d = torch.from_numpy(drv).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = model.animate(s, d, d[:1], relative=True, adapt_scale=True).prediction
    assert np.abs(out.astype(int) - Animator.to_uint8(ref).astype(int)).max() <= 1
    list(animator.animate(src, drv[:2], relative=False))  # same source: the cached encoding is reused
    assert animator.source_encodings == 1
    list(animator.animate(src[::-1].copy(), drv[:2]))
    assert animator.source_encodings == 2
    with torch.no_grad():
        absolute = model.animate(s, d[:2], d[:1], relative=False).prediction
    got = np.stack(list(Animator(model, batch_size=1).animate(src, drv[:2], relative=False)))
    assert np.abs(got.astype(int) - Animator.to_uint8(absolute).astype(int)).max() <= 1


def test_best_frame_is_the_reference(model):
    rng = np.random.default_rng(2)
    src = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    drv = rng.integers(0, 256, (5, S, S, 3), dtype=np.uint8)
    animator = Animator(model, batch_size=2)
    out = np.stack(list(animator.animate(src, iter(list(drv)), best_frame=3)))  # one-shot iterator is buffered
    assert animator.reference_frame == 3
    s = torch.from_numpy(src).permute(2, 0, 1)[None].float() / 255
    d = torch.from_numpy(drv).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = model.animate(s, d, d[3:4]).prediction
    assert np.abs(out.astype(int) - Animator.to_uint8(ref).astype(int)).max() <= 1
    with pytest.raises(ValueError, match="past the end"):
        list(animator.animate(src, drv, best_frame=9))


def test_find_best_frame_by_normalised_landmarks(model):
    lm = np.random.default_rng(3).normal(size=(68, 2)) * 20 + 100
    table = {200: lm, 10: lm + np.random.default_rng(4).normal(size=(68, 2)) * 5,
             20: lm * 1.7 + 33,  # same shape, other scale and position: distance 0 after normalisation
             30: lm + np.random.default_rng(5).normal(size=(68, 2)) * 2}
    frames = [np.full((S, S, 3), v, np.uint8) for v in (10, 0, 30, 20, 10)]  # grey 0: no face
    source = np.full((S, S, 3), 200, np.uint8)
    det = FakeDetector(table)
    assert np.allclose(normalized_landmarks(lm * 1.7 + 33), normalized_landmarks(lm))
    assert find_best_frame(source, frames, det) == 3
    animator = Animator(model)
    list(animator.animate(source, np.stack(frames), find_best_frame=True, detector=det))
    assert animator.reference_frame == 3
    with pytest.raises(NoFaceError, match="source"):
        find_best_frame(np.zeros((S, S, 3), np.uint8), frames, det)
    with pytest.raises(NoFaceError, match="any driving frame"):
        find_best_frame(source, [np.zeros((S, S, 3), np.uint8)] * 2, det)


def test_reconstruct_api_matches_forward(model):
    video = np.random.default_rng(6).integers(0, 256, (5, S, S, 3), dtype=np.uint8)
    animator = Animator(model, batch_size=2)
    preds = np.stack([p for p, _ in animator.reconstruct_frames(video)])
    d = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = model(d[:1].expand(5, -1, -1, -1), d).prediction.permute(0, 2, 3, 1).numpy()
    assert np.abs(preds - ref).max() < 1e-4
    assert animator.source_encodings == 1
    frames = list(animator.reconstruct(video))
    assert len(frames) == 5 and frames[0].dtype == np.uint8


@pytest.mark.parametrize("kind", ["jpg", "png", "webp", "grey", "rgba", "png16"])
def test_source_image_kinds(media, kind):
    img = load_image(media[kind])
    assert img.shape == (48, 80, 3) and img.dtype == np.uint8
    ref = load_image(media["png"])
    if kind in ("png", "webp", "rgba"):
        assert np.array_equal(img, ref)  # lossless; alpha dropped
    elif kind in ("grey", "png16"):
        assert np.array_equal(img[..., 1], ref[..., 0])  # grey replicated; 16-bit scaled to 8 bits
    assert square_frame(img, S).shape == (S, S, 3)


# ------------------------------------------------------------------------------------------ CLI: inputs / outputs
@pytest.mark.parametrize("kind", ["mp4", "mov", "webm", "gif", "folder"])
def test_cli_driving_kinds(ckpt, media, tmp_path, kind):
    out = tmp_path / "out.mp4"
    assert animate_cli(ckpt, media["jpg"], media[kind], out, "--batch-size", "2") == 0
    info = video_info(out)
    assert (info.num_frames, info.width, info.height) == (5, S, S)
    assert info.fps == pytest.approx(25.0 if kind == "folder" else 10.0)
    assert not info.has_audio
    assert leftovers(tmp_path) == ["out.mp4"]


def test_cli_audio_fps_and_output_kinds(ckpt, media, tmp_path):
    assert animate_cli(ckpt, media["png"], media["audio"], tmp_path / "a.mp4") == 0
    info = video_info(tmp_path / "a.mp4")
    assert info.has_audio and info.fps == pytest.approx(10.0) and info.num_frames == 5
    assert animate_cli(ckpt, media["png"], media["audio"], tmp_path / "b.mov", "--no-audio", "--fps", "7.5") == 0
    info = video_info(tmp_path / "b.mov")
    assert not info.has_audio and info.fps == pytest.approx(7.5)
    assert animate_cli(ckpt, media["png"], media["mp4"], tmp_path / "c.gif", "--absolute") == 0
    assert video_info(tmp_path / "c.gif").num_frames == 5
    assert animate_cli(ckpt, media["png"], media["mp4"], tmp_path / "frames", "--best-frame", "2") == 0
    frames = sorted((tmp_path / "frames").iterdir())
    assert [p.name for p in frames][:2] == ["0000000.png", "0000001.png"] and len(frames) == 5
    assert iio.imread(frames[0]).shape == (S, S, 3)
    assert animate_cli(ckpt, media["png"], media["mp4"], tmp_path / "vis.mp4", "--visualize") == 0
    assert video_info(tmp_path / "vis.mp4").width == 3 * S
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_cli_crop_and_paste_back(ckpt, media, tmp_path, monkeypatch):
    import mrfa.media.face as face

    lm = np.random.default_rng(7).normal(size=(68, 2))
    table = {v: lm for v in range(256)}  # a "face" in every image
    monkeypatch.setattr(face, "choose_detector", lambda name="auto", device="cpu": FakeDetector(table))
    out = tmp_path / "pasted"
    assert animate_cli(ckpt, media["png"], media["mp4"], out, "--crop", "--paste-back", "--find-best-frame") == 0
    src = load_image(media["png"])  # 48 x 80
    frames = [iio.imread(p) for p in sorted(out.iterdir())]
    assert len(frames) == 5 and frames[0].shape == src.shape
    # box = centre (40, 21.6) +- 1.2 * 24 / 2 -> columns ~26..54: everything left of it is the untouched photo
    assert np.array_equal(frames[0][:, :20], src[:, :20]) and np.array_equal(frames[0][:, 60:], src[:, 60:])
    assert not np.array_equal(frames[0][:, 30:50], src[:, 30:50])
    assert animate_cli(ckpt, media["png"], media["mp4"], tmp_path / "vis.mp4", "--crop", "source",
                       "--paste-back", "--visualize") == 0
    assert video_info(tmp_path / "vis.mp4").width == 3 * S + 2 * round(80 * S / 48 / 2)


# ------------------------------------------------------------------------------------------ CLI: errors
@pytest.mark.parametrize("case,pattern", [
    ("missing_source", "source image not found"),
    ("missing_driving", "video not found"),
    ("missing_checkpoint", "checkpoint not found"),
    ("corrupt_source", "could not read the source image"),
    ("corrupt_driving", "could not open video"),
    ("empty_driving", "contains no frames"),
    ("audio_only_driving", "holds only audio"),
    ("image_as_driving", "is an image; expected a video"),
    ("video_as_source", "is a video; expected one image"),
    ("wrong_kind_checkpoint", "is not an MRFA checkpoint"),
    ("text_checkpoint", "is not a readable PyTorch checkpoint"),
    ("bad_frame_midway", "could not decode image"),
    ("bad_output_suffix", "cannot write output format"),
    ("no_face_for_crop", "no face was found in source"),
    ("no_face_for_best_frame", "no face landmarks were found in the source image"),
    ("cuda_unavailable", "CUDA is not available"),
])
def test_cli_errors(ckpt, media, tmp_path, capsys, monkeypatch, case, pattern):
    import mrfa.media.face as face

    if case == "cuda_unavailable" and torch.cuda.is_available():
        pytest.skip("CUDA is available")
    monkeypatch.setattr(face, "choose_detector", lambda name="auto", device="cpu": FakeDetector({}))  # no faces
    source, driving, checkpoint = media["jpg"], media["mp4"], ckpt
    if case == "missing_source":
        source = tmp_path / "nope.jpg"
    elif case == "missing_driving":
        driving = tmp_path / "nope.mp4"
    elif case == "missing_checkpoint":
        checkpoint = tmp_path / "nope.pt"
    elif case == "corrupt_source":
        source = media["corrupt_image"]
    elif case == "corrupt_driving":
        driving = media["corrupt_video"]
    elif case == "empty_driving":
        driving = media["empty"]
    elif case == "audio_only_driving":
        driving = media["audio_only"]
    elif case == "image_as_driving":
        driving = media["png"]
    elif case == "video_as_source":
        source = media["mp4"]
    elif case == "wrong_kind_checkpoint":
        checkpoint = tmp_path / "other.pt"
        torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, checkpoint)
    elif case == "text_checkpoint":
        checkpoint = tmp_path / "notes.pt"
        checkpoint.write_text("not a checkpoint")
    elif case == "bad_frame_midway":
        driving = media["bad_folder"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / ("result.avi" if case == "bad_output_suffix" else "result.mp4")
    extra = {"bad_frame_midway": ("--batch-size", "1"), "no_face_for_crop": ("--crop",),
             "no_face_for_best_frame": ("--find-best-frame",)}.get(case, ())
    if case == "cuda_unavailable":
        extra = ("--device", "cuda")
    assert animate_cli(checkpoint, source, driving, output, *extra) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("mrfa animate: error:") and pattern in err[-1], err
    assert leftovers(out_dir) == []  # nothing that looks finished, no temporary files


# ------------------------------------------------------------------------------------------ writer
def test_frame_writer_is_atomic(tmp_path):
    frame = np.zeros((10, 11, 3), np.uint8)  # odd width: padded for H.264
    with pytest.raises(RuntimeError):
        with FrameWriter(tmp_path / "x.mp4", fps=5) as w:
            w.write(frame)
            raise RuntimeError("interrupted")
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="no frames"):
        with FrameWriter(tmp_path / "y.gif"):
            pass
    assert leftovers(tmp_path) == []
    with FrameWriter(tmp_path / "x.mp4", fps=5) as w:
        w.write(frame)
        with pytest.raises(ValueError, match="size"):
            w.write(np.zeros((12, 12, 3), np.uint8))
    assert video_info(tmp_path / "x.mp4").width == 12
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "0000005.png").write_bytes(b"old")  # an earlier mrfa frame folder: only when asked
    with pytest.raises(OutputError, match="another run"):
        with FrameWriter(tmp_path / "f") as w:
            w.write(frame)
    assert leftovers(tmp_path / "f") == ["0000005.png"]
    with FrameWriter(tmp_path / "f", overwrite=True) as w:  # ... and then replaced as a whole
        w.write(frame)
    assert leftovers(tmp_path / "f") == ["0000000.png"]
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "notes.txt").write_bytes(b"mine")  # a folder mrfa did not write is never replaced
    with pytest.raises(OutputError, match="notes.txt"):
        with FrameWriter(tmp_path / "g", overwrite=True) as w:
            w.write(frame)
    assert leftovers(tmp_path / "g") == ["notes.txt"] and leftovers(tmp_path) == ["f", "g", "x.mp4"]
    assert [output_kind(p) for p in ("a.mp4", "a.MOV", "b.gif", "dir", "dir/")] == \
        ["video", "video", "gif", "frames", "frames"]


# ------------------------------------------------------------------------------------------ reconstruction
def test_reconstruct_dataset_and_cli(model, ckpt, media, tmp_path, capsys):
    root = tmp_path / "data"
    (root / "test").mkdir(parents=True)
    (root / "test" / "a#x#0#5.mp4").write_bytes(media["mp4"].read_bytes())
    (root / "test" / "b.mp4").mkdir()  # FOMM-style frame folder named like a video
    for p in media["folder"].iterdir():
        (root / "test" / "b.mp4" / f"{int(p.stem):07d}.png").write_bytes(p.read_bytes())
    png = reconstruct(model, root, tmp_path / "out", device="cpu", batch_size=2, max_frames=4)
    assert png == tmp_path / "out" / "png"
    assert sorted(p.name for p in png.iterdir()) == ["a#x#0#5", "b"]
    frames = sorted((png / "b").iterdir())
    assert len(frames) == 4 and iio.imread(frames[0]).dtype == np.uint8
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["overall"]["frames"] == 8 and set(report["per_video"]) == {"a#x#0#5", "b"}
    assert set(report["overall"]["mean"]) == {"l1", "psnr", "ssim"}
    # per-video L1 equals the metric recomputed from the model output
    video = np.stack([square_frame(f, S) for f in read_video(root / "test" / "b.mp4")[:4]])
    d = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        pred = model(d[:1].expand(4, -1, -1, -1), d).prediction
    l1 = (pred - d).abs().mean().item()
    assert report["per_video"]["b"]["mean"]["l1"] == pytest.approx(l1, rel=1e-4)
    assert video_info(tmp_path / "out" / "mp4" / "b.mp4").width == 3 * S
    # the keyword form used by `mrfa evaluate --checkpoint`, and the CLI
    assert reconstruct(checkpoint=ckpt, data_root=root, out_dir=tmp_path / "o2", device="cpu", max_videos=1,
                       max_frames=2, write_mp4=False) == tmp_path / "o2" / "png"
    assert mrfa_main(["reconstruct", "--checkpoint", str(ckpt), "--data", str(root), "--output",
                      str(tmp_path / "o3"), "--device", "cpu", "--max-frames", "2", "--quiet"]) == 0
    assert "2 videos, 4 frames" in capsys.readouterr().out
    assert mrfa_main(["reconstruct", "--checkpoint", str(ckpt), "--data", str(tmp_path / "none"), "--output",
                      str(tmp_path / "o4"), "--quiet"]) == 1
    assert "dataset root not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ tools
def test_bench_per_frame_smoke(model):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_animate", Path(__file__).parents[1] / "tools" / "bench_animate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    measure_per_frame = bench.measure_per_frame

    r = measure_per_frame(model, "cpu", batch_size=2, frames=2, repeats=1)
    assert r["cached_ms_per_frame"] > 0 and r["recompute_ms_per_frame"] > 0


def test_tools_animate_wrapper():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "animate.py"), "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "--paste-back" in proc.stdout and "--find-best-frame" in proc.stdout
