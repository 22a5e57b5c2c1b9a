"""Re-compact a set of parity fixtures for the repository (tests/fixtures/parity/).

The recorded fixtures store every intermediate tensor of the official network; six of them take about 50 MB.
The repository keeps all six variants (MTIA, FOMM, TPS, prior-only, background predictor, train-mode BatchNorm
with losses) in under 30 MB with two lossless-for-the-test changes:

1. the uint8 input images, identical in every file, are stored once: the other files hold
   ``{"same_as": FILE, "sha256": {name: hex}}`` in place of ``inputs`` (``tests/parity_helpers.load_fixture``
   resolves and verifies it);
2. in every file except the primary one (``--keep``, complete as recorded), large tensors are stored on a
   coarser evenly spaced grid, in the fixtures' own subsample format (``{"subsampled": True, "shape", "index",
   "values"}``); each of them is still checked on the kept positions *and* by the mean |x| of the whole tensor,
   which the metadata records before any subsampling. The prediction of a file with a ``losses`` section stays
   complete (the loss terms are recomputed from it).

Nothing else changes: metadata, keypoints, jacobians, loss values and buffers are kept bit for bit.

Usage::

    python tools/compact_fixtures.py SOURCE_DIR tests/fixtures/parity [--keep vox256-mtia.pt]
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

MAX_FULL = 4096  # tensors above this many elements are thinned in the secondary files
MIN_KEEP = 9  # a dimension is never thinned below this many positions


def _thin_index(idx: torch.Tensor) -> torch.Tensor:
    """Every second kept position, always including the first and the last (``idx`` is sorted)."""
    if idx.numel() < 2 * MIN_KEEP:
        return torch.arange(idx.numel())
    pos = torch.arange(0, idx.numel(), 2)
    if pos[-1] != idx.numel() - 1:
        pos = torch.cat([pos, torch.tensor([idx.numel() - 1])])
    return pos


def _thin(node: Any, batch_dims: int = 1) -> Any:
    """Thin one stored entry (a full tensor or a subsampled dict); everything else is returned unchanged."""
    if isinstance(node, dict) and node.get("subsampled"):
        index, values = dict(node["index"]), node["values"]
        for dim, idx in sorted(index.items()):
            pos = _thin_index(idx)
            index[dim] = idx.index_select(0, pos)
            values = values.index_select(int(dim), pos)
        return {**node, "index": index, "values": values.contiguous()}
    if torch.is_tensor(node) and node.is_floating_point() and node.numel() > MAX_FULL and node.dim() >= 3:
        index, values = {}, node
        for dim in range(node.dim() - 2, node.dim()):  # the two spatial dimensions
            full = torch.arange(node.shape[dim])
            pos = _thin_index(full)
            if pos.numel() < node.shape[dim]:
                index[dim] = full.index_select(0, pos)
                values = values.index_select(dim, pos)
        if not index:
            return node
        return {"subsampled": True, "shape": list(node.shape), "index": index, "values": values.contiguous()}
    if isinstance(node, dict):
        return {k: _thin(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_thin(v) for v in node]
    return node


NEVER_THIN = ("inputs", "meta", "synthetic_kp", "deterministic_buffers")


def compact(fx: dict[str, Any], primary_name: str, primary_inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    out = {}
    for key, value in fx.items():
        out[key] = value if key in NEVER_THIN else _thin(value)
    if "losses" in fx:  # the loss terms are recomputed from the recorded prediction: it stays complete
        out["recon"]["prediction"] = fx["recon"]["prediction"]
    same = all(torch.equal(fx["inputs"][k], primary_inputs[k]) for k in fx["inputs"]) and \
        set(fx["inputs"]) == set(primary_inputs)
    if same:
        out["inputs"] = {"same_as": primary_name,
                         "sha256": {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in fx["inputs"].items()}}
    out["meta"] = {**fx["meta"], "compacted": {"max_full_elements": MAX_FULL, "primary": primary_name,
                                               "inputs_shared": same}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="folder with the recorded fixtures (*.pt) and fixture_weights.py")
    ap.add_argument("dest", type=Path, help="folder to write the compacted set into")
    ap.add_argument("--keep", default="vox256-mtia.pt", help="the fixture stored complete (default: %(default)s)")
    args = ap.parse_args(argv)
    files = sorted(args.source.glob("*.pt"))
    primary = args.source / args.keep
    if not primary.is_file():
        print(f"compact_fixtures: error: {primary} not found", file=sys.stderr)
        return 1
    args.dest.mkdir(parents=True, exist_ok=True)
    primary_fx = torch.load(primary, map_location="cpu", weights_only=True)
    total = 0
    for path in files:
        dest = args.dest / path.name
        if path == primary:
            shutil.copyfile(path, dest)
        else:
            fx = torch.load(path, map_location="cpu", weights_only=True)
            torch.save(compact(fx, primary.name, primary_fx["inputs"]), dest)
        size = dest.stat().st_size
        total += size
        print(f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB -> {size / 2**20:.1f} MiB")
    weights = args.source / "fixture_weights.py"
    if weights.is_file():
        shutil.copyfile(weights, args.dest / weights.name)
    print(f"total {total / 2**20:.1f} MiB in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
