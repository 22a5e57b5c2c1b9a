"""mrfa: Learning Motion Refinement for Unsupervised Face Animation (MRFA, NeurIPS 2023), re-implemented.

Public API: ``build_model``, ``load_checkpoint``, ``save_snapshot``, ``load_config``, ``load_official_config``,
``MRFA``, ``Keypoints``, ``MRFAOutput``, ``Animator``.

The names are imported on first use (PEP 562), so ``import mrfa`` loads neither torch nor the media libraries: the
``mrfa`` commands can set the process's OpenMP policy before torch starts (``mrfa.cli``).
"""
from __future__ import annotations

from typing import Any

from .version import __version__


def __getattr__(name: str) -> Any:
    if name == "build_model":
        from .builders import build_model

        return build_model
    if name in ("CheckpointError", "load_checkpoint", "save_snapshot"):
        from . import checkpoint

        return getattr(checkpoint, name)
    if name in ("ConfigError", "ExperimentConfig", "load_config"):
        from . import config

        return getattr(config, name)
    if name == "load_official_config":
        from .official import load_official_config

        return load_official_config
    if name == "MRFA":
        from .nn.mrfa import MRFA

        return MRFA
    if name in ("Keypoints", "MRFAOutput"):
        from . import types

        return getattr(types, name)
    if name == "Animator":
        from .inference.animate import Animator

        return Animator
    raise AttributeError(f"module 'mrfa' has no attribute {name!r}")


__all__ = ["Animator", "build_model", "load_checkpoint", "save_snapshot", "load_config", "load_official_config", "MRFA",
           "Keypoints", "MRFAOutput", "ExperimentConfig", "ConfigError", "CheckpointError", "__version__"]
