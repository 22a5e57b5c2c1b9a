"""Dataset-scale runs: a list of items sharded exactly over torchrun processes, resumable, merged by rank 0.

Not a paper box; the engine of ``mrfa reconstruct`` and ``mrfa animate --pairs`` (one process or
``torchrun --nproc_per_node=N [--nnodes ...] -m mrfa ...``; the output folder must be shared by all ranks).

* **Exact split.** Every rank computes the same item list and takes its share by longest-processing-time
  assignment on the items' weights (frame counts from the headers): each item once, no padding, no duplicate
  (a DistributedSampler pads the list, which skews averaged metrics).
* **Records.** When an item's outputs are complete, its record (metrics, frames, seconds, the checkpoint's
  SHA-256 and the options) is written atomically to ``OUT/records/<item>.json``. A bad item (unreadable video, no
  face) gets a record with its error and the run goes on.
* **Resume.** The same command run again skips the items whose record matches the checkpoint and the options,
  and redoes the rest (a killed rank's items included); records made with another checkpoint or other options
  are refused unless ``overwrite``, which empties the folder first (it holds only what mrfa wrote).
* **Merge.** After all ranks finish (a gloo barrier), rank 0 reads the records in item order and writes
  ``OUT/metrics.json``: the same file a one-process run writes.
* **Progress.** One bar on rank 0 for the whole run (items and frames of all ranks, read from the records).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from tqdm import tqdm

from mrfa.media.writer import OutputError, check_output, foreign_entries, write_json
from mrfa.utils import distributed as D

RECORDS = "records"
REPORT = "metrics.json"
RECORD_FORMAT = "mrfa-item/1"


@dataclass(frozen=True)
class WorkItem:
    """One unit of work: a unique ``key`` (a file name), a ``weight`` for balancing (frames), and what the
    process function needs (``payload``, JSON-able)."""

    key: str
    weight: int
    payload: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def safe_key(text: str, limit: int = 150) -> str:
    """A file name made from ``text``: path separators and unusual characters become ``_``, length bounded."""
    key = re.sub(r"[^A-Za-z0-9._#+=-]", "_", text).strip(".") or "item"
    return key[:limit]


def split(items: Sequence[WorkItem], world: int, rank: int) -> list[WorkItem]:
    """This rank's share: items by descending weight (then key), each to the rank with the least weight so far
    (ties: the lowest rank). Every item goes to exactly one rank; the result keeps the input order."""
    loads = [0] * world
    owner: dict[str, int] = {}
    for item in sorted(items, key=lambda it: (-max(it.weight, 1), it.key)):
        r = min(range(world), key=lambda i: (loads[i], i))
        owner[item.key] = r
        loads[r] += max(item.weight, 1)
    return [it for it in items if owner[it.key] == rank]


def checkpoint_sha256(path: Any) -> str:
    """SHA-256 of a checkpoint file; of its ``manifest.json`` for an exported folder; of the weights for a model
    object (so that records made with other weights are told apart)."""
    if isinstance(path, torch.nn.Module):
        h = hashlib.sha256()
        for name, tensor in sorted(path.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RecordStore:
    """The ``records/`` folder of a run: one JSON file per item, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def read(self, key: str) -> Optional[dict[str, Any]]:
        try:
            record = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None

    def read_all(self) -> dict[str, dict[str, Any]]:
        if not self.folder.is_dir():
            return {}
        found = {}
        for p in self.folder.glob("*.json"):
            record = self.read(p.stem)
            if record is not None:
                found[p.stem] = record
        return found

    def write(self, key: str, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.path(key), record, overwrite=True)


def prepare_output(output: Path, *, inputs: Sequence[Any], overwrite: bool, layout: Sequence[str],
                   signature: dict[str, Any]) -> None:
    """The output policy of a batch run (rank 0, before any work): never an input or inside one; an existing
    folder must hold only what mrfa writes; records of another checkpoint or other options are refused unless
    ``overwrite``, which empties the folder; a folder of an earlier run without records needs ``overwrite``.

    Raises:
        OutputError: one sentence naming the folder and what to do.
    """
    layout = tuple(layout) + (RECORDS, REPORT)
    check_output(output, inputs=inputs, overwrite=True, layout=layout)  # inputs and foreign files
    if not output.is_dir():
        return
    if overwrite:
        for p in output.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        return
    records = RecordStore(output / RECORDS).read_all()
    other = next((r for r in records.values() if r.get("signature") != signature), None)
    if other is not None:
        what = "another checkpoint" if other.get("signature", {}).get("checkpoint_sha256") != \
            signature["checkpoint_sha256"] else "other options"
        raise OutputError(f"{output} holds results made with {what} (item {other.get('key')}); pass --overwrite to "
                          "start over, or choose another output folder")
    leftovers = [n for n in foreign_entries(output, ()) if n != RECORDS]
    if leftovers and not records:
        raise OutputError(f"{output} holds an earlier mrfa output without resumable records; pass --overwrite to "
                          "replace it")


