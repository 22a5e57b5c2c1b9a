"""Writing, atomically: the one writer of mrfa for videos, gifs, PNG-frame folders, checkpoints and JSON reports.

Not a paper box. Three rules hold for every output mrfa writes (the output-path policy, :func:`check_output`):

1. an output never replaces one of the command's inputs (same file, or a folder that holds an input);
2. an output never lies inside an input folder;
3. an existing file is replaced only when the caller asks (``overwrite=True``, the CLIs' ``--overwrite``), and an
   existing folder only when it is empty or holds nothing but what mrfa writes there (PNG frames named
   ``0000000.png``..., or the layout the command names, e.g. ``png/ mp4/ metrics.json``), hidden names included:
   a folder with anything else in it (``.git``, ``.env``, a file of yours) is never deleted, and a replaced folder
   is replaced whole;
4. every output is written under a hidden temporary sibling name (``.NAME.partial-PID-XXXX``) and renamed onto its
   final name only when complete, so an interrupted or failed run never leaves a file that looks finished.
   The rename checks the policy again, atomically: an output that another run created meanwhile is not replaced
   without ``overwrite`` (a hard link that refuses an existing name, for files; a rename that refuses a non-empty
   folder, for folders). Temporary siblings left by a killed process (its PID no longer runs) are removed by the
   next write of the same output.

Videos are streamed to the imageio-ffmpeg ffmpeg binary (memory stays flat with the clip length); success is
ffmpeg's exit status *and* a probe of the finished file that finds every frame written, so a full disk that only
shows when ffmpeg writes the index fails the write and keeps the previous output. The audio track of the driving
video can be muxed in afterwards (stream copy, or AAC when the codec does not fit the container), cut or left
short to the video's duration so that every frame stays, as FOMM's ``--audio`` demo option does; a failed mux is
reported (:attr:`FrameWriter.audio_error`), never hidden.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import imageio.v3 as iio
import numpy as np

from . import ffmpeg

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
VIDEO_OUTPUTS = (".mp4", ".mov", ".mkv")
GIF_OUTPUTS = (".gif",)


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


FRAME_NAME = re.compile(r"\d{7}\.png")  # the PNG frames mrfa writes: 0000000.png, 0000001.png, ...
PARTIAL_NAME = re.compile(r"\..*\.partial-\d+-[0-9a-z]+(\.\w+)?")  # mrfa's own temporary siblings
NAME_MAX = 255  # bytes of one file name on the file systems mrfa writes to


class OutputError(ValueError):
    """An output path that would destroy data (an input, an existing file, a folder mrfa did not create)."""


class WriteError(OSError):
    """Writing failed (disk full, permission, missing codec); the message says which and names the file."""


def _temp_stem(dest: Path) -> str:
    """The stem used in temporary names of ``dest``, shortened so that the temporary name fits in one file name
    (the final name may use all 255 bytes)."""
    room = NAME_MAX - len(".partial-4194304-abcdef01".encode()) - 1 - len(dest.suffix.encode())
    stem = dest.stem
    while len(stem.encode()) > room:
        stem = stem[:-1]
    return stem


def _temp_name(dest: Path, tag: str = "") -> Path:
    """Hidden temporary sibling of ``dest`` that keeps its suffix (ffmpeg picks the container from it) and carries
    the writer's PID (so a later run can tell a stale leftover from a live write)."""
    return dest.with_name(f".{_temp_stem(dest)}.partial-{os.getpid()}-{tag}{uuid.uuid4().hex[:8]}{dest.suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(dest: Path) -> list[Path]:
    """Delete temporary siblings of ``dest`` left by processes that no longer run; returns what was removed."""
    removed = []
    if not dest.parent.is_dir():
        return removed
    for p in dest.parent.glob(f".{glob_escape(_temp_stem(dest))}.partial-*"):
        parts = p.name.split(".partial-", 1)[1].split("-")
        if len(parts) >= 2 and parts[0].isdigit() and not _pid_alive(int(parts[0])):
            _remove(p)
            removed.append(p)
    return removed


def glob_escape(text: str) -> str:
    """``text`` with the glob metacharacters ``* ? [`` taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def foreign_entries(folder: Path, layout: Sequence[str] = ()) -> list[str]:
    """Names in ``folder`` that mrfa would not have written there, hidden names included (only mrfa's own
    temporary siblings ``.NAME.partial-PID-XXXX`` are not counted)."""
    return sorted(p.name for p in folder.iterdir()
                  if not PARTIAL_NAME.fullmatch(p.name) and not FRAME_NAME.fullmatch(p.name) and p.name not in layout)


def _holds_output(folder: Path) -> bool:
    return any(not PARTIAL_NAME.fullmatch(p.name) for p in folder.iterdir())


def check_output(path: PathLike, *, inputs: Sequence[Optional[PathLike]] = (), overwrite: bool = False,
                 what: str = "--output", layout: Sequence[str] = ()) -> Path:
    """Apply the output-path policy (module docstring) before anything is computed; returns ``path``.

    Args:
        path: the output the command will write (file or folder).
        inputs: the command's input files / folders (None entries are ignored).
        overwrite: allow replacing an existing file, or an existing folder that mrfa wrote.
        what: how the output is named in messages (the CLI flag).
        layout: names a command writes into its output folder (besides PNG frames).

    Raises:
        OutputError: the output is an input, lies inside an input folder, holds an input, exists and
            ``overwrite`` is off, or is a non-empty folder mrfa did not write.
    """
    if str(path) == "":
        raise OutputError(f"{what} is empty; name the file or folder to write")
    path = Path(path)
    target = path.resolve()
    for item in inputs:
        if item is None or str(item) == "":
            continue
        src = Path(item).resolve()
        if target == src or _is_within(src, target):
            raise OutputError(f"{what} {path} would overwrite the input {item}; choose another output name")
        if src.is_dir() and _is_within(target, src):
            raise OutputError(f"{what} {path} lies inside the input folder {item}; write it somewhere else")
    if (path.exists() or path.is_symlink()) and not path.is_dir() and not overwrite:
        raise OutputError(f"{what} {path} already exists; pass --overwrite to replace it")
    if path.is_dir():
        foreign = foreign_entries(path, layout)
        if foreign:
            raise OutputError(f"{what} {path} is a folder holding files mrfa did not write ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder (it is never "
                              "deleted)")
        if _holds_output(path) and not overwrite:
            raise OutputError(f"{what} {path} holds an earlier mrfa output; pass --overwrite to replace it")
    return path


@contextlib.contextmanager
def atomic_path(path: PathLike, *, fsync: bool = True, overwrite: bool = False,
                layout: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a hidden temporary sibling path of ``path``; when the block ends normally it is installed onto
    ``path`` (after an fsync of a file, by :func:`install`), otherwise it is deleted. The caller writes the
    temporary path.

    Args:
        overwrite: an existing ``path`` may be replaced (else :class:`OutputError` at the rename, and the new
            output is deleted).
        layout: for a folder, the names mrfa writes in it (an existing folder holding anything else is kept).

    Raises:
        WriteError: the folder cannot be created or written (the message names the disk / permission problem).
        OutputError: ``path`` exists (created meanwhile by another run) and ``overwrite`` is off.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(describe_os_error(err, path)) from None
    remove_stale_partials(path)
    tmp = _temp_name(path)
    try:
        yield tmp
        if fsync and tmp.is_file():
            _fsync(tmp)
        install(tmp, path, overwrite=overwrite, layout=layout)
    except OutputError:
        _remove(tmp)
        raise
    except OSError as err:
        _remove(tmp)
        raise WriteError(describe_os_error(err, path)) from None
    except BaseException:
        _remove(tmp)
        raise


def install(tmp: Path, dest: Path, *, overwrite: bool, layout: Sequence[str] = ()) -> None:
    """Rename the finished ``tmp`` onto ``dest``, checking the output policy at that moment.

    Without ``overwrite`` an existing ``dest`` is never replaced, atomically: a file goes in by a hard link, which
    fails when the name exists (then the link is dropped); a folder by a rename, which fails onto a non-empty
    folder. With ``overwrite`` an existing file is replaced by one rename; an existing folder only when it holds
    nothing but mrfa output (``layout``), and then whole.

    Raises:
        OutputError: ``dest`` exists and may not be replaced (``tmp`` is left for the caller to delete).
    """
    taken = OutputError(f"{dest} was created by another run while this one worked; it is left untouched "
                        "(pass --overwrite to replace it)")
    if tmp.is_dir() and not tmp.is_symlink():
        if dest.is_dir() and not dest.is_symlink() and overwrite:
            foreign = foreign_entries(dest, layout)
            if foreign:
                raise OutputError(f"{dest} holds files mrfa did not write ({', '.join(foreign[:3])}); it is left "
                                  "untouched")
            old = _temp_name(dest, "old")
            os.replace(dest, old)
            os.replace(tmp, dest)
            _remove(old)
            return
        if (dest.exists() or dest.is_symlink()) and not dest.is_dir():
            if not overwrite:
                raise taken
            dest.unlink()
        try:
            os.rename(tmp, dest)  # onto an empty folder: allowed; onto a non-empty one: refused by the kernel
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise taken from None
            raise
        return
    if overwrite:
        if dest.is_dir() and not dest.is_symlink():
            raise OutputError(f"{dest} is a folder; a file cannot replace it")
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise taken from None
    except OSError as err:  # no hard links on this file system: check, then rename (a narrow window remains)
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if dest.exists() or dest.is_symlink():
            raise taken from None
        os.replace(tmp, dest)
        return
    tmp.unlink()


def _fsync(path: Path) -> None:
    """Flush a finished file to the disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe_os_error(err: BaseException, path: PathLike) -> str:
    """One sentence for a failed write of ``path``: disk full, permission, read-only file system, or the reason."""
    import errno

    code = getattr(err, "errno", None)
    text = str(err)
    if code == errno.ENOSPC or "No space left" in text or "unexpected pos" in text:
        return f"could not write {path}: the disk is full"
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return f"could not write {path}: permission denied (choose a writable folder)"
    if code == errno.EROFS or "Read-only file system" in text:
        return f"could not write {path}: the file system is read-only"
    reason = (getattr(err, "strerror", None) or text.strip().splitlines()[-1:] or [type(err).__name__])
    reason = reason if isinstance(reason, str) else reason[0]
    return f"could not write {path}: {reason}"


def ffmpeg_reason(log: str, path: PathLike) -> str:
    """Translate ffmpeg's error log into one sentence about ``path`` (disk full, permission, codec, or the last
    line)."""
    low = log.lower()
    if "no space left" in low:
        return f"could not write {path}: the disk is full"
    if "permission denied" in low:
        return f"could not write {path}: permission denied (choose a writable folder)"
    if "read-only file system" in low:
        return f"could not write {path}: the file system is read-only"
    if "unknown encoder" in low or "encoder not found" in low:
        return f"could not write {path}: this ffmpeg build lacks the codec"
    lines = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
    return f"ffmpeg could not write {path}: {lines[-1] if lines else 'unknown error'}"


def json_safe(obj: object) -> object:
    """Recursively convert numpy scalars / Paths and encode non-finite floats as "inf"/"-inf"/"nan"."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: PathLike, report: object, *, indent: Optional[int] = 1, overwrite: bool = False) -> Path:
    """Write ``report`` atomically as strict JSON (``allow_nan=False``) after :func:`json_safe`."""
    return atomic_write_text(path, json.dumps(json_safe(report), indent=indent, allow_nan=False) + "\n",
                             overwrite=overwrite)


def atomic_write_text(path: PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_with(path: PathLike, write: Callable[[Any], None], *, overwrite: bool = False) -> Path:
    """Call ``write(binary_file)`` on a temporary sibling of ``path`` and rename it into place (used for
    ``torch.save`` of checkpoints: media does not need to know the format)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            write(f)
    return Path(path)


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
        crf: an explicit H.264 CRF instead of ``quality`` (``mrfa crop`` uses 18).
        png_compress_level: zlib level 0-9 of the PNG frames.
        overwrite: an existing output may be replaced (else it is refused at the rename, :func:`install`).
        layout: for a folder output, the names mrfa writes in it besides PNG frames.

    Example::

        with FrameWriter("out.mp4", fps=30, audio_from="driving.mp4") as w:
            for frame in frames:
                w.write(frame)
    """

    def __init__(self, path: PathLike, *, fps: float = 25.0, audio_from: Optional[PathLike] = None,
                 quality: int = 8, crf: Optional[int] = None, png_compress_level: int = 1,
                 overwrite: bool = False, layout: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.overwrite, self.layout = overwrite, tuple(layout)
        self.kind = output_kind(path)
        if not fps or fps <= 0 or not np.isfinite(fps):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.fps = float(fps)
        self.audio_from = Path(audio_from) if audio_from is not None and self.kind == "video" else None
        self.quality, self.crf, self.png_compress_level = quality, crf, png_compress_level
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WriteError(describe_os_error(err, self.path)) from None
        remove_stale_partials(self.path)
        self._tmp = _temp_name(self.path)
        self.audio_error: Optional[str] = None  # why the audio could not be muxed (None: muxed, or not asked)
        self.audio_muxed = False
        self._ffmpeg: Optional[subprocess.Popen] = None  # the encoder (video, gif)
        self._log: Optional[Any] = None  # ffmpeg's stderr, in a temporary file (a pipe could fill and block it)
        self._size: Optional[tuple[int, int]] = None  # (H, W) of the first frame
        self.frames_written = 0
        self._closed = False
        self._extra_tmp: list[Path] = []  # the muxed copy, while it is being written
        if self.kind == "frames":
            try:
                self._tmp.mkdir(parents=True)
            except OSError as err:
                raise WriteError(describe_os_error(err, self.path)) from None

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
        try:
            if self.kind == "frames":
                iio.imwrite(self._tmp / f"{self.frames_written:07d}.png", frame, plugin="pillow",
                            compress_level=self.png_compress_level)
            else:
                data = even_size(frame) if self.kind == "video" else frame
                self._ffmpeg.stdin.write(np.ascontiguousarray(data).tobytes())
        except (OSError, RuntimeError) as err:  # ffmpeg died (disk full, permission): say why, in one sentence
            raise WriteError(self._why(err)) from None
        self.frames_written += 1

    def _ffmpeg_log(self) -> str:
        if self._log is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._log.seek(0)
            return self._log.read().decode(errors="replace")
        return ""

    def _why(self, err: BaseException) -> str:
        """The reason of a failed write: ffmpeg's own log where it has one, else the OS error."""
        log = str(err)
        if self._ffmpeg is not None:
            with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
                self._ffmpeg.kill()
                self._ffmpeg.wait(timeout=10)
            log += "\n" + self._ffmpeg_log()
        if isinstance(err, OSError) and not isinstance(err, BrokenPipeError):
            return describe_os_error(err, self.path)
        free = shutil.disk_usage(self.path.parent).free if self.path.parent.exists() else 0
        if free < 1 << 20 and "no space left" not in log.lower():
            return f"could not write {self.path}: the disk is full"
        if not os.access(self.path.parent, os.W_OK):
            return f"could not write {self.path}: permission denied (choose a writable folder)"
        return ffmpeg_reason(log, self.path)

    def _start(self) -> None:
        h, w = self._size
        if self.kind == "frames":
            return
        if not os.access(self.path.parent, os.W_OK):
            raise WriteError(f"could not write {self.path}: permission denied (choose a writable folder)")
        fps = Fraction(self.fps).limit_denominator(1001 if self.kind == "gif" else 1000000)
        if self.kind == "video":
            eh, ew = h + h % 2, w + w % 2
            crf = self.crf if self.crf is not None else int((1 - self.quality / 10.0) * 51)  # imageio's scale
            tail = ["-an", "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-movflags", "+faststart"]
        else:
            eh, ew = h, w
            tail = ["-filter_complex", "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1", "-loop", "0"]
        cmd = [ffmpeg.exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo",
               "-vcodec", "rawvideo", "-s", f"{ew}x{eh}", "-pix_fmt", "rgb24", "-r", str(fps), "-i", "-", *tail,
               ffmpeg.file_arg(self._tmp)]
        self._log = tempfile.TemporaryFile()
        self._ffmpeg = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

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
        self._cleanup()  # the log; the outputs are in place
        return self.path

    def abort(self) -> None:
        """Stop writing and delete every partial output."""
        if self._closed:
            return
        self._closed = True
        self._cleanup()

    def _finish_encoder(self) -> None:
        """Close the encoder's input and wait for it: success is its exit status 0 *and* a probe of the written
        file that finds every frame (a trailer that could not be written leaves a file ffmpeg cannot open)."""
        if self.kind == "frames":
            return
        try:
            try:
                self._ffmpeg.stdin.close()
            except BrokenPipeError:
                pass
            code = self._ffmpeg.wait()
            if code != 0:
                raise WriteError(self._why(RuntimeError(f"ffmpeg exit status {code}")))
        except OSError as err:
            if isinstance(err, WriteError):
                raise
            raise WriteError(self._why(err)) from None
        finally:
            self._ffmpeg = None
        if self.kind == "video":
            self._verify(self._tmp)

    def _verify(self, video: Path) -> None:
        """Probe a finished video: it must open and hold every frame written."""
        found = ffmpeg.count_packets(video)
        if found != self.frames_written:
            free = shutil.disk_usage(video.parent).free if video.parent.exists() else 0
            if free < 1 << 20:
                raise WriteError(f"could not write {self.path}: the disk is full")
            got = "cannot be read back" if found is None else f"holds {found} of {self.frames_written} frames"
            raise WriteError(f"could not write {self.path}: the encoded video {got}")

    def _mux_audio(self, video: Path) -> Path:
        """Copy the first audio stream of ``audio_from`` into ``video``; returns the muxed temp file (or
        ``video`` unchanged, with a warning, when the source has no audio or cannot be muxed)."""
        if not has_audio(self.audio_from):
            self.audio_error = f"{self.audio_from} has no audio track"
            return video
        muxed = _temp_name(self.path)
        self._extra_tmp.append(muxed)
        # the video's duration decides: a longer audio track is cut there, a shorter one simply ends early (never
        # ``-shortest``, which would drop the last frames against a track a few milliseconds shorter)
        duration = f"{self.frames_written / self.fps:.6f}"
        for codec in (["-c:a", "copy"], ["-c:a", "aac", "-b:a", "192k"]):
            cmd = [ffmpeg.exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", ffmpeg.file_arg(video),
                   "-i", ffmpeg.file_arg(self.audio_from), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *codec,
                   "-t", duration, "-movflags", "+faststart", ffmpeg.file_arg(muxed)]
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
            if proc.returncode == 0 and ffmpeg.count_packets(muxed) == self.frames_written:
                _remove(video)
                self.audio_muxed = True
                return muxed
            _remove(muxed)
            if "no space left" in proc.stderr.decode(errors="replace").lower():
                raise WriteError(f"could not write {self.path}: the disk is full")
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        self.audio_error = f"could not copy the audio of {self.audio_from}: {reason[-1] if reason else 'ffmpeg failed'}"
        return video

    def _install(self, result: Path) -> None:
        """Rename the finished output onto ``path`` under the output policy, checked again now (:func:`install`):
        an output created meanwhile is replaced only with ``overwrite``, a folder only when it is mrfa's."""
        try:
            if result.is_file():
                _fsync(result)
            install(result, self.path, overwrite=self.overwrite, layout=self.layout)
        except OSError as err:
            raise WriteError(describe_os_error(err, self.path)) from None

    def _cleanup(self) -> None:
        if self._ffmpeg is not None:
            try:
                self._ffmpeg.kill()
                self._ffmpeg.wait()
            except (OSError, RuntimeError, ValueError) as err:  # ffmpeg already gone
                logger.debug("ffmpeg cleanup for %s: %s", self.path, err)
            self._ffmpeg = None
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
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
    cmd = [ffmpeg.exe(), "-hide_banner", "-nostdin", "-i", ffmpeg.file_arg(path)]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    return any("Audio:" in ln and "Stream #" in ln for ln in proc.stderr.decode(errors="replace").splitlines())
