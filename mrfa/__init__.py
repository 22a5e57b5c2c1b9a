"""mrfa: Learning Motion Refinement for Unsupervised Face Animation (MRFA, NeurIPS 2023), re-implemented.

Public API: ``build_model``, ``load_checkpoint``, ``load_config``, ``MRFA``, ``Keypoints``.
"""
from .builders import build_model  # noqa: E402
from .checkpoint import CheckpointError, load_checkpoint, save_snapshot  # noqa: E402
from .config import ConfigError, ExperimentConfig, load_config, load_official_config  # noqa: E402
from .nn.mrfa import MRFA  # noqa: E402
from .types import Keypoints, MRFAOutput  # noqa: E402
from .version import __version__


def __getattr__(name: str):
    # media-level API, imported lazily so `import mrfa` does not load imageio / face backends
    if name == "Animator":
        from .inference.animate import Animator

        return Animator
    raise AttributeError(f"module 'mrfa' has no attribute {name!r}")


__all__ = ["Animator", "build_model", "load_checkpoint", "save_snapshot", "load_config", "load_official_config", "MRFA",
           "Keypoints", "MRFAOutput", "ExperimentConfig", "ConfigError", "CheckpointError", "__version__"]