def _progress(store: RecordStore, total_items: int, total_frames: int, stop: threading.Event) -> None:
    """Rank 0's bar over the whole run, fed by the records of every rank."""
    seen: set[str] = set()
    frames = 0
    with tqdm(total=total_items, unit="item", desc="items", leave=False) as bar:
        while True:
            finished = stop.is_set()
            if store.folder.is_dir():
                for p in store.folder.glob("*.json"):
                    if p.stem not in seen:
                        record = store.read(p.stem)
                        if record is not None:
                            seen.add(p.stem)
                            frames += int(record.get("frames") or 0)
                            bar.update(1)
                            bar.set_postfix_str(f"{frames}/{total_frames} frames")
            if finished:
                return
            stop.wait(0.5)


@dataclass
class BatchRun:
    """What a batch command runs.

    Attributes:
        output: the shared output folder. items: the whole list (same on every rank, keys unique).
        signature: checkpoint SHA-256 and options; records must match it to be reused.
        process: does one item (writes its outputs atomically) and returns its record fields (``frames`` at
            least); raises ValueError / OSError / RuntimeError for a bad item.
        merge: ``[(item, record)]`` in item order (failed ones included, with ``error``) -> the report.
        layout: names the command writes in the output folder (besides records and the report).
        inputs: input files / folders (the output may not be or lie inside one).
    """

    output: Path
    items: list[WorkItem]
    signature: dict[str, Any]
    process: Callable[[WorkItem], dict[str, Any]]
    merge: Callable[[list[tuple[WorkItem, dict[str, Any]]]], dict[str, Any]]
    layout: tuple[str, ...] = ()
    inputs: tuple[Any, ...] = ()
    overwrite: bool = False


def run_batch(run: BatchRun, dist: D.DistInfo, *, progress: bool = True) -> Optional[dict[str, Any]]:
    """Do this rank's share of ``run`` and, on rank 0, merge every record into ``OUT/metrics.json``.

    Returns:
        the merged report on rank 0, None on the other ranks.
    """
    keys = [it.key for it in run.items]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"two items would write the same output {dup!r}; give them distinct names")
    if dist.is_main:
        prepare_output(run.output, inputs=run.inputs, overwrite=run.overwrite, layout=run.layout,
                       signature=run.signature)
        run.output.mkdir(parents=True, exist_ok=True)
    D.barrier()
    store = RecordStore(run.output / RECORDS)
    done = {k for k, r in store.read_all().items() if r.get("signature") == run.signature and "error" not in r}
    todo = [it for it in run.items if it.key not in done]
    mine = split(todo, dist.world_size, dist.rank)
    stop = threading.Event()
    watcher = None
    if progress and dist.is_main:
        watcher = threading.Thread(target=_progress, args=(store, len(run.items), sum(it.weight for it in run.items),
                                                           stop), daemon=True)
        watcher.start()
    try:
        for item in mine:
            start = time.perf_counter()
            try:
                fields = run.process(item)
            except (ValueError, OSError, RuntimeError) as err:
                lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
                fields = {"error": lines[0] if lines else type(err).__name__, "frames": 0}
            record = {"format": RECORD_FORMAT, "key": item.key, **fields, "seconds": time.perf_counter() - start,
                      "rank": dist.rank, "signature": run.signature}
            store.write(item.key, record)
        D.barrier()
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=5)
    if not dist.is_main:
        return None
    records = store.read_all()
    missing = [it.key for it in run.items if it.key not in records]
    if missing:
        raise RuntimeError(f"{len(missing)} items have no record after the run (first: {missing[0]}); run the same "
                           "command again to finish them")
    report = run.merge([(it, records[it.key]) for it in run.items])
    write_json(run.output / REPORT, report, overwrite=True)
    return report


def init_batch(device: str) -> D.DistInfo:
    """Join the torchrun group (gloo, for the barriers; a day's timeout so that an uneven share never trips it)."""
    return D.init_distributed(device, backend="gloo", timeout=datetime.timedelta(hours=24))
