"""Frame I/O and frame pairing for `mrfa evaluate` (evaluation box: inputs of the metric tables).

A "video" is a folder of frames (``0000000.png`` ..., natural sort), a video file (mp4, gif, ...)
or an image (a horizontal PNG strip of square frames, as FOMM's reconstruction writes it).
Frames come back as uint8 RGB ``[T, H, W, 3]``. Lossless PNG frames should be used for landmark
and identity metrics (mp4 compression changes AKD, pose-evaluation#15).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _natural_key(text: str) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
                  key=lambda p: _natural_key(p.name))


def video_key(path: Path) -> str:
    """Pairing key of a video: its name without one video/image extension (``a.mp4/`` -> ``a``)."""
    name = path.name
    for ext in VIDEO_EXTS + IMAGE_EXTS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _is_frame_folder(folder: Path) -> bool:
    """A folder of frames: images named by frame numbers (``0000000.png``), no videos or sub-folders."""
    if not folder.is_dir() or any(p.is_dir() or p.suffix.lower() in VIDEO_EXTS for p in folder.iterdir()):
        return False
    imgs = _images_in(folder)
    return bool(imgs) and all(re.fullmatch(r"\D*\d+", p.stem) for p in imgs)


def discover_videos(root: Path) -> dict[str, Path]:
    """Map pairing key -> video path for one video (file / frame folder) or a folder of videos.

    Raises:
        FileNotFoundError: ``root`` is missing or holds no video.
    """
    if not root.exists():
        raise FileNotFoundError(f"evaluation input {root} does not exist")
    if root.is_file() or _is_frame_folder(root):
        return {video_key(root): root}
    found: dict[str, Path] = {}
    for p in sorted(root.iterdir(), key=lambda q: _natural_key(q.name)):
        is_video = p.is_file() and p.suffix.lower() in VIDEO_EXTS + IMAGE_EXTS
        if is_video or (p.is_dir() and _images_in(p)):
            if video_key(p) in found:
                other = found[video_key(p)].name
                raise ValueError(f"two inputs in {root} share the key {video_key(p)!r}: {other}, {p.name}")
            found[video_key(p)] = p
    if not found:
        raise FileNotFoundError(f"no frame folder, video or image found in {root}")
    return found


def _read_video_file(path: Path) -> np.ndarray:
    try:
        from mrfa.data.video import read_video
    except ImportError:
        import imageio.v2 as imageio

        return np.stack(imageio.mimread(str(path), memtest=False))
    return np.asarray(read_video(path))


def _rgb_u8(frame: np.ndarray, path: Path) -> np.ndarray:
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{path} has dtype {a.dtype}; expected 8-bit images")
        a = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3])


def read_frames(path: Path, *, max_frames: int | None = None) -> tuple[list[str], np.ndarray]:
    """Read a video as uint8 RGB frames.

    Args:
        path: frame folder (natural sort), video file, or image (a horizontal strip of square
            ``H x H`` frames when its width is a multiple of its height, else one frame).
        max_frames: keep only the first ``max_frames`` frames.

    Returns:
        (frame names, ``[T, H, W, 3]`` uint8). Names are file stems, or 7-digit indices.
    """
    import imageio.v3 as iio

    if path.is_dir():
        files = _images_in(path)[:max_frames]
        frames = np.stack([_rgb_u8(iio.imread(f), f) for f in files])
        return [f.stem for f in files], frames
    if path.suffix.lower() in IMAGE_EXTS:
        img = _rgb_u8(iio.imread(path), path)
        h, w = img.shape[:2]
        n = w // h if w % h == 0 else 1
        frames = np.stack(np.split(img, n, axis=1)) if n > 1 else img[None]
    else:
        frames = np.stack([_rgb_u8(f, path) for f in _read_video_file(path)])
    frames = frames[:max_frames]
    return [f"{i:07d}" for i in range(len(frames))], frames


def resize_u8(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased resize of uint8 frames ``[T, H, W, 3]`` to ``size`` (H, W)."""
    from skimage.transform import resize

    out = [resize(f, size, anti_aliasing=True, preserve_range=True) for f in frames]
    return np.clip(np.round(np.stack(out)), 0, 255).astype(np.uint8)


def align_frames(
    names_pred: list[str],
    pred: np.ndarray,
    names_gt: list[str],
    gt: np.ndarray,
    *,
    pairing: str = "auto",
    truncate: bool = False,
    what: str = "video",
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pair predicted and ground-truth frames.

    Args:
        names_pred: frame names of ``pred`` ``[T_p, H, W, 3]``.
        pred: predicted frames.
        names_gt: frame names of ``gt`` ``[T_g, H, W, 3]``.
        gt: ground-truth frames.
        pairing: ``"name"`` (same file names), ``"index"`` (same position) or ``"auto"`` (by name
            when both name sets are equal, else by index).
        truncate: allow missing / surplus frames (score the common ones) instead of raising.
        what: video name used in error messages.

    Returns:
        (frame names, pred ``[T, H, W, 3]``, gt ``[T, H, W, 3]``), in ground-truth order.
    """
    if pairing not in ("auto", "name", "index"):
        raise ValueError(f"frame pairing {pairing!r} is not supported; choose auto, name or index")
    if pairing == "name" or (pairing == "auto" and sorted(names_pred) == sorted(names_gt)):
        index_p = {n: i for i, n in enumerate(names_pred)}
        keep = [(i, n) for i, n in enumerate(names_gt) if n in index_p]
        if not keep or (len(keep) != len(names_gt) and not truncate):
            missing = len(names_gt) - len(keep)
            raise ValueError(f"{what}: {missing} ground-truth frames have no prediction of the same name")
        return [n for _, n in keep], pred[[index_p[n] for _, n in keep]], gt[[i for i, _ in keep]]
    if len(pred) != len(gt) and not truncate:
        raise ValueError(f"{what}: {len(pred)} predicted frames vs {len(gt)} ground-truth frames (use --truncate)")
    n = min(len(pred), len(gt))
    return names_gt[:n], pred[:n], gt[:n]


def match_size(pred: np.ndarray, gt: np.ndarray, *, resize: bool = False, what: str = "video") -> np.ndarray:
    """Return ``pred`` ``[T, H', W', 3]`` at the size of ``gt`` ``[T, H, W, 3]``: unchanged when equal,
    anti-aliased resize when ``resize``, else ``ValueError``."""
    if pred.shape[1:3] == gt.shape[1:3]:
        return pred
    if not resize:
        sizes = f"prediction frames are {pred.shape[1:3]}, ground truth {gt.shape[1:3]}"
        raise ValueError(f"{what}: {sizes} (use --resize-pred)")
    return resize_u8(pred, gt.shape[1:3])
