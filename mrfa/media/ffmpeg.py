"""The ffmpeg binary of imageio-ffmpeg, called the one safe way.

Not a paper box. Every path handed to ffmpeg goes through :func:`file_arg`, which gives it the ``file:`` protocol
prefix, so a file named ``concat:a.mp4|b.mp4`` or ``http://...`` is read or written as that file and never as a
URL or protocol. :func:`count_packets` is the cheap probe of a finished video (stream copy, no decoding).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Optional, Union

import imageio_ffmpeg

PathLike = Union[str, Path]


def exe() -> str:
    """Path of the ffmpeg executable shipped with imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def file_arg(path: PathLike) -> str:
    """``path`` as an ffmpeg argument that can only mean a local file (``file:/absolute/path``)."""
    return "file:" + os.path.abspath(os.fspath(path))


def count_packets(path: PathLike) -> Optional[int]:
    """Number of video packets of a media file, read with a stream copy (no decoding); None when ffmpeg cannot
    open the file or finds no video stream in it (a truncated mp4 without its index, for example)."""
    cmd = [exe(), "-hide_banner", "-nostdin", "-i", file_arg(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    log = proc.stderr.decode(errors="replace")
    if proc.returncode != 0 or not re.search(r"Stream #.*Video:", log):
        return None
    counts = re.findall(r"frame=\s*(\d+)", log)
    return int(counts[-1]) if counts else None
