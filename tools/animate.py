#!/usr/bin/env python
"""Animate a portrait with a driving video: ``python tools/animate.py --checkpoint C --source IMG --driving VID
--output OUT.mp4 [...]``, the same as ``mrfa animate`` (see ``mrfa animate --help`` and docs/animation.md)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mrfa.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["animate", *sys.argv[1:]]))
