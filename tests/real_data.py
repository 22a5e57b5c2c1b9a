"""Where the real-footage checks find their face clips and portraits.

Real footage is never part of the repository (its rights are unknown). ``$MRFA_REAL_DATA`` names a folder of it;
otherwise a ``shared/data/real`` folder beside the checkout is used when one exists. Tests that need a file call
:func:`real_path`, which skips with a one-line reason when it is absent; every code path they cover is also tested
on generated media.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA = Path(os.environ.get("MRFA_REAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "real")


def real_path(rel: str) -> Path:
    """``REAL_DATA / rel``, or a skip ("real footage ... not available") when it does not exist."""
    path = REAL_DATA / rel
    if not path.exists():
        pytest.skip(f"real footage {rel} not available (set MRFA_REAL_DATA to a folder holding it)")
    return path
