"""mrfa: Learning Motion Refinement for Unsupervised Face Animation (MRFA, NeurIPS 2023), re-implemented.

Public API: ``build_model``, ``load_checkpoint``, ``load_config``, ``MRFA``, ``Keypoints``.
"""
__version__ = "0.1.0"

from .builders import build_model  # noqa: E402
from .checkpoint import CheckpointError, load_checkpoint, save_snapshot  # noqa: E402
from .config import ConfigError, ExperimentConfig, load_config, load_official_config  # noqa: E402
from .nn.mrfa import MRFA  # noqa: E402
from .types import Keypoints, MRFAOutput  # noqa: E402

__all__ = ["build_model", "load_checkpoint", "save_snapshot", "load_config", "load_official_config", "MRFA",
           "Keypoints", "MRFAOutput", "ExperimentConfig", "ConfigError", "CheckpointError", "__version__"]
