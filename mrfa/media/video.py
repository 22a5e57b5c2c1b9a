"""Image and video reading (one frame contract), resizing and file discovery for every part of mrfa: the data
pipeline (paper Sec. 4 "Datasets"; official ``frames_dataset.read_video``), animation, cropping and evaluation.

A "video" is any of:

* a file decoded by ffmpeg (imageio-ffmpeg): ``.mp4 .mov .avi .webm .mkv .m4v``;
* an animated ``.gif`` (decoded by imageio/Pillow);
* a folder of frames (``.png .jpg .jpeg .webp .bmp``), sorted in natural order (``2.png`` before ``10.png``);
* a horizontal strip image (``.png .jpg .jpeg .webp``) of T square frames, width = T * height.

Every frame comes back as ``uint8 [H, W, 3]`` RGB, converted by :func:`mrfa.media.convert.to_rgb_uint8` (grey
replicated, alpha dropped, 16-bit rounded, float clipped and scaled). Images are decoded only up to
:data:`MAX_IMAGE_PIXELS` (a decompression bomb is refused with one sentence, before its pixels are allocated), and
the EXIF orientation of photos is applied.

ffmpeg files are decoded with ``-fps_mode passthrough``: every coded frame is returned exactly once, so a
variable-frame-rate clip gives its real frames (imageio's default reader duplicates frames to a constant rate,
e.g. 184 instead of 135 frames for ``video_retalking/1.mp4``).
"""
from __future__ import annotations

import os
import re
import subprocess
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
from PIL import Image
from skimage.transform import resize as _sk_resize

from mrfa.utils.paths import require_file

from . import ffmpeg
from .convert import to_rgb_uint8
from .writer import FrameWriter, atomic_path

PathLike = Union[str, Path]
Size = Union[int, tuple[int, int]]

