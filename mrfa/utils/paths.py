"""Input paths: a file mrfa reads must be a regular file (or a folder where a folder is expected).

Not a paper box. A named pipe, a device such as ``/dev/zero`` or a socket would block a reader forever or feed it
endless bytes, so it is refused with a sentence saying what it is; "not found" is kept for paths that do not exist.
"""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Union

PathLike = Union[str, Path]


def describe(path: PathLike) -> str:
    """What ``path`` is, in words: "a folder", "a named pipe (FIFO)", "a device", "a socket", "a file"."""
    mode = Path(path).stat().st_mode
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file"


def require_file(path: PathLike, what: str, *, folder_ok: bool = False) -> Path:
    """``path`` if it is a regular file (or, with ``folder_ok``, a folder).

    Raises:
        FileNotFoundError: it does not exist ("``what`` not found: PATH").
        ValueError: it exists but is something else ("``what`` PATH is a named pipe (FIFO), not a regular file").
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.is_file() or (folder_ok and path.is_dir()):
        return path
    expected = "a regular file or a folder" if folder_ok else "a regular file"
    raise ValueError(f"{what} {path} is {describe(path)}, not {expected}")
