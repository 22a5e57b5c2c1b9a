"""Atomic writers for animation results: mp4 / mov / mkv (H.264), gif, or a folder of PNG frames.

Not a paper box: the output stage of ``mrfa animate`` and ``mrfa reconstruct``. Frames are streamed to the
imageio-ffmpeg ffmpeg binary (memory stays flat with the clip length), into a hidden temporary name next to the
destination; only a complete result is renamed to the requested name, so an interrupted or failed run never
leaves a file that looks finished. The audio track of the driving video can be muxed in afterwards (stream
copy, or AAC when the codec does not fit the container), as FOMM's ``--audio`` demo option does.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Optional, Union

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
VIDEO_OUTPUTS = (".mp4", ".mov", ".mkv")
GIF_OUTPUTS = (".gif",)
AUDIO_OUTPUTS = VIDEO_OUTPUTS


def output_kind(path: PathLike) -> str:
    """Classify an output path: ``"video"`` (.mp4/.mov/.mkv), ``"gif"`` or ``"frames"`` (a folder: no suffix,
    an existing directory, or a path ending in a slash).

    Raises:
        ValueError: the suffix is not a supported output format.
    """
    text = str(path)
    p = Path(path)
    if text.endswith(("/", os.sep)) or p.is_dir() or p.suffix == "":
        return "frames"
    suffix = p.suffix.lower()
    if suffix in VIDEO_OUTPUTS:
        return "video"
    if suffix in GIF_OUTPUTS:
        return "gif"
    raise ValueError(f"cannot write output format '{suffix}' for {path}; use .mp4, .mov, .mkv, .gif or a folder "
                     "name for PNG frames")


def _temp_name(dest: Path) -> Path:
    """Hidden temporary sibling of ``dest`` that keeps its suffix (ffmpeg picks the container from it)."""
    return dest.with_name(f".{dest.stem}.partial-{uuid.uuid4().hex[:8]}{dest.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def even_size(frame: np.ndarray) -> np.ndarray:
    """Pad ``uint8 [H, W, 3]`` by one edge row / column where H or W is odd (H.264 with yuv420p needs even sizes)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class FrameWriter:
    """Stream ``uint8 [H, W, 3]`` frames into a video, a gif or a PNG folder, atomically.

    Use as a context manager; on an exception the partial output is deleted, otherwise :meth:`close` muxes the
    audio (if asked) and renames the temporary output to ``path`` (replacing an existing file or folder).

    Args:
        path: destination; its kind follows :func:`output_kind`.
        fps: frame rate of the video / gif (ignored for frames).
        audio_from: a media file whose first audio stream is copied into a video output (None: no audio).
            Files without audio are fine (nothing is muxed).
        quality: imageio-ffmpeg quality 0-10 for H.264 (8 -> CRF 10, visually lossless).
        png_compress_level: zlib level 0-9 of the PNG frames.

    Example::

        with FrameWriter("out.mp4", fps=30, audio_from="driving.mp4") as w:
            for frame in frames:
                w.write(frame)
    """

    def __init__(self, path: PathLike, *, fps: float = 25.0, audio_from: Optional[PathLike] = None,
                 quality: int = 8, png_compress_level: int = 1) -> None:
        self.path = Path(path)
        self.kind = output_kind(path)
        if not fps or fps <= 0 or not np.isfinite(fps):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.fps = float(fps)
        self.audio_from = Path(audio_from) if audio_from is not None and self.kind == "video" else None
        self.quality, self.png_compress_level = quality, png_compress_level
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _temp_name(self.path) if self.kind != "frames" else \
            self.path.parent / f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}"
        self._ffmpeg = None  # imageio-ffmpeg generator (video) or Popen (gif)
        self._size: Optional[tuple[int, int]] = None  # (H, W) of the first frame
        self.frames_written = 0
        self._closed = False
        self._extra_tmp: list[Path] = []  # the muxed copy, while it is being written
        if self.kind == "frames":
            self._tmp.mkdir(parents=True)

    # ------------------------------------------------------------------ writing
    def write(self, frame: np.ndarray) -> None:
        """Append one ``uint8 [H, W, 3]`` RGB frame (all frames must share one size)."""
        if self._closed:
            raise ValueError(f"writer for {self.path} is already closed")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
        if self._size is None:
            self._size = frame.shape[:2]
            self._start()
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame {self.frames_written} has size {frame.shape[:2]}, expected {self._size} "
                             f"for {self.path}")
        if self.kind == "frames":
            iio.imwrite(self._tmp / f"{self.frames_written:07d}.png", frame, plugin="pillow",
                        compress_level=self.png_compress_level)
        elif self.kind == "video":
            self._ffmpeg.send(np.ascontiguousarray(even_size(frame)))
        else:
            self._ffmpeg.stdin.write(np.ascontiguousarray(frame).tobytes())
        self.frames_written += 1

    def _start(self) -> None:
        h, w = self._size
        if self.kind == "video":
            eh, ew = h + h % 2, w + w % 2
            self._ffmpeg = imageio_ffmpeg.write_frames(
                str(self._tmp), (ew, eh), fps=self.fps, codec="libx264", quality=self.quality,
                pix_fmt_out="yuv420p", macro_block_size=1, output_params=["-movflags", "+faststart"])
            self._ffmpeg.send(None)  # start ffmpeg
        elif self.kind == "gif":
            fps = Fraction(self.fps).limit_denominator(1001)
            cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
                   "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
                   "-filter_complex", "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse",
                   "-loop", "0", str(self._tmp)]
            self._ffmpeg = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    # ------------------------------------------------------------------ finishing
    def close(self) -> Path:
        """Finish the output (flush ffmpeg, mux audio) and rename it to ``path``; returns ``path``.

        Raises:
            ValueError: no frame was written (nothing is left behind).
            RuntimeError: ffmpeg failed (nothing is left behind).
        """
        if self._closed:
            return self.path
        self._closed = True
        try:
            if self.frames_written == 0:
                raise ValueError(f"no frames were written to {self.path}")
            self._finish_encoder()
            result = self._tmp
            if self.audio_from is not None:
                result = self._mux_audio(self._tmp)
            self._install(result)
        except BaseException:
            self._cleanup()
            raise
        return self.path

    def abort(self) -> None:
        """Stop writing and delete every partial output."""
        if self._closed:
            return
        self._closed = True
        self._cleanup()

    def _finish_encoder(self) -> None:
        if self.kind == "video":
            self._ffmpeg.close()
        elif self.kind == "gif":
            _, err = self._ffmpeg.communicate()
            if self._ffmpeg.returncode != 0:
                raise RuntimeError(f"ffmpeg could not write the gif {self.path}: "
                                   f"{err.decode(errors='replace').strip()[-300:]}")
        self._ffmpeg = None

    def _mux_audio(self, video: Path) -> Path:
        """Copy the first audio stream of ``audio_from`` into ``video``; returns the muxed temp file (or
        ``video`` unchanged, with a warning, when the source has no audio or cannot be muxed)."""
        if not has_audio(self.audio_from):
            return video
        muxed = _temp_name(self.path)
        self._extra_tmp.append(muxed)
        for codec in (["-c:a", "copy"], ["-c:a", "aac", "-b:a", "192k"]):
            cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video),
                   "-i", str(self.audio_from), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *codec,
                   "-shortest", "-movflags", "+faststart", str(muxed)]
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
            if proc.returncode == 0:
                _remove(video)
                return muxed
            _remove(muxed)
        logger.warning("could not copy the audio of %s into %s (%s); writing the video without audio",
                       self.audio_from, self.path, proc.stderr.decode(errors="replace").strip()[-200:])
        return video

    def _install(self, result: Path) -> None:
        if self.kind == "frames" and self.path.exists():
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.path, old)
            os.replace(result, self.path)
            _remove(old)
        else:
            os.replace(result, self.path)

    def _cleanup(self) -> None:
        if self._ffmpeg is not None:
            try:
                if self.kind == "video":
                    self._ffmpeg.close()
                else:
                    self._ffmpeg.kill()
                    self._ffmpeg.wait()
            except (OSError, RuntimeError, ValueError) as err:  # ffmpeg already gone
                logger.debug("ffmpeg cleanup for %s: %s", self.path, err)
            self._ffmpeg = None
        for tmp in (self._tmp, *self._extra_tmp):
            _remove(tmp)

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def has_audio(path: PathLike) -> bool:
    """Whether the media file ``path`` has an audio stream (read from ffmpeg's stream listing; False for
    folders, images and unreadable files)."""
    path = Path(path)
    if not path.is_file():
        return False
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    return any("Audio:" in ln and "Stream #" in ln for ln in proc.stderr.decode(errors="replace").splitlines())


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
