"""Process memory: readings for the benchmarks (CPU: resident set size from /proc) and the allocator setting
that keeps freed memory in the process."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def rss_mib() -> float:
    """Current resident set size of this process in MiB (NaN where /proc is unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Ask glibc's malloc to serve blocks up to ``threshold`` bytes from its heap and to keep freed memory
    instead of returning it to the system (``mallopt`` M_MMAP_THRESHOLD and M_TRIM_THRESHOLD).

    A forward allocates and frees buffers of tens of MB per frame (the 256 px refinement level); by default glibc
    maps each with mmap and unmaps it on free, so every frame pays the page faults again. Kept, the memory is
    reused: the arithmetic is unchanged (outputs are bit-identical), resident memory stays near the peak.
    Process-wide; returns False where it cannot apply (not Linux with glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * threshold))
