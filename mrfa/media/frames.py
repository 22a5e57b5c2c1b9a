"""The pixel side of animation inputs: any image or video (path, array, tensor, iterable) as ``uint8 [H, W, 3]``
frames, the centred square, the model-size square frame, and the uint8 <-> float tensor step and its inverse.

Not a paper box; used by the Animator, the app, the batch runs and the tools, so that a frame goes from the media
layer to the model once and comes back once.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from .convert import tensor_to_uint8, to_rgb_uint8
from .crop import CropBox, apply_crop
from .video import VIDEO_FILE_SUFFIXES, VideoReadError, iter_video_frames, read_image, video_info, video_kind

PathLike = Union[str, Path]
ImageLike = Union[PathLike, np.ndarray, Tensor]
FramesLike = Union[PathLike, np.ndarray, Tensor, Iterable[np.ndarray]]


def load_image(source: ImageLike, name: str = "source") -> np.ndarray:
    """Read one image (path: jpg/png/webp/bmp/tiff, grey, RGBA and 16-bit handled, EXIF rotation applied;
    or an array / tensor) as ``uint8 [H, W, 3]``.

    Raises:
        FileNotFoundError: a missing path. ValueError: a video or folder given as the image, or an
            undecodable / badly shaped image.
    """
    if isinstance(source, Tensor):
        t = source.detach().cpu()
        t = t[0] if t.dim() == 4 and t.shape[0] == 1 else t
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(f"{name} tensor must be [C, H, W] or [1, C, H, W], got {list(source.shape)}")
        return to_rgb_uint8(t.permute(1, 2, 0).numpy())
    if isinstance(source, np.ndarray):
        return to_rgb_uint8(source)
    path = Path(source)
    if path.is_dir():
        raise ValueError(f"{name} {path} is a folder; expected one image file")
    if not path.is_file():
        raise FileNotFoundError(f"{name} image not found: {path}")
    if path.suffix.lower() in VIDEO_FILE_SUFFIXES:
        raise ValueError(f"{name} {path} is a video; expected one image (jpg/png/webp)")
    try:
        return read_image(path)
    except VideoReadError as err:
        reason = str(err).split(": ", 1)[-1]
        raise VideoReadError(f"could not read the {name} image {path}: {reason}") from None


def iter_frames(driving: FramesLike, name: str = "driving video") -> Iterator[np.ndarray]:
    """Yield the frames of a video path (mp4/mov/webm/mkv/avi/gif or a folder of frames), a ``[T, H, W(, C)]``
    array, a ``[T, C, H, W]`` float tensor in [0, 1] or an iterable of images, as ``uint8 [H, W, 3]``.

    Raises:
        FileNotFoundError: a missing path. ValueError: an image file given as the video, an undecodable
            video, or a video without frames (raised when the iteration reaches its end).
    """
    if isinstance(driving, (str, Path)):
        path = Path(driving)
        if video_kind(path) == "strip":  # an image file
            raise ValueError(f"{name} {path} is an image; expected a video (mp4/mov/webm/mkv/avi/gif) or a "
                             "folder of frames")
        yield from iter_video_frames(path)
        return
    if isinstance(driving, Tensor):
        if driving.dim() != 4:
            raise ValueError(f"{name} tensor must be [T, C, H, W], got {list(driving.shape)}")
        frames: Iterable = (driving[t].detach().cpu().permute(1, 2, 0).numpy() for t in range(len(driving)))
    elif isinstance(driving, np.ndarray):
        if driving.ndim not in (3, 4):
            raise ValueError(f"{name} array must be [T, H, W] or [T, H, W, C], got {list(driving.shape)}")
        frames = driving
    else:
        frames = driving
    count = 0
    for frame in frames:
        count += 1
        yield to_rgb_uint8(np.asarray(frame))
    if count == 0:
        raise VideoReadError(f"{name} contains no frames")


def count_frames(driving: FramesLike) -> Optional[int]:
    """Frame count from a cheap probe (paths) or ``len`` (sequences); None when unknown."""
    if isinstance(driving, (str, Path)):
        try:
            return video_info(driving).num_frames or None
        except (ValueError, OSError):
            return None
    return len(driving) if isinstance(driving, (Sequence, np.ndarray, Tensor)) else None


def centre_box(height: int, width: int) -> CropBox:
    """The largest centred square of a ``height x width`` frame."""
    side = min(height, width)
    return CropBox(x0=(width - side) // 2, y0=(height - side) // 2, side=side)


def square_frame(frame: np.ndarray, size: int, box: Optional[CropBox] = None) -> np.ndarray:
    """Cut ``box`` (default: the centred square) out of ``uint8 [H, W, 3]`` and resize to ``[size, size, 3]``."""
    return apply_crop(frame, box if box is not None else centre_box(*frame.shape[:2]), size)


def frames_to_tensor(frames: Sequence[np.ndarray], device: Union[str, torch.device] = "cpu", *,
                     channels_last: bool = False) -> Tensor:
    """``uint8 [S, S, 3]`` frames -> float ``[B, 3, S, S]`` in [0, 1] on ``device``."""
    batch = torch.from_numpy(np.stack(frames)).to(device)  # [B, S, S, 3]
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def tensor_to_frames(images: Tensor) -> np.ndarray:
    """float ``[B, 3, S, S]`` in [0, 1] -> ``uint8 [B, S, S, 3]`` (the one rounding rule of :mod:`.convert`)."""
    return tensor_to_uint8(images)
