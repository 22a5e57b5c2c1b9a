"""Temporal metrics on ground truth, and the causal motion smoother."""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import torch

import mrfa
from mrfa.inference.animate import Animator
from mrfa.inference.smoothing import KeypointSmoother, OneEuroFilter, OneEuroParams
from mrfa.metrics.temporal import flicker, inter_ocular, landmark_jitter
from mrfa.types import Keypoints


def _face_track(t: int, iod: float = 60.0, seed: int = 0) -> np.ndarray:
    """``[T, 68, 2]`` a generic 68-point face (eyes ``iod`` px apart) moving smoothly (slow head sway)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(scale=iod / 2, size=(68, 2))
    base[36:42] = [-iod / 2, 0] + rng.normal(scale=2, size=(6, 2))
    base[42:48] = [iod / 2, 0] + rng.normal(scale=2, size=(6, 2))
    base[36:42] -= base[36:42].mean(0) - [-iod / 2, 0]
    base[42:48] -= base[42:48].mean(0) - [iod / 2, 0]
    time = np.arange(t)[:, None, None]
    return base[None] + np.concatenate([20 * np.sin(time / 40.0), 10 * np.cos(time / 55.0)], axis=-1) + 128


@pytest.mark.parametrize("sigma_px", [0.5, 2.0])
def test_jitter_reads_back_injected_noise(sigma_px: float) -> None:
    track = _face_track(400)
    noisy = track + np.random.default_rng(1).normal(scale=sigma_px, size=track.shape)
    iod = inter_ocular(track[0])
    got = landmark_jitter(list(noisy))
    assert got["jitter_sigma"] == pytest.approx(sigma_px / iod, rel=0.10)
    # mean magnitude of the second difference of white noise: sqrt(6) sigma sqrt(pi / 2) per landmark
    assert got["jitter"] == pytest.approx(math.sqrt(6) * sigma_px * math.sqrt(math.pi / 2) / iod, rel=0.10)
    clean = landmark_jitter(list(track))
    assert clean["jitter_sigma"] < 0.05 * got["jitter_sigma"]  # real (smooth) motion is not jitter


def test_missing_faces_are_counted_not_dropped() -> None:
    track = list(_face_track(10))
    track[4] = None
    got = landmark_jitter(track)
    assert got["frames_without_face"] == 1 and got["frames"] == 10 and got["triples"] == 8 - 3
    assert math.isnan(landmark_jitter([None] * 5)["jitter"])


def test_flicker() -> None:
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    frames[1::2] = 51  # every other frame 0.2 brighter
    assert flicker(frames)["flicker"] == pytest.approx(0.2)
    got = flicker(frames, boxes=[(0, 0, 4, 4), None, (0, 0, 4, 4), (0, 0, 4, 4)])
    assert got["pairs"] == 1 and got["pairs_without_face"] == 2


def test_one_euro_is_causal_smooths_jitter_and_follows_motion() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(300) / 30.0
    truth = np.where(t < 5, 0.0, 0.5)  # still, then a step
    noisy = truth + rng.normal(scale=0.01, size=t.shape)
    f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=5.0), fps=30)
    out = np.array([float(f(torch.tensor([v]))) for v in noisy])
    still = slice(30, 150)
    assert np.std(np.diff(out[still], 2)) < 0.2 * np.std(np.diff(noisy[still], 2))  # jitter removed
    assert abs(out[160] - 0.5) < 0.05  # the step is followed within 10 frames
    prefix = OneEuroFilter(OneEuroParams(), fps=30)
    assert [float(prefix(torch.tensor([v]))) for v in noisy[:50]] == pytest.approx(out[:50])  # no look-ahead


def test_smoother_memory_is_flat() -> None:
    """Streaming: the state does not grow with the number of frames (after 100 frames vs after 1000)."""
    s = KeypointSmoother(OneEuroParams(), fps=25)
    frames = [Keypoints(torch.rand(1, 10, 2), torch.rand(1, 10, 2, 2)) for _ in range(8)]
    for i in range(100):
        s(frames[i % 8])
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for i in range(900):
        s(frames[i % 8])
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after - before < 65536  # 900 frames: a leak of even 100 bytes a frame would show
    assert s.value._y.shape == (10, 2) and s.jacobian._y.shape == (10, 2, 2)  # the state is two fixed tensors


def test_animator_smoothing_is_off_by_default_and_changes_output_when_on() -> None:
    torch.manual_seed(0)
    model = mrfa.build_model(mrfa.load_config("configs/tiny.yaml")).eval()
    g = torch.Generator().manual_seed(1)
    src = (torch.rand(64, 64, 3, generator=g) * 255).byte().numpy()
    drv = (torch.rand(6, 64, 64, 3, generator=g) * 255).byte().numpy()
    a = Animator(model, device="cpu", batch_size=2)
    plain = np.stack(list(a.animate(src, drv)))
    ref = np.stack([f.prediction for f in a.frames(src, drv)])
    smooth = np.stack([f.prediction for f in a.frames(src, drv, smoothing=OneEuroParams(0.5, 0.0), fps=25)])
    assert np.array_equal(plain, ref) and np.array_equal(smooth[0], ref[0]) and not np.array_equal(smooth, ref)


def test_animator_streaming_with_smoothing_stays_flat_in_memory() -> None:
    """Peak RSS after animating 100 frames vs after 600 more (smoothing on, frames from a generator, nothing kept):
    keeping the 256 px driving frames would add 98 MB, keeping the outputs 6 MB per 500 frames."""
    import subprocess
    import sys

    code = """
import resource, numpy as np, torch, mrfa
from mrfa.inference.animate import Animator
from mrfa.inference.smoothing import OneEuroParams
torch.manual_seed(0)
a = Animator(mrfa.build_model(mrfa.load_config("configs/tiny.yaml")).eval(), device="cpu", batch_size=4, cache_mb=0)
rng = np.random.default_rng(0)
src = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
base = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
def peak(n):
    for f in a.frames(src, (np.roll(base, i % 7, axis=1) for i in range(n)), smoothing=OneEuroParams(), fps=25):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(peak(100), peak(600))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    after_100, after_700 = (float(v) for v in out.stdout.split())
    assert after_700 - after_100 < 20.0, (after_100, after_700)
