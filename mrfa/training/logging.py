"""Training logs (not a paper box): tqdm progress, a JSONL log and TensorBoard, all on rank 0 only.

Per logged step ``log.jsonl`` gets one line ``{"step", "epoch", "loss/<term>", "loss/total", "lr/<group>",
"perf/samples_per_s", "perf/sec_per_step", "perf/data_fraction", "data/skipped_videos", "time"}`` and TensorBoard
gets the same scalars (tags as the keys). Image grids go to TensorBoard (``train/grid``) and to
``images/step_XXXXXXXX.png``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from mrfa.media.video import write_image
from mrfa.media.writer import atomic_write_text


class TrainLogger:
    """Rank-0 logger; every method is a no-op on the other ranks.

    Args:
        output: run folder (gets ``log.jsonl``, ``tensorboard/`` and ``images/``).
        enabled: True on rank 0.
        total_steps: for the progress bar (None = unknown).
        start_step: first step of this (possibly resumed) run.
    """

    def __init__(self, output: Path, *, enabled: bool, total_steps: Optional[int], start_step: int) -> None:
        self.enabled = enabled
        self.output = Path(output)
        self.writer = None
        self.bar = None
        self._jsonl = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.output.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.output / "tensorboard"), purge_step=start_step + 1)
        _truncate_log(self.output / "log.jsonl", start_step)  # a resumed run re-logs the steps after its state
        self._jsonl = open(self.output / "log.jsonl", "a", encoding="utf-8")
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                        mininterval=1.0)

    def message(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def advance(self, steps: int = 1, postfix: Optional[dict[str, float]] = None) -> None:
        if self.bar is None:
            return
        self.bar.update(steps)
        if postfix:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        """Write one JSONL record and the numeric values as TensorBoard scalars."""
        if not self.enabled:
            return
        record = {"step": step, **values, "time": round(time.time(), 3)}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)) and key not in ("epoch",):
                self.writer.add_scalar(key, value, step)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """uint8 [H, W, 3] image to TensorBoard and ``images/<tag>_step_XXXXXXXX.png``."""
        if not self.enabled:
            return
        self.writer.add_image(tag, image, step, dataformats="HWC")
        folder = self.output / "images"
        folder.mkdir(exist_ok=True)
        write_image(folder / f"{tag.replace('/', '_')}_step_{step:08d}.png", image, overwrite=True)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _truncate_log(path: Path, start_step: int) -> None:
    """Drop the records of steps after ``start_step`` (written by a run that was killed after its last training
    state), so resuming from that state does not duplicate them; a torn last line is dropped too."""
    if not path.is_file():
        return
    kept, changed = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            step = json.loads(line).get("step", 0)
        except (json.JSONDecodeError, AttributeError):
            changed = True
            continue
        if isinstance(step, (int, float)) and step > start_step:
            changed = True
            continue
        kept.append(line)
    if changed:
        atomic_write_text(path, "".join(ln + "\n" for ln in kept), overwrite=True)
