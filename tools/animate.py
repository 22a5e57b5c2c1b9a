#!/usr/bin/env python
"""Animate a portrait with a driving video: ``python tools/animate.py --checkpoint C --source IMG --driving VID
--output OUT.mp4 [...]``, the same as ``mrfa animate`` (see ``mrfa animate --help`` and docs/animation.md)."""
from __future__ import annotations

import sys

from mrfa.cli import main

if __name__ == "__main__":
    sys.exit(main(["animate", *sys.argv[1:]]))
