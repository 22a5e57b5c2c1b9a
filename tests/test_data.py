"""Tests of the data side: video/image reading, FramesDataset semantics, augmentation, synthetic dataset."""
from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from real_data import REAL_DATA

from mrfa.data.augment import (
    AugmentationParams,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    augment_clip,
    draw_jitter,
    hsv_u8_to_rgb,
    rgb_to_hsv_u8,
)
from mrfa.data.frames_dataset import DatasetRepeater, FramesDataset, SkippedVideoWarning, identity_key
from mrfa.data.synthetic import (
    TEMPLATES,
    generate_dataset,
    load_motion,
    make_identity,
    render_clip,
    sample_trajectory,
    verify_clip,
)
from mrfa.media.video import (
    VideoReadError,
    iter_video_frames,
    read_frames,
    read_image,
    read_video,
    to_rgb_uint8,
    video_info,
    write_frame_folder,
    write_video,
)

VOX_MINI = REAL_DATA / "vox256-mini"


def clip(num_frames: int = 6, h: int = 24, w: int = 24, step: int = 30) -> np.ndarray:
    """uint8 [T, H, W, 3]: a smooth colour gradient, brightened by ``step`` per frame (frames stay distinct
    after H.264)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 80 / w, yy * 80 / h, np.full((h, w), 40.0)], -1)
    return np.stack([np.clip(base + step * t, 0, 255) for t in range(num_frames)]).astype(np.uint8)


def const_clip(num_frames: int, size: int = 16) -> np.ndarray:
    """Frame t is the constant grey 20 * t + 10 (frame index readable from any pixel)."""
    return np.stack([np.full((size, size, 3), 20 * t + 10, np.uint8) for t in range(num_frames)])


def frame_index(chw: np.ndarray) -> int:
    return int(round((float(chw.mean()) * 255 - 10) / 20))


def write_png16(path: Path, array: np.ndarray) -> None:
    """Minimal 16-bit RGB(A) PNG writer (Pillow cannot write 16-bit colour)."""
    h, w, c = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------------ video.py

@pytest.mark.parametrize("kind", ["mp4", "gif", "folder", "strip"])
def test_read_every_video_kind(tmp_path: Path, kind: str) -> None:
    frames = clip()
    if kind == "mp4":
        path = write_video(tmp_path / "v.mp4", frames)
    elif kind == "gif":
        path = write_video(tmp_path / "v.gif", frames)
    elif kind == "folder":
        path = write_frame_folder(tmp_path / "v.mp4", frames)  # FOMM: frame folders are named *.mp4
    else:
        path = tmp_path / "v.png"
        iio.imwrite(path, np.concatenate(list(frames), axis=1))
    video = read_video(path)
    assert video.shape == frames.shape and video.dtype == np.uint8
    err = np.abs(video.astype(int) - frames).mean()
    assert err < {"mp4": 3.0, "gif": 2.0}.get(kind, 1e-9)  # H.264 and the GIF palette are lossy
    info = video_info(path)
    assert info.num_frames == 6 and (info.width, info.height) == (24, 24)
    picked = read_frames(path, [4, 1, 1])
    assert np.abs(picked.astype(int) - frames[[4, 1, 1]]).mean() < 3.0
    assert read_video(path, size=12).shape == (6, 12, 12, 3)
    assert read_frames(path, [5], size=(8, 10)).shape == (1, 8, 10, 3)
    gen = iter_video_frames(path)
    first = next(gen)
    assert first.shape == (24, 24, 3) and first.dtype == np.uint8
    assert 1 + sum(1 for _ in gen) == 6


def test_read_frames_past_end(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", clip(4))
    with pytest.raises(VideoReadError, match="past the end"):
        read_frames(path, [7])
    last = read_frames(path, [3])[0]
    np.testing.assert_array_equal(read_frames(path, [9], clamp=True)[0], last)


def test_image_conversions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    iio.imwrite(tmp_path / "g.png", grey)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(grey[..., None], 3, -1))
    iio.imwrite(tmp_path / "rgba.png", np.dstack([rgb, np.full((8, 8), 9, np.uint8)]))
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)  # alpha dropped, not composited
    iio.imwrite(tmp_path / "la.png", np.dstack([grey, np.full((8, 8), 9, np.uint8)]))
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), np.repeat(grey[..., None], 3, -1))
    g16 = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    iio.imwrite(tmp_path / "g16.png", g16)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png")[..., 1], np.rint(g16 / 257.0).astype(np.uint8))
    c16 = rng.integers(0, 65536, (8, 8, 4), dtype=np.uint16)
    write_png16(tmp_path / "c16.png", c16)
    out = read_image(tmp_path / "c16.png")
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - c16[..., :3] / 257.0).max() <= 1.0
    iio.imwrite(tmp_path / "j.jpg", rgb, quality=95)
    assert read_image(tmp_path / "j.jpg").shape == (8, 8, 3)
    assert to_rgb_uint8(np.array([[0.0, 1.0]], np.float32)).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    assert to_rgb_uint8(np.array([[True]])).max() == 255


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    for fn in (read_video, video_info, lambda p: read_frames(p, [0])):
        with pytest.raises(VideoReadError, match="bad.mp4"):
            fn(bad)
    good = write_video(tmp_path / "trunc.mp4", clip(8))
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # moov atom lost
    with pytest.raises(VideoReadError, match="trunc.mp4"):
        read_video(good)
    (tmp_path / "empty.mp4").mkdir()
    with pytest.raises(VideoReadError, match="empty.mp4.*no frames"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(VideoReadError, match="broken.png"):
        read_image(tmp_path / "broken.png")
    iio.imwrite(tmp_path / "strip.png", np.zeros((10, 25, 3), np.uint8))
    with pytest.raises(VideoReadError, match="not a multiple"):
        read_video(tmp_path / "strip.png")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(VideoReadError, match="unsupported"):
        read_video(tmp_path / "x.txt")


# ------------------------------------------------------------------------------------------------ dataset

def make_tree(root: Path) -> None:
    """train: idA (folder of 8 + gif), idB (mp4), idC (strip), idD corrupt mp4, idE one-frame folder; test: 2."""
    train, test = root / "train", root / "test"
    train.mkdir(parents=True)
    test.mkdir()
    write_frame_folder(train / "idA#one#0001.mp4", const_clip(8))
    write_video(train / "idA#two.gif", const_clip(5))
    write_video(train / "idB#one.mp4", clip(6, 16, 16))
    iio.imwrite(train / "idC#one.png", np.concatenate(list(const_clip(4)), axis=1))
    (train / "idD#bad.mp4").write_bytes(b"not a video at all" * 50)
    write_frame_folder(train / "idE#short.mp4", const_clip(1))
    np.save(train / "idA#one#0001.mp4.motion.npy", np.zeros((8, 16, 16, 2), np.float16))
    (train / "notes.txt").write_text("ignored")
    write_frame_folder(test / "idX#t.mp4", const_clip(5))
    write_video(test / "idY#t.mp4", clip(4, 16, 16))


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    make_tree(tmp_path)
    return tmp_path


def test_dataset_skips_and_counts_bad_videos(tree: Path) -> None:
    with pytest.warns(SkippedVideoWarning) as record:
        ds = FramesDataset(tree, frame_shape=(16, 16, 3), id_sampling=True, seed=0)
    messages = [str(w.message) for w in record if issubclass(w.category, SkippedVideoWarning)]
    assert len(messages) == 2
    assert any("idD#bad.mp4" in m for m in messages) and any("idE#short.mp4" in m for m in messages)
    assert ds.num_skipped == 2 and {s.path.name for s in ds.skipped} == {"idD#bad.mp4", "idE#short.mp4"}
    assert ds.ids == ["idA", "idB", "idC"] and len(ds) == 3
    assert len(ds.videos) == 4  # the motion file and notes.txt are not videos
    for i in range(len(ds)):
        item = ds[i]
        assert item["source"].shape == (3, 16, 16) and item["driving"].dtype == np.float32
        assert 0.0 <= item["source"].min() and item["driving"].max() <= 1.0
        assert identity_key(item["name"]) == ds.ids[i]
    with pytest.raises(IndexError):
        ds[3]


def test_id_sampling_picks_videos_of_the_identity(tree: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVideoWarning)
        ds = FramesDataset(tree, frame_shape=(16, 16, 3), id_sampling=True, seed=3)
        flat = FramesDataset(tree, frame_shape=(16, 16, 3), id_sampling=False, seed=3)
    names = {ds.get_item(0, np.random.default_rng(k))["name"] for k in range(20)}
    assert names == {"idA#one#0001.mp4", "idA#two.gif"}
    assert len(flat) == 4 and [v.name for v in flat.videos][0] == "idA#one#0001.mp4"
    assert identity_key("M2Ohb0FAaJU_1#x", split_len=11) == "M2Ohb0FAaJU"


def test_train_pair_is_sorted_and_reproducible(tree: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVideoWarning)
        ds = FramesDataset(tree, frame_shape=(16, 16, 3), seed=7)
    pairs = [(frame_index(it["source"]), frame_index(it["driving"]))
             for it in (ds.get_item(0, np.random.default_rng(k)) for k in range(40))]  # 8-frame folder
    assert all(0 <= s <= d < 8 for s, d in pairs) and len(set(pairs)) > 10
    a, b = ds[0], ds[0]
    np.testing.assert_array_equal(a["source"], b["source"])

    def pairs_of_epoch(epoch: int) -> list[tuple[int, int]]:
        ds.set_epoch(epoch)
        return [(frame_index(it["source"]), frame_index(it["driving"])) for it in (ds[i] for i in range(len(ds)))]

    epoch0, epoch1 = pairs_of_epoch(0), pairs_of_epoch(1)
    assert epoch0 == pairs_of_epoch(0) and epoch0 != epoch1  # fixed seed: reproducible, new stream per epoch
    ds.set_epoch(0)
    rep = DatasetRepeater(ds, 3)
    assert len(rep) == 12 and rep[5]["name"] == ds.videos[1].name
    draws = {(frame_index(rep[4 * r]["source"]), frame_index(rep[4 * r]["driving"])) for r in range(3)}
    assert len(draws) > 1  # repeats of one item are different pairs


def test_test_mode_and_resize(tree: Path) -> None:
    ds = FramesDataset(tree, frame_shape=(8, 8, 3), is_train=False)
    assert [v.name for v in ds.videos] == ["idX#t.mp4", "idY#t.mp4"]
    item = ds[0]
    assert item["video"].shape == (3, 5, 8, 8) and item["video"].dtype == np.float32 and item["name"] == "idX#t.mp4"
    assert ds[1]["video"].shape == (3, 4, 8, 8)


def test_no_usable_video_raises(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a#1.mp4").write_bytes(b"junk")
    write_frame_folder(tmp_path / "train" / "b#1.mp4", const_clip(1))
    with pytest.warns(SkippedVideoWarning), pytest.raises(ValueError, match=str(tmp_path)):
        FramesDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing_root"):
        FramesDataset(tmp_path / "missing_root")
    with pytest.raises(FileNotFoundError, match="test"):
        FramesDataset(tmp_path, is_train=False)


def test_lazy_fallback_for_video_corrupt_after_probe(tmp_path: Path) -> None:
    train = tmp_path / "train"
    folder = write_frame_folder(train / "idA#1.mp4", const_clip(3))
    write_frame_folder(train / "idB#1.mp4", const_clip(3))
    ds = FramesDataset(tmp_path, frame_shape=(16, 16, 3), id_sampling=True, seed=0)
    assert ds.num_skipped == 0
    for f in folder.iterdir():
        f.write_bytes(b"corrupt")  # damaged after the construction probe
    with pytest.warns(SkippedVideoWarning, match="idA#1.mp4"):
        item = ds[0]
    assert item["name"] == "idB#1.mp4" and ds.num_skipped == 1
    assert ds[0]["name"] == "idB#1.mp4"  # no second warning: it stays excluded


# ------------------------------------------------------------------------------------------------ augment

def test_augmentation_is_deterministic_and_shared() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    params = AugmentationParams()
    out1 = augment_clip([a, b], params, np.random.default_rng(5))
    out2 = augment_clip([a, b], params, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(out1, out2))
    assert any(not np.array_equal(x, y) for x, y in zip(out1, augment_clip([a, b], params, np.random.default_rng(6))))
    same = augment_clip([a, a.copy()], params, np.random.default_rng(9))
    np.testing.assert_array_equal(same[0], same[1])  # identical parameters for every frame


def test_flip_semantics() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    flips_only = AugmentationParams(True, True, 0.0, 0.0, 0.0, 0.0)
    outcomes = []
    for seed in range(200):
        s, d = augment_clip([a, b], flips_only, np.random.default_rng(seed))
        if np.array_equal(s, a) and np.array_equal(d, b):
            outcomes.append("none")
        elif np.array_equal(s, b) and np.array_equal(d, a):
            outcomes.append("time")
        elif np.array_equal(s, a[:, ::-1]) and np.array_equal(d, b[:, ::-1]):
            outcomes.append("horizontal")
        else:
            outcomes.append("other")  # e.g. time + horizontal together: must never happen
    counts = {k: outcomes.count(k) for k in ("none", "time", "horizontal", "other")}
    assert counts["other"] == 0
    assert 70 <= counts["time"] <= 130 and 25 <= counts["horizontal"] <= 75 and 25 <= counts["none"] <= 75
    off = AugmentationParams.none()
    s, d = augment_clip([a, b], off, np.random.default_rng(0))
    assert np.array_equal(s, a) and np.array_equal(d, b)


def test_jitter_draws_and_config() -> None:
    params = AugmentationParams(brightness=0.1, contrast=0.2, saturation=0.3, hue=0.05)
    for seed in range(20):
        draw = draw_jitter(params, np.random.default_rng(seed))
        assert 0.9 <= draw.brightness <= 1.1 and 0.8 <= draw.contrast <= 1.2 and 0.7 <= draw.saturation <= 1.3
        assert -0.05 <= draw.hue <= 0.05 and sorted(draw.order) == ["brightness", "contrast", "hue", "saturation"]
    with pytest.raises(ValueError, match="hue"):
        AugmentationParams(hue=0.7)


def test_jitter_matches_pillow() -> None:
    pil_image = pytest.importorskip("PIL.Image")
    enhance = pytest.importorskip("PIL.ImageEnhance")
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pil = pil_image.fromarray(img)
    for f in (0.5, 0.93, 1.07, 1.6):
        np.testing.assert_array_equal(adjust_brightness(img, f), np.asarray(enhance.Brightness(pil).enhance(f)))
        np.testing.assert_array_equal(adjust_contrast(img, f), np.asarray(enhance.Contrast(pil).enhance(f)))
        np.testing.assert_array_equal(adjust_saturation(img, f), np.asarray(enhance.Color(pil).enhance(f)))
    colours = rng.integers(0, 256, (64, 256, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rgb_to_hsv_u8(colours), np.asarray(pil_image.fromarray(colours).convert("HSV")))
    np.testing.assert_array_equal(hsv_u8_to_rgb(colours),
                                  np.asarray(pil_image.fromarray(colours, "HSV").convert("RGB")))
    for hue in (-0.1, 0.03, 0.5):
        h, s, v = pil.convert("HSV").split()
        shifted = (np.asarray(h).astype(np.int32) + int(hue * 255)) % 256
        ref = pil_image.merge("HSV", (pil_image.fromarray(shifted.astype(np.uint8), "L"), s, v)).convert("RGB")
        np.testing.assert_array_equal(adjust_hue(img, hue), np.asarray(ref))


# ------------------------------------------------------------------------------------------------ synthetic

def test_synthetic_generator_layout(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path, num_train=3, num_test=1, num_frames=5, size=32, clips_per_identity=2)
    train = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert train == ["astronaut00#000.mp4", "astronaut00#000.mp4.motion.npy", "astronaut00#001.mp4",
                     "astronaut00#001.mp4.motion.npy", "astronaut01#000.mp4", "astronaut01#000.mp4.motion.npy"]
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == ["cameraman02#000.mp4",
                                                                    "cameraman02#000.mp4.motion.npy"]
    folder = tmp_path / "train" / "astronaut00#000.mp4"
    assert folder.is_dir() and sorted(p.name for p in folder.iterdir())[0] == "0000000.png"
    assert read_video(folder).shape == (5, 32, 32, 3)
    raw = np.load(str(folder) + ".motion.npy")
    assert raw.dtype == np.float16 and raw.shape == (5, 32, 32, 2)
    grid = np.stack(np.meshgrid(np.arange(32), np.arange(32)), axis=-1)  # (x, y)
    np.testing.assert_allclose(load_motion(str(folder) + ".motion.npy")[0], grid, atol=0.02)
    assert (tmp_path / "synthetic.json").is_file() and summary["num_train"] == 3
    ds = FramesDataset(tmp_path, frame_shape=(32, 32, 3), id_sampling=True, seed=0)
    assert ds.num_skipped == 0 and ds.ids == ["astronaut00", "astronaut01"] and ds[1]["source"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="overwrite"):
        generate_dataset(tmp_path, num_train=1, num_test=1, num_frames=2, size=32)


@pytest.mark.parametrize("template", ["astronaut", "cameraman"])
def test_synthetic_motion_ground_truth(template: str) -> None:
    ident = make_identity(TEMPLATES[template], 64, np.random.default_rng(4), "x")
    traj = sample_trajectory(12, 64, np.random.default_rng(5))
    frames, motion = render_clip(ident, traj, 64)
    check = verify_clip(frames, motion.astype(np.float16).astype(np.float32))
    assert check.mae < 0.03 and check.valid_fraction > 0.7
    assert check.mae_identity > 0.04 and check.mae_identity > 4 * check.mae
    wrong = verify_clip(frames, motion + np.float32(2.0))  # 2-pixel error in the ground truth
    assert wrong.mae > 2 * check.mae
    np.testing.assert_allclose(motion[0], np.stack(np.meshgrid(np.arange(64), np.arange(64)), -1), atol=1e-3)


def test_make_synthetic_dataset_tool(tmp_path: Path) -> None:
    import importlib.util

    tool = Path(__file__).parents[1] / "tools" / "make_synthetic_dataset.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_dataset", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "synth"
    argv = ["--output", str(out), "--num-train", "2", "--num-test", "1", "--frames", "3", "--size", "16",
            "--format", "mp4"]
    assert module.main(argv) == 0
    assert (out / "train" / "astronaut00#000.mp4").is_file()
    assert load_motion(out / "test" / "astronaut01#000.mp4.motion.npy").shape == (3, 16, 16, 2)
    assert module.main(argv) == 2  # refuses to overwrite


# ------------------------------------------------------------------------------------------------ real data

@pytest.mark.skipif(not VOX_MINI.is_dir(), reason="real footage vox256-mini not available (set MRFA_REAL_DATA)")
def test_vox256_mini_smoke() -> None:
    train = FramesDataset(VOX_MINI, id_sampling=True, augmentation=AugmentationParams(), seed=0)
    assert train.num_skipped == 0 and len(train) == 14
    item = train[0]
    assert item["source"].shape == (3, 256, 256) and item["driving"].shape == (3, 256, 256)
    assert item["name"].startswith(train.ids[0] + "#")
    test = FramesDataset(VOX_MINI, is_train=False, frame_shape=(64, 64, 3))
    assert len(test) == 7
    video = test[0]["video"]
    assert video.shape == (3, 100, 64, 64) and video.dtype == np.float32 and 0.0 <= video.min() <= video.max() <= 1.0
