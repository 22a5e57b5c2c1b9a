"""Reenactment and same-identity reconstruction with a trained MRFA (the inference use of paper Fig. 2; the
official ``demo.py`` / ``reconstruction.py``), as a Python API.

:class:`Animator` wraps a model: inputs of any size and kind are turned into square ``S x S`` frames (a face
crop box, or by default the centred square, resized to the model's ``S``), the source encoding (keypoints,
generator features, source structure) is computed once and cached, and driving frames are streamed in batches,
so memory does not grow with the video length. Relative motion follows the official ``normalize_kp``
(:func:`mrfa.nn.relative_motion.normalize_kp`).

Inputs become frames through :mod:`mrfa.media.frames`; the reference frame can be searched by face landmarks
(:mod:`mrfa.inference.best_frame`).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Union

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from mrfa.config import ExperimentConfig
from mrfa.inference.best_frame import find_best_frame
from mrfa.inference.engine import EXPORT_BACKENDS, EngineOptions, check_engine, prepare_model
from mrfa.inference.smoothing import KeypointSmoother, OneEuroParams
from mrfa.media.convert import float_to_uint8
from mrfa.media.crop import CropBox
from mrfa.media.face import FaceDetector, choose_detector
from mrfa.media.frames import (
    FramesLike,
    ImageLike,
    count_frames,
    frames_to_tensor,
    iter_frames,
    load_image,
    square_frame,
    tensor_to_frames,
)
from mrfa.media.video import FrameBuffer
from mrfa.nn.mrfa import MRFA, SourceEncoding
from mrfa.nn.relative_motion import movement_scale
from mrfa.types import Keypoints
from mrfa.utils.device import resolve_device

PathLike = Union[str, Path]
LANDMARK_SIZE = 256  # side of the frames the best-frame search runs the face detector on


def _batched(frames: Iterable[np.ndarray], n: int) -> Iterator[list[np.ndarray]]:
    it = iter(frames)
    while batch := list(islice(it, n)):
        yield batch


_search_best_frame = find_best_frame  # Animator.frames has a parameter of the same name


# ------------------------------------------------------------------------------------------ animator
class AnimatedFrame(NamedTuple):
    """One output frame of :meth:`Animator.frames` (keypoints are [-1, 1] (x, y), filled with ``keypoints=True``).

    index: driving frame index; prediction / driving: ``uint8 [S, S, 3]`` result and model-size driving frame;
    kp_source / kp_driving / kp_result: ``[K, 2]`` source, driving-detector and transferred keypoints;
    finite: False when the model produced NaN / inf for this frame (the prediction is then not meaningful).
    """

    index: int
    prediction: np.ndarray
    driving: np.ndarray
    kp_source: Optional[np.ndarray] = None
    kp_driving: Optional[np.ndarray] = None
    kp_result: Optional[np.ndarray] = None
    finite: bool = True


class Animator:
    """Animate portraits with a trained MRFA model (inference mode, no gradients).

    Args:
        model: an MRFA network (moved to ``device`` and put in eval mode).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a torch.device.
        batch_size: driving frames per forward pass.
        cache_mb: memory for keeping decoded driving frames between passes (best-frame search, reference frame,
            rendering), so a video is decoded once when it fits; 0 always decodes again.

    Example::

        animator = Animator.from_checkpoint("mrfa.pt", device="cpu")
        for frame in animator.animate("portrait.jpg", "driving.mp4"):  # uint8 [S, S, 3]
            ...
    """

    def __init__(self, model: MRFA, *, device: Union[str, torch.device] = "cpu", batch_size: int = 4,
                 cache_mb: float = 256, engine: Optional[EngineOptions] = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if cache_mb < 0:
            raise ValueError(f"cache_mb must be >= 0, got {cache_mb}")
        self.device = resolve_device(device)
        self.engine = engine or EngineOptions()
        check_engine(self.engine, self.device)
        if self.engine.backend in EXPORT_BACKENDS:  # the exported graphs (mrfa.inference.export.OnnxModel)
            self.model = model
        else:
            self.model = prepare_model(model.to(self.device).eval(), self.engine, self.device)
        self.batch_size = batch_size
        self.cache_bytes = int(cache_mb * 2**20)
        self.source_encodings = 0  # how many times a source was actually encoded (the rest hit the cache)
        self._cache: Optional[tuple[str, SourceEncoding]] = None
        self.reference_frame: Optional[int] = None  # driving frame used as reference by the last animation
        self.driving_passes = 0  # how many times the last animation started reading the driving frames

    @classmethod
    def from_checkpoint(cls, path: PathLike, *, device: Union[str, torch.device] = "auto", batch_size: int = 4,
                        config: Optional[ExperimentConfig] = None, cache_mb: float = 256,
                        engine: Optional[EngineOptions] = None) -> "Animator":
        """Load a snapshot / training state / official checkpoint (:func:`mrfa.load_checkpoint`; ``config`` only
        for official checkpoints of non-default size). The engine is checked before the file is read."""
        from mrfa.checkpoint import load_checkpoint

        engine = engine or EngineOptions()
        check_engine(engine, resolve_device(device))
        if engine.backend in EXPORT_BACKENDS:
            from mrfa.inference.export import OnnxModel

            if not Path(path).is_dir():
                raise ValueError(f"--backend {engine.backend} runs an exported folder, not the checkpoint file {path}; "
                                 f"create it once with: mrfa export --checkpoint {path} --output DIR")
            model = OnnxModel(path, device=resolve_device(device), runtime=engine.backend)
        else:
            model = load_checkpoint(path, config=config)
        return cls(model, device=device, batch_size=batch_size, cache_mb=cache_mb, engine=engine)

    @property
    def image_size(self) -> int:
        """Side ``S`` of the square frames the model works on."""
        return int(self.model.image_size)

    # ------------------------------------------------------------------ helpers
    def to_tensor(self, frames: Sequence[np.ndarray]) -> Tensor:
        """``uint8 [S, S, 3]`` frames -> float ``[B, 3, S, S]`` in [0, 1] on the model's device."""
        return frames_to_tensor(frames, self.device, channels_last=self.engine.channels_last)

    @staticmethod
    def to_uint8(images: Tensor) -> np.ndarray:
        """float ``[B, 3, S, S]`` in [0, 1] -> ``uint8 [B, S, S, 3]`` (the media layer's rounding rule)."""
        return tensor_to_frames(images)

    def encode(self, source: np.ndarray) -> SourceEncoding:
        """Source encoding of an ``uint8 [S, S, 3]`` image, cached for the last source seen."""
        key = hashlib.blake2b(source.tobytes() + str(source.shape).encode(), digest_size=16).hexdigest()
        if self._cache is None or self._cache[0] != key:
            with torch.inference_mode():
                self._cache = (key, self.model.encode_source(self.to_tensor([source])))
            self.source_encodings += 1
        return self._cache[1]

    def _detect(self, frames: Tensor) -> Keypoints:
        with torch.inference_mode():
            return self.model.kp_detector(frames)

    def _reader(self, driving: FramesLike, passes: int) -> Callable[[], Iterator[np.ndarray]]:
        """A function that (re)starts the driving frames, counting the passes."""
        reopen = self._reopener(driving, passes)

        def start() -> Iterator[np.ndarray]:
            self.driving_passes += 1
            return reopen()
        return start

    # ------------------------------------------------------------------ reenactment
    def frames(self, source: ImageLike, driving_frames: FramesLike, *, relative: bool = True,
               adapt_scale: bool = False, best_frame: Optional[int] = None, find_best_frame: bool = False,
               detector: Optional[FaceDetector] = None, source_box: Optional[CropBox] = None,
               driving_box: Optional[CropBox] = None, keypoints: bool = False, batch_size: Optional[int] = None,
               progress: bool = False, total: Optional[int] = None, smoothing: Optional[OneEuroParams] = None,
               fps: float = 25.0) -> Iterator[AnimatedFrame]:
        """Reenact ``source`` with ``driving_frames``; yields :class:`AnimatedFrame` in driving order.

        The driving video is decoded once when its frames fit in the animator's ``cache_mb`` (the best-frame
        search keeps the model-size frames for rendering; a reference frame index keeps the frames up to it);
        otherwise a second decode replaces the cache. Per-video constants (source encoding, reference
        keypoints, adapt-scale factor) are computed once.

        Args:
            source: image path, array or tensor (any size; see :func:`load_image`).
            driving_frames: video path, frame folder, array, tensor or iterable (see :func:`iter_frames`).
            relative: transfer the motion relative to the reference frame (official ``--relative``: positions
                and jacobians); False uses the absolute driving keypoints.
            adapt_scale: scale the motion by the source / reference keypoint hull areas.
            best_frame: index of the reference driving frame (default 0).
            find_best_frame: choose the reference frame by face landmarks (needs ``detector``).
            detector: face backend for ``find_best_frame`` (default: ``choose_detector("auto")``).
            source_box / driving_box: face crop boxes (default: the centred square of each frame).
            keypoints: also return keypoints (costs one extra detector pass per batch).
            batch_size: driving frames per forward pass (default: the animator's).
            progress: show a tqdm bar on stderr.
            total: the number of driving frames, for the progress bar (default: a cheap probe).
            smoothing: a causal One-Euro filter of the driving keypoints (:mod:`mrfa.inference.smoothing`); None
                (default) animates with the raw detector keypoints, as the official demo.
            fps: the driving frame rate (the filter's time base).
        """
        size, bs = self.image_size, batch_size or self.batch_size
        src_full = load_image(source)
        src = square_frame(src_full, size, source_box)
        enc = self.encode(src)
        self.driving_passes = 0
        reopen = self._reader(driving_frames, passes=2 if (find_best_frame or best_frame) else 1)

        def model_size(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
            return (square_frame(f, size, driving_box) for f in frames)

        kept = FrameBuffer(self.cache_bytes)  # model-size frames of the best-frame pass
        if find_best_frame:
            detector = detector if detector is not None else choose_detector("auto")

            def landmark_frames() -> Iterator[np.ndarray]:
                for f in reopen():
                    small = square_frame(f, size, driving_box)
                    kept.add(small)
                    yield small if size == LANDMARK_SIZE else square_frame(f, LANDMARK_SIZE, driving_box)
                kept.finished = True

            best_frame = _search_best_frame(square_frame(src_full, LANDMARK_SIZE, source_box), landmark_frames(),
                                            detector)
        ref = int(best_frame or 0)
        if ref < 0:
            raise ValueError(f"best frame index must be >= 0, got {ref}")
        self.reference_frame = ref
        kp_ref: Optional[Keypoints] = None
        if kept.complete:
            if ref >= len(kept.frames):
                raise ValueError(f"best frame {ref} is past the end of the driving video ({len(kept.frames)} frames)")
            stream: Iterator[np.ndarray] = iter(kept.frames)
            if ref > 0:
                kp_ref = self._detect(self.to_tensor([kept.frames[ref]]))
        elif ref > 0:  # one pass up to the reference frame, keeping what fits for the rendering
            head, n, frame = FrameBuffer(self.cache_bytes), 0, None
            it = model_size(reopen())
            for frame in it:
                head.add(frame)
                n += 1
                if n > ref:
                    break
            if n <= ref:
                raise ValueError(f"best frame {ref} is past the end of the driving video ({n} frames)")
            kp_ref = self._detect(self.to_tensor([frame]))
            stream = chain(head.frames, it) if not head.overflowed else model_size(reopen())
        else:
            stream = model_size(reopen())
        scale = None
        if adapt_scale and kp_ref is not None:
            scale = movement_scale(enc.kp, kp_ref)
        smoother = None
        if smoothing is not None:
            if self.engine.backend != "torch":
                raise ValueError("motion smoothing needs the torch backend (the exported renderer detects keypoints "
                                 "inside the graph)")
            smoother = KeypointSmoother(smoothing, fps)
        total = total if total is not None else count_frames(driving_frames)
        with tqdm(total=total, unit="frame", desc="animate", disable=not progress, leave=False) as bar:
            index = 0
            for batch in _batched(stream, bs):
                drv = self.to_tensor(batch)  # [B, 3, S, S]
                if kp_ref is None:
                    kp_ref = self._detect(drv[:1])
                    if adapt_scale:
                        scale = movement_scale(enc.kp, kp_ref)
                kp_drv = smoother(self._detect(drv)) if smoother is not None else None
                with torch.inference_mode():
                    out = self.model.animate(enc.source, drv, drv[:1], relative=relative, adapt_scale=adapt_scale,
                                             source_encoding=enc, kp_driving_initial=kp_ref, scale=scale,
                                             kp_driving=kp_drv)
                preds = self.to_uint8(out.prediction)
                kp_d = self._detect(drv).value.cpu().numpy() if keypoints else None
                kp_s = enc.kp.value[0].cpu().numpy() if keypoints else None
                kp_r = out.kp_driving.value.cpu().numpy() if keypoints else None
                finite = torch.isfinite(out.prediction).flatten(1).all(dim=1).cpu().numpy()  # [B]
                for j, pred in enumerate(preds):
                    yield AnimatedFrame(index, pred, batch[j], kp_s, None if kp_d is None else kp_d[j],
                                        None if kp_r is None else kp_r[j], bool(finite[j]))
                    index += 1
                bar.update(len(batch))

    def animate(self, source: ImageLike, driving_frames: FramesLike, relative: bool = True,
                adapt_scale: bool = False, *, best_frame: Optional[int] = None, find_best_frame: bool = False,
                detector: Optional[FaceDetector] = None, source_box: Optional[CropBox] = None,
                driving_box: Optional[CropBox] = None, batch_size: Optional[int] = None,
                progress: bool = False) -> Iterator[np.ndarray]:
        """Reenact ``source`` with ``driving_frames``; yields ``uint8 [S, S, 3]`` frames (see :meth:`frames`)."""
        for frame in self.frames(source, driving_frames, relative=relative, adapt_scale=adapt_scale,
                                 best_frame=best_frame, find_best_frame=find_best_frame, detector=detector,
                                 source_box=source_box, driving_box=driving_box, batch_size=batch_size,
                                 progress=progress):
            yield frame.prediction

    # ------------------------------------------------------------------ reconstruction
    def reconstruct_frames(self, video: FramesLike, *, box: Optional[CropBox] = None,
                           batch_size: Optional[int] = None, total: Optional[int] = None,
                           progress: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Same-identity reconstruction (evaluation protocol): frame 0 is the source, every frame drives with
        absolute keypoints (and the background motion, when the model has it), as ``model(source, driving)``.

        Yields:
            ``(prediction float32 [S, S, 3] in [0, 1], driving uint8 [S, S, 3])`` per frame.
        """
        size, bs = self.image_size, batch_size or self.batch_size
        enc: Optional[SourceEncoding] = None
        with tqdm(total=total or count_frames(video), unit="frame", desc="reconstruct", disable=not progress,
                  leave=False) as bar:
            for batch in _batched((square_frame(f, size, box) for f in iter_frames(video, "video")), bs):
                if enc is None:
                    enc = self.encode(batch[0])
                drv = self.to_tensor(batch)  # [B, 3, S, S]
                with torch.inference_mode():
                    out = self.model.reconstruct_encoded(enc, drv)
                preds = out.prediction.clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()  # [B, S, S, 3]
                yield from zip(preds, batch)
                bar.update(len(batch))

    def reconstruct(self, video: FramesLike, *, box: Optional[CropBox] = None, batch_size: Optional[int] = None,
                    progress: bool = False) -> Iterator[np.ndarray]:
        """Same-identity reconstruction of ``video`` (frame 0 is the source, every frame drives); yields ``uint8 [S, S, 3]``."""
        for pred, _ in self.reconstruct_frames(video, box=box, batch_size=batch_size, progress=progress):
            yield float_to_uint8(pred)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _reopener(driving: FramesLike, passes: int) -> Callable[[], Iterator[np.ndarray]]:
        """A function that restarts the driving frames; one-shot iterators are buffered only if two passes
        are needed (paths, arrays and sequences are re-read instead)."""
        if isinstance(driving, (str, Path, np.ndarray, Tensor, Sequence)) or passes == 1:
            return lambda: iter_frames(driving)
        frames = list(iter_frames(driving))
        return lambda: iter(frames)
