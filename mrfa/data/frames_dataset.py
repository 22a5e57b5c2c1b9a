"""Training / test dataset of face videos (paper Sec. 4 "Datasets"; official `frames_dataset.FramesDataset` and
`DatasetRepeater`, the FOMM loader).

Layout: ``root/{train,test}/<video>`` where a video is an mp4/mov/avi/webm/mkv/gif file, a folder of frames
(FOMM names these folders ``*.mp4`` too) or a horizontal PNG/JPG strip. Files ending in ``.motion.npy`` (ground
truth of the synthetic set) and files with other suffixes (csv, json, txt ...) are ignored.

Semantics follow the official code:

* ``id_sampling``: the training items are identities, the part of the video name before the first ``#`` (or
  its first ``split_len`` characters); each access picks a random video of that identity. Unlike the official
  ``glob(root/<id>*.mp4)``, only videos whose identity key is exactly ``<id>`` are candidates (the glob also
  matched ``id1`` for ``id10``) and any suffix is accepted.
* training item: two frame indices drawn uniformly with replacement and sorted (source = first, driving =
  second, possibly the same frame), then the shared-parameter augmentation; returns
  ``dict(source=float32 [3, H, W], driving=float32 [3, H, W], name=str)`` in [0, 1]. Frame folders are read in
  natural (temporal) order; the official code used unsorted ``os.listdir`` order, so its "sorted" indices were not
  temporal for folders. With time flips this makes no difference in distribution.
* test item: the whole video, ``dict(video=float32 [3, T, H, W], name=str)``, no augmentation.
* frames whose size differs from ``frame_shape`` are resized (anti-aliased bilinear).

Unusable videos: at construction every video is probed cheaply (folder listing, image header, ffmpeg stream copy
~15-50 ms per file). A video that cannot be opened, is empty or has fewer than 2 frames is skipped with ONE
``SkippedVideoWarning`` naming it and recorded in ``dataset.skipped``. A video that passes the probe but fails to
decode later (e.g. a corrupt PNG inside a folder) is handled lazily in training mode: one warning, it is added to
``skipped`` (in the process that hit it; DataLoader workers keep their own copy) and the item falls back to another
video of the same identity, else the next item. In test mode such a failure raises, so evaluation never silently
substitutes a clip.

Randomness: each item uses its own ``numpy.random.Generator``. With ``seed=None`` it is seeded from OS entropy
(safe with DataLoader workers); with a seed it is ``default_rng((seed, epoch, index))``, reproducible and
independent of worker assignment (``set_epoch`` changes the stream per epoch).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np

from mrfa.data.augment import AugmentationParams, augment_clip
from mrfa.media.video import (
    VIDEO_SUFFIXES,
    VideoReadError,
    list_frame_files,
    read_frames,
    read_image,
    read_video,
    resize_frame,
    video_info,
)

MOTION_SUFFIX = ".motion.npy"
MIN_FRAMES = 2


class SkippedVideoWarning(UserWarning):
    """A video of the dataset was skipped because it is corrupt, empty or too short."""


class SkippedVideo(NamedTuple):
    """A skipped video and the reason."""

    path: Path
    reason: str


@dataclass(frozen=True)
class VideoEntry:
    """A usable video found by the construction probe.

    Attributes:
        name: file or folder name (e.g. ``id10001#abc#000001#000064.mp4``).
        path: full path.
        kind: "ffmpeg", "gif", "folder" or "strip".
        num_frames: frame count from the probe.
        frame_files: sorted frame files (folders only), so items read exactly two files without re-listing.
    """

    name: str
    path: Path
    kind: str
    num_frames: int
    frame_files: tuple[Path, ...] = ()


def identity_key(name: str, split_len: Optional[int] = None) -> str:
    """Identity of a video name: the first ``split_len`` characters, else the part before the first '#'."""
    return name[:split_len] if split_len else name.split("#")[0]


def list_video_candidates(split_dir: Path) -> list[Path]:
    """Entries of a split folder that look like videos (sorted by name): folders and files with a video suffix;
    hidden entries and ``*.motion.npy`` are left out."""
    out = []
    for p in split_dir.iterdir():
        if p.name.startswith(".") or p.name.endswith(MOTION_SUFFIX):
            continue
        if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES:
            out.append(p)
    return sorted(out, key=lambda p: p.name)


def probe_video(path: Path) -> VideoEntry:
    """Cheap usability check of one video.

    Raises:
        VideoReadError: it cannot be opened or has fewer than 2 frames.
        OSError: it cannot be accessed.
    """
    info = video_info(path)
    files = tuple(list_frame_files(path)) if info.kind == "folder" else ()
    if info.num_frames < MIN_FRAMES:
        raise VideoReadError(f"video {path} has {info.num_frames} frame(s), at least {MIN_FRAMES} are needed")
    return VideoEntry(path.name, path, info.kind, info.num_frames, files)


def _to_chw(frame: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [0, 1]."""
    return np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


class FramesDataset:
    """Face-video dataset in the FOMM layout (see module docstring).

    Args:
        root: dataset root holding ``train/`` and ``test/``.
        frame_shape: (H, W, 3) output frame shape; frames of another size are resized. None keeps native sizes.
        id_sampling: training items are identities rather than videos (ignored in test mode).
        split_len: identity = first ``split_len`` characters of the name (CelebV-HQ: 11) instead of the '#' prefix.
        is_train: read ``train/`` and return frame pairs, else ``test/`` and whole videos.
        augmentation: pair augmentation (training only); None disables it.
        seed: base seed for reproducible items, or None for OS entropy per item.

    Raises:
        FileNotFoundError: ``root`` or its split folder does not exist.
        ValueError: no usable video in the split folder, or a bad ``frame_shape``.
    """

    def __init__(self, root: Union[str, Path], *, frame_shape: Optional[Sequence[int]] = (256, 256, 3),
                 id_sampling: bool = False, split_len: Optional[int] = None, is_train: bool = True,
                 augmentation: Optional[AugmentationParams] = None, seed: Optional[int] = None) -> None:
        self.root = Path(root)
        if frame_shape is not None and (len(frame_shape) not in (2, 3) or tuple(frame_shape[2:]) not in ((), (3,))):
            raise ValueError(f"frame_shape must be (H, W) or (H, W, 3), got {tuple(frame_shape)}")
        self.frame_size: Optional[tuple[int, int]] = (
            None if frame_shape is None else (int(frame_shape[0]), int(frame_shape[1])))
        self.is_train = is_train
        self.id_sampling = id_sampling and is_train
        self.split_len = split_len
        self.augmentation = augmentation if is_train else None
        self.seed = seed
        self.epoch = 0
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {self.root}")
        self.split_dir = self.root / ("train" if is_train else "test")
        if not self.split_dir.is_dir():
            raise FileNotFoundError(f"dataset split folder not found: {self.split_dir}")

        self.skipped: list[SkippedVideo] = []
        self.videos: list[VideoEntry] = []
        for path in list_video_candidates(self.split_dir):
            try:
                self.videos.append(probe_video(path))
            except (VideoReadError, OSError) as err:
                self._skip(path, str(err))
        if not self.videos:
            raise ValueError(f"no usable video in dataset root {self.root} (split '{self.split_dir.name}', "
                             f"{len(self.skipped)} skipped)")
        self._bad: set[Path] = set()
        self.by_id: dict[str, list[VideoEntry]] = {}
        for entry in self.videos:
            self.by_id.setdefault(identity_key(entry.name, split_len), []).append(entry)
        self.ids = sorted(self.by_id)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def num_skipped(self) -> int:
        """Number of skipped videos (construction probe + lazy failures seen by this process)."""
        return len(self.skipped)

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append(SkippedVideo(path, reason))
        warnings.warn(f"skipping video {path}: {reason}", SkippedVideoWarning, stacklevel=3)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of an epoch (only matters with a fixed ``seed``)."""
        self.epoch = int(epoch)

    def item_rng(self, key: int) -> np.random.Generator:
        """Generator for item ``key``: OS entropy without a seed, else ``default_rng((seed, epoch, key))``."""
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng((int(self.seed), self.epoch, int(key)))

    def __len__(self) -> int:
        return len(self.ids) if self.id_sampling else len(self.videos)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} out of range for a dataset of {n} items")
        idx %= n
        return self.get_item(idx, self.item_rng(idx))

    # ------------------------------------------------------------------ items
    def get_item(self, idx: int, rng: np.random.Generator) -> dict[str, Any]:
        """Item ``idx`` (0 <= idx < len) drawn with ``rng``; see the class docstring for the returned dict."""
        if not self.is_train:
            entry = self.videos[idx]
            video = read_video(entry.path, size=self.frame_size)  # [T, H, W, 3] uint8
            return {"video": np.ascontiguousarray(video.transpose(3, 0, 1, 2), dtype=np.float32) / np.float32(255.0),
                    "name": entry.name}
        for attempt in range(len(self.videos) + 1):
            entry = self._pick(idx, rng, attempt)
            if entry is None:
                continue
            try:
                source, driving = self._read_pair(entry, rng)
            except (VideoReadError, OSError) as err:
                self._bad.add(entry.path)
                self._skip(entry.path, f"decoding failed after the probe ({err})")
                continue
            if self.augmentation is not None:
                source, driving = augment_clip([source, driving], self.augmentation, rng)
            return {"source": _to_chw(source), "driving": _to_chw(driving), "name": entry.name}
        raise VideoReadError(f"no readable video left in dataset root {self.root}")

    def _pick(self, idx: int, rng: np.random.Generator, attempt: int) -> Optional[VideoEntry]:
        """Video for item ``idx`` (moving on to later items after failures); None if that item has none left."""
        n = len(self)
        item = (idx + attempt) % n
        if self.id_sampling:
            good = [v for v in self.by_id[self.ids[item]] if v.path not in self._bad]
            return good[int(rng.integers(len(good)))] if good else None
        entry = self.videos[item]
        return None if entry.path in self._bad else entry

    def _read_pair(self, entry: VideoEntry, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Two sorted random frames (uint8 [H, W, 3]) of a video."""
        first, second = np.sort(rng.choice(entry.num_frames, size=2, replace=True))
        if entry.kind == "folder":
            frames = [read_image(entry.frame_files[int(i)]) for i in (first, second)]
            if self.frame_size is not None:
                frames = [resize_frame(f, self.frame_size) for f in frames]
        else:
            frames = list(read_frames(entry.path, [int(first), int(second)], size=self.frame_size, clamp=True))
        return frames[0], frames[1]

    def __repr__(self) -> str:
        return (f"FramesDataset(root={str(self.root)!r}, split={self.split_dir.name!r}, videos={len(self.videos)}, "
                f"ids={len(self.ids)}, items={len(self)}, skipped={self.num_skipped})")


class DatasetRepeater:
    """Repeat a dataset ``num_repeats`` times per epoch (official ``DatasetRepeater``: 150 for vox, 5 for
    celebvhq). Item ``i`` is item ``i % len(dataset)`` drawn with the dataset's generator for key ``i``, so the
    repeats of one item are different random pairs even with a fixed seed."""

    def __init__(self, dataset: Any, num_repeats: int) -> None:
        if num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
        self.dataset = dataset
        self.num_repeats = int(num_repeats)

    def __len__(self) -> int:
        return self.num_repeats * len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped dataset when it supports it."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, idx: int) -> Any:
        total = len(self)
        if not -total <= idx < total:
            raise IndexError(f"index {idx} out of range for a repeated dataset of {total} items")
        idx %= total
        if isinstance(self.dataset, FramesDataset):
            return self.dataset.get_item(idx % len(self.dataset), self.dataset.item_rng(idx))
        return self.dataset[idx % len(self.dataset)]
