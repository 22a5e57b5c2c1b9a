"""Train MRFA from a YAML config: ``python tools/train.py --config configs/demo.yaml [--set k=v ...]
[--output DIR] [--resume DIR_or_CKPT] [--device cpu|cuda] [--dry-run]``; multi-GPU with
``torchrun --nproc_per_node=N tools/train.py ...``. The same as ``mrfa train`` (mrfa/commands/train.py)."""
from __future__ import annotations

import sys

from mrfa.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
