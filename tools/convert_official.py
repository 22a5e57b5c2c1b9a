#!/usr/bin/env python
"""Convert an official MRFA checkpoint into an mrfa snapshot: python tools/convert_official.py IN OUT [--config C]."""
import sys

from mrfa.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
