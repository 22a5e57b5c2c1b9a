"""Checkpoints: our inference snapshots, our training states, and the official MRFA format.

* snapshot  ``{'format': 'mrfa-snapshot/1', 'config': {...}, 'model': state_dict, 'mrfa_version'}``
* training state ``{'format': 'mrfa-state/1', 'config', 'model', 'optimizer', ..., 'step', 'epoch', 'rng'}``
* official  ``{'model': DDP(MRFA).state_dict() ('module.' prefix), 'optimizer', 'epoch'}`` or a bare state_dict.

Everything is read with ``torch.load(weights_only=True)`` and written atomically (temp file + rename).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from .config import ExperimentConfig, ModelConfig, config_from_dict, config_to_dict
from .media.writer import WriteError, atomic_write_with, describe_os_error
from .official import infer_official_config, is_official_state, official_to_ours
from .utils.paths import require_file
from .version import __version__

SNAPSHOT_FORMAT = "mrfa-snapshot/1"
STATE_FORMAT = "mrfa-state/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


def atomic_save(obj: Any, path: str | Path, *, overwrite: bool = False) -> None:
    """``torch.save`` through the media layer's atomic writer (temporary sibling, fsync, rename; a full disk or a
    read-only folder is one sentence naming the file; an existing file is replaced only with ``overwrite``)."""
    try:
        atomic_write_with(path, lambda f: torch.save(obj, f), overwrite=overwrite)
    except RuntimeError as err:  # torch's zip writer reports a full disk as "unexpected pos"
        raise WriteError(describe_os_error(err, path)) from None


# Resource cap for untrusted checkpoints: the model an embedded config describes may hold at most this many
# parameters (checked on the meta device, before anything is allocated). The official vox256 model has about
# 30 M; 500 M (2 GB in fp32) leaves room for any sensible variant and refuses a small file that asks for ~10 GB.
MAX_PARAMETERS = 500_000_000


def estimate_forward_bytes(model: ModelConfig, batch: int = 1) -> int:
    """A rough upper estimate of the working memory of one inference forward (bytes, fp32): the 4D correlation
    volume and its pyramid at the motion grid (none with ``corr_mode: onthefly``) plus the per-level feature
    maps of the generator and refiner (about twenty maps of each level's size live at once). Within a factor of
    about two of the measured peak for the official vox256 model; meant to refuse what no machine holds."""
    grid = int(model.image_size * model.dense_motion.scale_factor)
    corr = 0 if model.refinement.corr_mode == "onthefly" else int(1.25 * grid ** 4 * 4)
    g = model.generator
    n = g.num_down_blocks
    feats = sum(min(g.max_features, g.block_expansion * 2 ** (n - i)) * (model.image_size // 2 ** (n - i)) ** 2 * 4
                for i in range(n + 1))
    return batch * (corr + 20 * feats)


def total_memory_bytes() -> int:
    """Physical memory of this machine (0 where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def check_memory(cfg: ExperimentConfig, path: Path) -> None:
    """Refuse a checkpoint whose config asks for more working memory than this machine has.

    Raises:
        CheckpointError: the estimate (:func:`estimate_forward_bytes`) exceeds the physical memory.
    """
    need, have = estimate_forward_bytes(cfg.model), total_memory_bytes()
    if have and need > have:
        raise CheckpointError(f"{path}: its config (image_size {cfg.model.image_size}) needs about "
                              f"{need / 2**30:.0f} GiB of working memory per frame and this machine has "
                              f"{have / 2**30:.0f} GiB; refused before building the model")


_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"RIFF", "a RIFF file (WebP / WAV / AVI)"), (b"%PDF", "a PDF document"), (b"\x1a\x45\xdf\xa3", "a Matroska "
          "/ WebM video"))


def _file_kind(path: Path) -> Optional[str]:
    """What a file that torch cannot read is, from its first bytes (None: unknown)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[4:8] == b"ftyp":
        return "an MP4 / MOV video"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file"
    return None


def _reason(err: BaseException, path: Path) -> str:
    """One clause for why torch could not read ``path`` (never torch's multi-line hints)."""
    text = str(err)
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return "the file is empty (0 bytes)"
    kind = _file_kind(path)
    if kind is not None:
        return f"it is {kind}, not a PyTorch checkpoint"
    if "Weights only load failed" in text or "weights_only" in text:
        return ("it holds Python objects that are not plain tensors, and mrfa never unpickles those "
                "(re-save the weights with torch.save(model.state_dict()) from a source you trust)")
    if "zip archive" in text or "central directory" in text or "failed finding central" in text:
        return "the file is truncated or not a PyTorch zip archive"
    if "invalid load key" in text or "pickle data was truncated" in text or isinstance(err, EOFError):
        return "the file is truncated or not a PyTorch checkpoint"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint file safely (weights only); one clear sentence when it is missing or unreadable."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; give the .pt / .pth file")
    require_file(path, "checkpoint")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {_reason(e, path)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a dict of weights (got {type(obj).__name__})")
    return obj


def check_buildable(cfg: ExperimentConfig, state: dict, path: Path) -> None:
    """Refuse, before allocating anything, a config whose model exceeds :data:`MAX_PARAMETERS` or whose weights do
    not fit it (names and shapes are compared on the meta device)."""
    from .builders import build_model

    with torch.device("meta"):
        ghost = build_model(cfg)
    count = sum(p.numel() for p in ghost.parameters())
    if count > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: its config describes a model of {count / 1e6:.0f} M parameters, more than "
                              f"the {MAX_PARAMETERS / 1e6:.0f} M mrfa loads from a checkpoint; refusing to build it")
    load_state_strict(ghost, state, path, assign=False)


