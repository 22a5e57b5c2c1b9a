"""Process memory readings for the benchmarks (CPU: resident set size from /proc)."""
from __future__ import annotations


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
