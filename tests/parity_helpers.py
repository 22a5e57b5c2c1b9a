"""Helpers to compare our tensors with the official parity fixtures.

The repository carries one set (``tests/fixtures/parity``, format and pass rule in its README); ``$MRFA_FIXTURES``
adds other folders of fixtures in the same format (several separated by ``os.pathsep``).

The pass rule is the fixtures README section 8: ``max|mine - ref| <= atol + rtol * max_abs`` with
``max_abs`` taken from ``meta['tensors'][path]``; subsampled references are compared on their kept
indices, plus a check of the full tensor's mean |x| against the recorded one.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

ATOL = 1e-4
RTOL = 1e-5
RTOL_TRAIN_BN = 5e-5
MEAN_RTOL = 1e-5


REPO_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "parity"


def fixture_dirs() -> list[Path]:
    """The repository's fixture folder, then every folder named in ``$MRFA_FIXTURES``."""
    dirs = [REPO_FIXTURES] if REPO_FIXTURES.is_dir() else []
    for entry in os.environ.get("MRFA_FIXTURES", "").split(os.pathsep):
        if entry and Path(entry).resolve() not in [d.resolve() for d in dirs]:
            dirs.append(Path(entry))
    return dirs


def fixture_files() -> list[Path]:
    """Every ``*.pt`` fixture of :func:`fixture_dirs` (a missing folder contributes nothing)."""
    return [p for d in fixture_dirs() if d.is_dir() for p in sorted(d.glob("*.pt"))]


def find_fixture(name: str) -> Optional[Path]:
    """The first fixture file called ``name`` in :func:`fixture_dirs`."""
    for d in fixture_dirs():
        if (d / name).is_file():
            return d / name
    return None


def load_fixture(path: str | Path) -> dict[str, Any]:
    """Load a fixture; inputs stored once for a compacted set (``{"same_as": FILE, "sha256": ...}``) are read
    from that sibling file and verified against their recorded SHA-256."""
    path = Path(path)
    fx = torch.load(path, map_location="cpu", weights_only=True)
    ref = fx.get("inputs", {})
    if isinstance(ref, dict) and "same_as" in ref:
        shared = torch.load(path.parent / ref["same_as"], map_location="cpu", weights_only=True)["inputs"]
        for name, digest in ref["sha256"].items():
            got = hashlib.sha256(shared[name].numpy().tobytes()).hexdigest()
            if got != digest:
                raise ValueError(f"{path.name}: input {name} of {ref['same_as']} does not match its SHA-256")
        fx["inputs"] = {name: shared[name] for name in ref["sha256"]}
    return fx


def recipe_state_dict(fixture_dir: Path, meta: dict[str, Any]) -> dict[str, Tensor]:
    """Official key -> tensor built by the fixture's own ``fixture_weights.py``."""
    spec = importlib.util.spec_from_file_location("fixture_weights", fixture_dir / "fixture_weights.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.make_state_dict(meta["shapes"], meta["recipe_seed"], include_vgg=meta["recipe_include_vgg"])


def fixture_inputs(fx: dict[str, Any]) -> dict[str, Tensor]:
    return {k: v.to(torch.float32) / 255.0 for k, v in fx["inputs"].items()}


def select(mine: Tensor, ref: Any) -> tuple[Tensor, Tensor]:
    """Apply a subsampled reference's index to ``mine``; returns (mine, ref_values)."""
    if isinstance(ref, dict) and ref.get("subsampled"):
        for dim, idx in sorted(ref["index"].items()):
            mine = mine.index_select(int(dim), idx.to(mine.device))
        return mine, ref["values"]
    return mine, ref


def get_path(tree: Any, path: str) -> Any:
    """``get_path(fx, 'recon.decoder.levels[2].flow_in')``."""
    node = tree
    for part in path.replace("]", "").split("."):
        name, *idx = part.split("[")
        node = node[name]
        for i in idx:
            node = node[int(i)]
    return node


def compare(mine: Tensor, ref: Any, path: str, meta: dict[str, Any], *, rtol: float = RTOL,
            atol: float = ATOL, mean_rtol: float = MEAN_RTOL) -> Optional[str]:
    """Return None when ``mine`` passes the fixture rule for ``path``, else a one-line reason."""
    stats = meta["tensors"].get(path)
    mine = mine.detach().float().cpu()
    full_shape = list(ref["shape"]) if isinstance(ref, dict) and ref.get("subsampled") else list(ref.shape)
    if list(mine.shape) != full_shape:
        return f"{path}: shape {list(mine.shape)} != reference {full_shape}"
    mean_abs = float(mine.double().abs().mean())
    a, b = select(mine, ref)
    b = b.float()
    max_abs = stats["max_abs"] if stats else float(b.abs().max())
    tol = atol + rtol * max_abs
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    if not torch.equal(nan_a, nan_b):
        return f"{path}: NaN pattern differs"
    diff = (a - b).abs()[~nan_b]
    err = float(diff.max()) if diff.numel() else 0.0
    if err > tol:
        return f"{path}: max abs diff {err:.3g} > tol {tol:.3g} (max_abs {max_abs:.3g})"
    if stats is not None and stats.get("mean_abs") is not None and not torch.isnan(torch.tensor(mean_abs)):
        ref_mean = stats["mean_abs"]
        if abs(mean_abs - ref_mean) > mean_rtol * abs(ref_mean) + 1e-6:
            return f"{path}: mean|x| {mean_abs:.8g} != recorded {ref_mean:.8g}"
    return None