def check_finite(model: torch.nn.Module, path: Path) -> list[str]:
    """Names of the parameters / buffers holding NaN or inf (an untrained or diverged file)."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]


def save_snapshot(path: str | Path, model: torch.nn.Module, config: ExperimentConfig, *, overwrite: bool = False,
                  **extra: Any) -> None:
    """Inference snapshot: weights + the resolved config (enough to rebuild the model)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"format": SNAPSHOT_FORMAT, "mrfa_version": __version__, "config": config_to_dict(config),
                 "model": state, **extra}, path, overwrite=overwrite)


def _describe_mismatch(path: Path, missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:5])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:5])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (first: {'; '.join(shapes[:3])})")
    return f"{path} does not fit the MRFA model: " + ", ".join(parts)


def load_state_strict(model: torch.nn.Module, state: dict, path: Path, *, assign: bool = True) -> None:
    """Load ``state`` into ``model``; every key must match in name and shape (one clear error otherwise).
    ``assign=False`` only checks."""
    own = model.state_dict()
    bad = [k for k, v in state.items() if not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} entries of its state dict are not tensors (first: {bad[0]})")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(_describe_mismatch(path, missing, unexpected, shapes))
    if assign:
        model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, *, config: Optional[ExperimentConfig] = None, map_location: Any = "cpu"):
    """Build an MRFA model from a checkpoint of ours or of the official code; returns it in eval mode.

    Args:
        path: snapshot, training state, official ``{'model': ...}`` file or bare official state_dict.
        config: the config to build with (required only for official checkpoints of non-default sizes;
            otherwise it comes from the file or is inferred from the official key names).

    Returns:
        the model (``model.config`` holds the ExperimentConfig it was built from).
    """
    from .builders import build_model

    path = Path(path)
    obj = read_checkpoint(path, map_location)
    fmt = obj.get("format")
    if fmt in (SNAPSHOT_FORMAT, STATE_FORMAT):
        if not isinstance(obj.get("config"), dict) or not isinstance(obj.get("model"), dict):
            raise CheckpointError(f"{path} is a damaged mrfa checkpoint (its 'config' or 'model' entry is missing)")
        try:
            cfg = config or config_from_dict(obj["config"], f"{path} (embedded config)")
        except ValueError as err:
            raise CheckpointError(str(err)) from None
        state = obj["model"]
    else:
        state = obj.get("model", obj) if isinstance(obj.get("model", obj), dict) else obj
        if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
            raise CheckpointError(f"{path} is not an MRFA checkpoint (no 'model' state_dict of tensors; "
                                  f"top-level keys: {list(obj)[:8]})")
        if not is_official_state(state):
            raise CheckpointError(f"{path} is not an MRFA checkpoint: none of its keys look like MRFA weights "
                                  f"(first keys: {list(state)[:5]})")
        state, unknown = official_to_ours(state)
        if unknown:
            raise CheckpointError(f"{path}: {len(unknown)} official keys have no counterpart in MRFA "
                                  f"(first: {', '.join(unknown[:5])})")
        cfg = config or infer_official_config(obj.get("model", obj))
    check_buildable(cfg, state, path)  # nothing is allocated before the config and the weights agree
    check_memory(cfg, path)
    model = build_model(cfg)
    load_state_strict(model, state, path)
    model.eval()
    bad = check_finite(model, path)
    if bad:
        warnings.warn(f"{path}: {len(bad)} weight tensors hold NaN / inf (first: {bad[0]}); the model's outputs "
                      "will not be meaningful", RuntimeWarning, stacklevel=2)
    return model


def convert_official(src: str | Path, dst: str | Path, config: Optional[ExperimentConfig] = None, *,
                     overwrite: bool = False) -> ExperimentConfig:
    """Convert an official checkpoint into our snapshot format; returns the config written."""
    model = load_checkpoint(src, config=config)
    save_snapshot(dst, model, model.config, overwrite=overwrite, converted_from=str(src))
    return model.config