FFMPEG_SUFFIXES = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v")
GIF_SUFFIXES = (".gif",)
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
STRIP_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = FFMPEG_SUFFIXES + GIF_SUFFIXES + STRIP_SUFFIXES
VIDEO_FILE_SUFFIXES = FFMPEG_SUFFIXES + GIF_SUFFIXES  # files that are always videos (never a single image)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
IMAGE_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Resource cap for untrusted images: 8192 x 8192 (64 Mpx, 192 MB as RGB uint8, about 1 GB as the float64 resize
# buffer). Larger pictures are refused before decoding; the limit can be raised per call (``max_pixels=``).
MAX_IMAGE_PIXELS = 8192 * 8192

_HEADER_LOCK = threading.Lock()  # guards the moment Pillow's global bomb limit is lifted for a header read

# Exceptions raised by Pillow / imageio / ffmpeg wrappers on undecodable input.
_DECODE_ERRORS = (OSError, ValueError, RuntimeError, SyntaxError, EOFError)


class VideoReadError(ValueError):
    """A video or image exists but cannot be decoded, is empty or is malformed."""


@dataclass(frozen=True)
class VideoInfo:
    """Cheap facts about a video, from headers or a stream copy (no full decode).

    Attributes:
        kind: "ffmpeg", "gif", "folder" or "strip".
        num_frames: number of frames (ffmpeg: coded video packets, equal to the decoded count with passthrough).
        fps: frames per second, or None where the format has none (folder, strip).
        width: frame width in pixels.
        height: frame height in pixels.
        has_audio: whether the container holds an audio stream (False for non-ffmpeg kinds).
    """

    kind: str
    num_frames: int
    fps: Optional[float]
    width: int
    height: int
    has_audio: bool


def natural_key(name: str) -> list:
    """Sort key that orders digit runs numerically ("2.png" < "10.png")."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_frame_files(folder: PathLike) -> list[Path]:
    """Image files of a frame folder in natural order (hidden files skipped)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def video_kind(path: PathLike) -> str:
    """Classify ``path`` as "folder", "ffmpeg", "gif" or "strip".

    Raises:
        FileNotFoundError: the path does not exist.
        VideoReadError: the file extension is not a supported video format.
    """
    path = require_file(path, "video", folder_ok=True)
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in FFMPEG_SUFFIXES:
        return "ffmpeg"
    if suffix in GIF_SUFFIXES:
        return "gif"
    if suffix in STRIP_SUFFIXES:
        return "strip"
    raise VideoReadError(f"unsupported video format '{suffix}' for {path}")


# Shrinking by this factor or more first box-averages the picture down to about 4x the target (Pillow's reduce),
# so an 8000 x 8000 photo does not go through a float64 Gaussian of its full size. Below the factor (every
# VoxCeleb-like input) the resize is exactly FOMM's.
PRE_REDUCE_FACTOR = 16


def pre_reduce(frame: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Integer box-average reduction of a huge ``uint8 [H, W, 3]`` before an anti-aliased resize to
    ``(out_h, out_w)``; unchanged unless it shrinks by at least :data:`PRE_REDUCE_FACTOR` on both axes."""
    ratio = min(frame.shape[0] / max(out_h, 1), frame.shape[1] / max(out_w, 1))
    if ratio < PRE_REDUCE_FACTOR:
        return frame
    factor = int(ratio // 4)
    return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).reduce(factor))


def resize_frame(frame: np.ndarray, size: Size) -> np.ndarray:
    """Resize ``uint8 [H, W, 3]`` to ``size`` (int = square, or (height, width)), anti-aliased, as FOMM's
    preprocessing does (skimage bilinear + Gaussian pre-filter when shrinking; huge inputs are box-reduced first,
    :func:`pre_reduce`). Returns uint8."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if frame.shape[:2] == (out_h, out_w):
        return frame
    frame = pre_reduce(frame, out_h, out_w)
    out = _sk_resize(frame, (out_h, out_w), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def check_image_size(path: PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """``(width, height)`` from the header of an image file; refuses more than ``max_pixels`` before decoding.

    Raises:
        VideoReadError: an undecodable header, or a picture larger than the cap.
    """
    path = Path(path)
    try:
        with _HEADER_LOCK, warnings.catch_warnings():
            # only the header is read here: Pillow's own bomb check is lifted for this call, and restored, so that
            # the message can give the size; our cap below refuses before any pixel is decoded
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as img:
                    width, height = img.size
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except _DECODE_ERRORS as err:
        raise VideoReadError(f"could not decode image {path}: {_first_line(err)}") from None
    if width * height > max_pixels:
        raise VideoReadError(f"{path} is {width}x{height} pixels, more than the {max_pixels / 1e6:.0f} Mpx this "
                             "reader accepts; reduce the picture first")
    return width, height


def read_image(path: PathLike, *, rotate: bool = True, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read one image (png/jpg/webp/bmp/tiff; grey, RGBA and 16-bit handled) as ``uint8 [H, W, 3]``.

    Args:
        path: the image file.
        rotate: apply the EXIF orientation (phone photos).
        max_pixels: refuse larger pictures before decoding them.

    Raises:
        FileNotFoundError: the file does not exist.
        VideoReadError: the file cannot be decoded or is larger than ``max_pixels``.
    """
    path = require_file(path, "image")
    check_image_size(path, max_pixels=max_pixels)
    try:
        with Image.open(path) as img:  # colour models numpy cannot read as RGB (CMYK, YCbCr, LAB) are converted
            convert = img.mode in ("CMYK", "YCbCr", "LAB", "HSV")
        # explicit plugin: no trial of every plugin
        array = iio.imread(path, index=0, plugin="pillow", rotate=rotate, **({"mode": "RGB"} if convert else {}))
    except _DECODE_ERRORS as err:
        raise VideoReadError(f"could not decode image {path}: {_first_line(err)}") from None
    try:
        return to_rgb_uint8(np.asarray(array))
    except ValueError as err:
        raise VideoReadError(f"unsupported image layout in {path}: {err}") from None


def write_image(path: PathLike, image: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write ``uint8 [H, W, 3]`` atomically as png / jpg / webp / bmp (chosen by the suffix); an existing file is
    replaced only with ``overwrite``.

    Raises:
        ValueError: another suffix (nothing is written).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_OUTPUT_SUFFIXES:
        raise ValueError(f"cannot write image format '{suffix}' for {path}; use {', '.join(IMAGE_OUTPUT_SUFFIXES)}")
    with atomic_path(path, overwrite=overwrite) as tmp:
        iio.imwrite(tmp, np.asarray(image), plugin="pillow", extension=suffix)
    return path


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


# ----------------------------------------------------------------------------------------------------------
# ffmpeg

def _last_line(err: BaseException) -> str:
    """Last non-empty line of an exception message (imageio-ffmpeg appends ffmpeg's stderr, whose last line
    is the reason)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def _ffmpeg_frames(path: Path) -> Iterator[np.ndarray]:
    """Yield every coded frame of an ffmpeg-readable file as uint8 [H, W, 3] (read-only views)."""
    gen = imageio_ffmpeg.read_frames(ffmpeg.file_arg(path), pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
    try:
        try:
            meta = next(gen)
        except (StopIteration, *_DECODE_ERRORS) as err:
            raise VideoReadError(f"could not open video {path}: {_last_line(err)}") from err
        width, height = meta["size"]
        while True:
            try:
                buf = next(gen)
            except StopIteration:
                return
            except _DECODE_ERRORS as err:
                raise VideoReadError(f"could not decode video {path}: {_last_line(err)}") from err
            yield np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3)
    finally:
        gen.close()  # stops ffmpeg when the caller stops early


def _ffmpeg_probe(path: Path) -> VideoInfo:
    """Count video packets with a stream copy (no decoding) and parse size/fps/audio from ffmpeg's log."""
    cmd = [ffmpeg.exe(), "-hide_banner", "-nostdin", "-i", ffmpeg.file_arg(path),
           "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    log = proc.stderr.decode(errors="replace")
    video_line = next((ln for ln in log.splitlines() if re.search(r"Stream #.*Video:", ln)), None)
    if video_line is None and re.search(r"Stream #.*Audio:", log):
        raise VideoReadError(f"{path} holds only audio; a video is needed")
    if proc.returncode != 0 or video_line is None:
        reason = log.strip().splitlines()[-1] if log.strip() else f"ffmpeg exit code {proc.returncode}"
        raise VideoReadError(f"could not open video {path}: {reason}")
    size = re.search(r", (\d{1,5})x(\d{1,5})[,\s\[]", video_line + " ")
    fps = re.search(r"([\d.]+)(k?) fps", video_line) or re.search(r"([\d.]+)(k?) tbr", video_line)
    counts = re.findall(r"frame=\s*(\d+)", log)
    return VideoInfo(
        kind="ffmpeg",
        num_frames=int(counts[-1]) if counts else 0,
        fps=float(fps.group(1)) * (1000 if fps.group(2) else 1) if fps else None,  # ffmpeg prints "1k fps"
        width=int(size.group(1)) if size else 0,
        height=int(size.group(2)) if size else 0,
        has_audio=bool(re.search(r"Stream #.*Audio:", log)),
    )


# ----------------------------------------------------------------------------------------------------------
# gif / strip

def _gif_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of an animated gif one at a time as ``uint8 [H, W, 3]`` (never the whole clip in memory), after
    the size cap of :func:`check_image_size`."""
    from PIL import ImageSequence

    check_image_size(path)
    try:
        with Image.open(path) as img:
            for frame in ImageSequence.Iterator(img):
                yield np.asarray(frame.convert("RGB"))
    except _DECODE_ERRORS as err:
        raise VideoReadError(f"could not decode gif {path}: {_first_line(err)}") from None


def _header_size(path: Path) -> tuple[int, int, int, Optional[float]]:
    """(width, height, n_frames, fps) from an image header, without decoding pixels."""
    try:
        with Image.open(path) as img:
            duration = img.info.get("duration")
            return img.width, img.height, int(getattr(img, "n_frames", 1)), (1000.0 / duration if duration else None)
    except _DECODE_ERRORS as err:
        raise VideoReadError(f"could not decode image header of {path}: {err}") from err


def _strip_frames(image: np.ndarray, path: Path) -> np.ndarray:
    h, w = image.shape[:2]
    if w % h != 0:
        raise VideoReadError(f"frame strip {path} has width {w} that is not a multiple of its height {h}")
    return np.ascontiguousarray(image.reshape(h, w // h, h, 3).transpose(1, 0, 2, 3))  # [T, H, H, 3]


# ----------------------------------------------------------------------------------------------------------
# public API

def video_info(path: PathLike) -> VideoInfo:
    """Cheap probe of a video (headers / stream copy only; ~15 ms for an mp4 clip).

    Raises:
        FileNotFoundError: the path does not exist.
        VideoReadError: the video cannot be opened or has a malformed layout.
    """
    path = Path(path)
    kind = video_kind(path)
    if kind == "ffmpeg":
        return _ffmpeg_probe(path)
    if kind == "folder":
        files = list_frame_files(path)
        width = height = 0
        if files:
            width, height, _, _ = _header_size(files[0])
        return VideoInfo("folder", len(files), None, width, height, False)
    check_image_size(path)
    width, height, n_frames, fps = _header_size(path)
    if kind == "gif":
        return VideoInfo("gif", n_frames, fps, width, height, False)
    if width % height != 0:
        raise VideoReadError(f"frame strip {path} has width {width} that is not a multiple of its height {height}")
    return VideoInfo("strip", width // height, None, height, height, False)


def _frame_source(path: Path, kind: str) -> Iterator[np.ndarray]:
    """Iterator over the frames of a video of a known kind (uint8 [H, W, 3], possibly read-only views)."""
    if kind == "ffmpeg":
        return _ffmpeg_frames(path)
    if kind == "folder":
        return (read_image(f) for f in list_frame_files(path))
    if kind == "gif":
        return _gif_frames(path)
    return iter(_strip_frames(read_image(path), path))


def iter_video_frames(path: PathLike, *, size: Optional[Size] = None) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time as ``uint8 [H, W, 3]`` (memory stays flat for ffmpeg files and
    folders; gifs and strips are small and decoded at once).

    Raises:
        FileNotFoundError: the path does not exist.
        VideoReadError: the video cannot be decoded or has no frames (raised when iteration reaches it).
    """
    path = Path(path)
    count = 0
    for frame in _frame_source(path, video_kind(path)):
        count += 1
        yield resize_frame(frame, size) if size is not None else np.array(frame)
    if count == 0:
        raise VideoReadError(f"video {path} contains no frames")


def read_video(path: PathLike, *, size: Optional[Size] = None) -> np.ndarray:
    """Read a whole video as ``uint8 [T, H, W, 3]``, optionally resized to ``size`` (int = square).

    Raises:
        FileNotFoundError: the path does not exist.
        VideoReadError: the video cannot be decoded, has no frames, or frames of different sizes (without size).
    """
    frames = list(iter_video_frames(path, size=size))
    shapes = sorted({f.shape for f in frames})
    if len(shapes) > 1:
        raise VideoReadError(f"frames of {path} have different sizes {shapes}; pass size= to resize them")
    return np.stack(frames)


def read_frames(path: PathLike, indices: Sequence[int], *, size: Optional[Size] = None,
                clamp: bool = False) -> np.ndarray:
    """Read only the frames at ``indices`` (any order, repeats allowed) as ``uint8 [N, H, W, 3]``.

    Frame folders read just the requested files; ffmpeg files are decoded up to the largest index and then
    stopped (cheaper than a full decode, no seeking so no keyframe inaccuracy).

    Args:
        path: the video.
        indices: frame indices (>= 0).
        size: optional output size (int = square, or (height, width)).
        clamp: if True, indices past the last decodable frame return the last frame instead of raising
            (ffmpeg containers can report a frame more than they decode).

    Raises:
        FileNotFoundError: the path does not exist.
        VideoReadError: undecodable video, or an index past the end with ``clamp=False``.
    """
    path = Path(path)
    kind = video_kind(path)
    wanted = [int(i) for i in indices]
    if not wanted:
        raise ValueError("read_frames needs at least one frame index")
    if min(wanted) < 0:
        raise ValueError(f"frame indices must be >= 0, got {min(wanted)}")
    got: dict[int, np.ndarray] = {}
    if kind == "folder":
        files = list_frame_files(path)
        if not files:
            raise VideoReadError(f"video {path} contains no frames")
        for i in set(wanted):
            if i >= len(files) and not clamp:
                raise VideoReadError(f"frame {i} is past the end of {path} ({len(files)} frames)")
            got[i] = read_image(files[min(i, len(files) - 1)])
    else:
        needed, last = set(wanted), max(wanted)
        source = _frame_source(path, kind)
        prev: Optional[np.ndarray] = None
        n = 0
        for n, frame in enumerate(source, start=1):
            prev = frame
            if n - 1 in needed:
                got[n - 1] = np.array(frame)
            if n - 1 >= last:
                break
        close = getattr(source, "close", None)
        if close is not None:
            close()  # stops ffmpeg early
        if prev is None:
            raise VideoReadError(f"video {path} contains no frames")
        missing = needed.difference(got)
        if missing and not clamp:
            raise VideoReadError(f"frame {min(missing)} is past the end of {path} ({n} frames decoded)")
        for i in missing:
            got[i] = np.array(prev)
    frames = [got[i] for i in wanted]
    if size is not None:
        frames = [resize_frame(f, size) for f in frames]
    return np.stack(frames)


def write_video(path: PathLike, frames: np.ndarray, *, fps: float = 25.0, quality: int = 8,
                overwrite: bool = False) -> Path:
    """Write ``uint8 [T, H, W, 3]`` frames as a video file (.mp4/.mov/.mkv: H.264, yuv420p, odd sizes padded by
    one edge row / column) or a .gif, through :class:`~mrfa.media.writer.FrameWriter`. ``quality`` is
    imageio-ffmpeg's 0-10 scale (8 is visually lossless-ish).

    Raises:
        ValueError: bad frame array or unsupported suffix.
        WriteError: the encoder failed (nothing is left behind).
    """
    path = Path(path)
    frames = _check_frames(frames)
    if path.suffix.lower() not in (".mp4", ".mov", ".mkv") + GIF_SUFFIXES:
        raise ValueError(f"cannot write video format '{path.suffix.lower()}' for {path} (use .mp4, .mov, .mkv or "
                         ".gif)")
    with FrameWriter(path, fps=fps, quality=quality, overwrite=overwrite) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def write_frame_folder(folder: PathLike, frames: np.ndarray, *, compress_level: int = 1,
                       overwrite: bool = False) -> Path:
    """Write ``uint8 [T, H, W, 3]`` frames as ``folder/0000000.png ...`` (7 digits, the FOMM
    video-preprocessing convention; the folder name may end in ``.mp4``), atomically through
    :class:`~mrfa.media.writer.FrameWriter`. Lossless, and the fastest layout for the training loader (two small
    PNG reads per item)."""
    folder = Path(folder)
    frames = _check_frames(frames)
    with FrameWriter(str(folder) + os.sep, png_compress_level=compress_level, overwrite=overwrite) as writer:
        for frame in frames:
            writer.write(frame)
    return folder


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty uint8 [T, H, W, 3] array, got {frames.dtype} {frames.shape}")
    return frames


# ----------------------------------------------------------------------------------------------------------
# discovery and named frames (evaluation inputs)

def video_key(path: Path) -> str:
    """Pairing key of a video: its name without one video/image extension (``a.mp4/`` -> ``a``)."""
    name = path.name
    for ext in VIDEO_FILE_SUFFIXES + IMAGE_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _images_in(folder: Path) -> list[Path]:
    return [p for p in list_frame_files(folder) if p.is_file()]


def _is_frame_folder(folder: Path) -> bool:
    """A folder of frames: images named by frame numbers (``0000000.png``), no videos or sub-folders."""
    if not folder.is_dir() or any(p.is_dir() or p.suffix.lower() in VIDEO_FILE_SUFFIXES for p in folder.iterdir()):
        return False
    imgs = _images_in(folder)
    return bool(imgs) and all(re.fullmatch(r"\D*\d+", p.stem) for p in imgs)


def discover_videos(root: PathLike) -> dict[str, Path]:
    """Map pairing key -> video path for one video (file / frame folder) or a folder of videos.

    Raises:
        FileNotFoundError: ``root`` is missing or holds no video.
        ValueError: two inputs share a key.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"evaluation input {root} does not exist")
    if root.is_file() or _is_frame_folder(root):
        return {video_key(root): root}
    found: dict[str, Path] = {}
    for p in sorted(root.iterdir(), key=lambda q: natural_key(q.name)):
        is_video = p.is_file() and p.suffix.lower() in VIDEO_FILE_SUFFIXES + IMAGE_SUFFIXES
        if (is_video or (p.is_dir() and _images_in(p))) and not p.name.startswith("."):
            if video_key(p) in found:
                other = found[video_key(p)].name
                raise ValueError(f"two inputs in {root} share the key {video_key(p)!r}: {other}, {p.name}")
            found[video_key(p)] = p
    if not found:
        raise FileNotFoundError(f"no frame folder, video or image found in {root}")
    return found


def read_named_frames(path: PathLike, *, max_frames: Optional[int] = None) -> tuple[list[str], np.ndarray]:
    """Read a video with frame names (for pairing predictions with ground truth by name).

    Args:
        path: frame folder (natural sort), video file, or image (a horizontal strip of square ``H x H`` frames
            when its width is a multiple of its height, else one frame).
        max_frames: keep only the first ``max_frames`` frames.

    Returns:
        (frame names, ``uint8 [T, H, W, 3]``). Names are file stems, or 7-digit indices.
    """
    path = Path(path)
    if path.is_dir():
        files = _images_in(path)[:max_frames]
        if not files:
            raise VideoReadError(f"video {path} contains no frames")
        return [f.stem for f in files], np.stack([read_image(f, rotate=False) for f in files])
    if path.suffix.lower() in IMAGE_SUFFIXES:
        img = read_image(path, rotate=False)
        h, w = img.shape[:2]
        frames = _strip_frames(img, path) if w % h == 0 and w > h else img[None]
    else:
        frames = read_video(path)
    frames = frames[:max_frames]
    return [f"{i:07d}" for i in range(len(frames))], frames


# ----------------------------------------------------------------------------------------------------------
# a bounded frame buffer (decode once, replay while it fits)

class FrameBuffer:
    """Keeps the frames of one pass in memory up to ``budget_bytes``, so that a later pass can replay them instead
    of decoding the video again; past the budget it drops everything and says so (``complete`` is False).

    Args:
        budget_bytes: the most bytes of frames kept (0 keeps nothing).
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self.frames: list[np.ndarray] = []
        self.nbytes = 0
        self.overflowed = False
        self.finished = False

    def add(self, frame: np.ndarray) -> None:
        """Keep ``frame`` (a private copy) unless the budget is exceeded."""
        if self.overflowed:
            return
        if self.nbytes + frame.nbytes > self.budget_bytes:
            self.frames, self.nbytes, self.overflowed = [], 0, True
            return
        self.frames.append(np.array(frame))
        self.nbytes += frame.nbytes

    def tap(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Yield ``frames`` unchanged while keeping them; marks the buffer finished when the pass ends."""
        for frame in frames:
            self.add(frame)
            yield frame
        self.finished = True

    @property
    def complete(self) -> bool:
        """Whether a whole pass was seen and kept (then :attr:`frames` replaces a decode)."""
        return self.finished and not self.overflowed
