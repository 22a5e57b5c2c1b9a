"""Configuration schema (dataclasses) and the strict YAML loader.

YAML files in ``configs/`` are instances of :class:`ExperimentConfig`. Loading is strict: an unknown or
misspelled key, or a value of the wrong type, raises :class:`ConfigError` naming the key and the file.
``--set a.b=value`` overrides are applied with the same checks. The official MRFA YAML layout is read by
:func:`from_official` (mrfa/official.py keeps the key mapping of the official *weights*).
"""
from __future__ import annotations

import ast
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


@dataclass(frozen=True)
class AugmentationParams:
    """Augmentation switches and strengths (official vox/celebvhq configs use the defaults).

    Attributes:
        horizontal_flip: allow the p=0.5 horizontal flip (only when no time flip happened).
        time_flip: allow the p=0.5 time flip (reverses the clip: source <-> driving).
        brightness: brightness factor range [max(0, 1 - v), 1 + v]; 0 disables.
        contrast: contrast factor range, as brightness.
        saturation: saturation factor range, as brightness.
        hue: hue shift range [-h, h] in turns (0 <= h <= 0.5); 0 disables.
    """

    horizontal_flip: bool = True
    time_flip: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.1

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentationParams.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"AugmentationParams.hue must be in [0, 0.5], got {self.hue}")

    @classmethod
    def none(cls) -> "AugmentationParams":
        """No flips and no jitter (identity augmentation)."""
        return cls(False, False, 0.0, 0.0, 0.0, 0.0)


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the file."""


# ----------------------------------------------------------------------------------------------- model
@dataclass
class MTIAConfig:
    """MTIA detector = HRNet stem + keypoint-token transformer. Official values are the defaults."""

    stem_channels: int = 64
    layer1_blocks: int = 4
    stage2_modules: int = 1
    stage2_blocks: list[int] = field(default_factory=lambda: [4, 4])
    stage2_channels: list[int] = field(default_factory=lambda: [32, 64])
    stage3_modules: int = 4
    stage3_blocks: list[int] = field(default_factory=lambda: [4, 4, 4])
    stage3_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    patch_size: int = 4
    dim: int = 192
    depth: int = 12
    heads: int = 8
    mlp_ratio: int = 3
    estimate_jacobian: bool = True


@dataclass
class FOMMDetectorConfig:
    """FOMM hourglass keypoint detector (prior 'fomm')."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    temperature: float = 0.1
    scale_factor: float = 0.25
    estimate_jacobian: bool = True


@dataclass
class TPSConfig:
    """TPS prior (prior 'tpsm'): num_tps thin-plate-spline transforms of 5 keypoints each."""

    num_tps: int = 10


@dataclass
class DenseMotionConfig:
    """Prior dense-motion hourglass (FOMM or TPS); scale_factor sets the motion grid (image * scale)."""

    block_expansion: int = 64
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25
    kp_variance: float = 0.01


@dataclass
class GeneratorConfig:
    """U-Net generator. Levels = num_down_blocks + 1 (size / 2^n .. size); per-level channels
    min(max_features, block_expansion * 2^(n - i)) also fix the refiner's context projections."""

    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 5


@dataclass
class StructureConfig:
    """Structure encoders (hourglass on keypoint heatmaps) and the correlation embedding size."""

    dim: int = 256
    block_expansion: int = 32
    max_features: int = 512
    num_blocks: int = 5
    kp_variance: float = 0.1


@dataclass
class RefinementConfig:
    """Correlation pyramid + shared flow updater.

    final_warp: 'prior_flow' (official: the image warp uses the flow entering the last level) or 'refined'
    (our fix: use the last refined flow). flow_init: 'prior' (official) or 'correlation' (soft-argmax of the
    volume; occlusion logits start at 0; our option). corr_impl: lookup implementation ('auto': on a GPU the CUDA
    extension when it builds, else the Triton kernel, else the PyTorch reference; on CPU always the reference;
    'cuda' / 'triton' fail loudly; 'torch').
    corr_mode: 'volume' (pyramids materialised once per forward) or 'onthefly' (memory-light, no 4D volume;
    same outputs up to float rounding).
    """

    prior_only: bool = False
    corr_levels: int = 2
    corr_radius: int = 3
    context_dim: int = 192
    hidden_dim: int = 128
    flow_init: Literal["prior", "correlation"] = "prior"
    final_warp: Literal["prior_flow", "refined"] = "prior_flow"
    corr_impl: Literal["auto", "cuda", "triton", "torch"] = "torch"  # auto/cuda: opt-in until validated on a GPU
    corr_mode: Literal["volume", "onthefly"] = "volume"


@dataclass
class ModelConfig:
    image_size: int = 256
    num_channels: int = 3
    num_kp: int = 10  # keypoints of the mtia / fomm detectors and of the structure encoders
    prior: Literal["mtia", "fomm", "tpsm"] = "mtia"
    background: bool = False  # build the background-motion predictor (celebvhq)
    mtia: MTIAConfig = field(default_factory=MTIAConfig)
    fomm_detector: FOMMDetectorConfig = field(default_factory=FOMMDetectorConfig)
    tps: TPSConfig = field(default_factory=TPSConfig)
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    structure: StructureConfig = field(default_factory=StructureConfig)
    refinement: RefinementConfig = field(default_factory=RefinementConfig)


# ------------------------------------------------------------------------------------------------ data
# the augmentation schema is the data module's validated dataclass (one definition, no field copying)
AugmentationConfig = AugmentationParams


@dataclass
class DataConfig:
    root: str = "data/vox"  # root/{train,test}/<video>
    id_sampling: bool = True
    split_len: Optional[int] = None  # identity = first split_len chars of the video name (else before '#')
    num_repeats: int = 150
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    synthetic: bool = False  # generate the embedded synthetic dataset into root when it is missing
    synthetic_train: int = 40  # clips of the generated train split (data.synthetic only)
    synthetic_test: int = 8  # clips of the generated test split (identities unseen in train)
    synthetic_frames: int = 32  # frames per generated clip
    num_workers: int = 4


# ---------------------------------------------------------------------------------------------- losses
@dataclass
class TransformConfig:
    sigma_affine: float = 0.05
    sigma_tps: float = 0.005
    points_tps: int = 5


@dataclass
class AdversarialConfig:
    enabled: bool = False
    block_expansion: int = 32
    max_features: int = 512
    num_blocks: int = 4
    scales: list[float] = field(default_factory=lambda: [1.0])
    spectral_norm: bool = True
    generator_gan: float = 1.0
    discriminator_gan: float = 1.0
    feature_matching: list[float] = field(default_factory=lambda: [10.0, 10.0, 10.0, 10.0])


@dataclass
class LossConfig:
    backbone: Literal["vgg19", "vgg16-lpips", "random"] = "vgg19"
    vgg_weights: Optional[str] = None  # path to torchvision's vgg19 weight file (else the torch hub cache)
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.125])
    perceptual: list[float] = field(default_factory=lambda: [10.0] * 5)
    equivariance_value: float = 10.0
    equivariance_jacobian: float = 10.0
    background: float = 10.0
    transform: TransformConfig = field(default_factory=TransformConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)


# ---------------------------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    num_epochs: int = 100
    epoch_milestones: list[int] = field(default_factory=lambda: [60, 90])
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    batch_size: int = 80  # global batch (divided by the world size)
    grad_accum: int = 1
    clip_grad: bool = True
    clip: float = 10.0  # inf-norm clipping of the detector and dense-motion gradients
    bg_start: int = 0  # epoch from which the background predictor is used
    dropout_epoch: int = 35  # TPS prior component dropout (tpsm only)
    dropout_maxp: float = 0.3
    dropout_startp: float = 0.1
    dropout_inc_epoch: int = 10
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    max_steps: Optional[int] = None  # stop early after this many optimiser steps
    max_minutes: Optional[float] = None  # stop early (checkpoint, snapshot, video) after this much training time
    checkpoint_every: int = 1000  # steps between training-state checkpoints (and one at the end)
    log_every: int = 10
    image_every: int = 200
    deterministic: bool = False  # torch.use_deterministic_algorithms (+ cuDNN deterministic) for exact reruns
    final_video: bool = True  # write reconstruction.mp4 (source | driving | prediction) of a test clip at the end


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ------------------------------------------------------------------------------------------ machinery
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check/convert ``value`` against the annotation ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key, source)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, source)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{source}: '{key}' must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: '{key}' has an unsupported type {_type_name(tp)}")


def _build(cls: type, data: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            full = _bounded(f"{prefix}.{key}" if prefix else str(key), 80)
            close = [n for n in names if n.replace("_", "") == str(key).replace("_", "").lower()]
            hint = f" (did you mean '{close[0]}'?)" if close else f"; allowed: {sorted(names)}"
            if not str(key).isascii():  # a look-alike letter prints like an allowed key: show the code points
                points = " ".join(f"U+{ord(c):04X}" for c in str(key)[:40] if not c.isascii())
                hint = f" (it holds non-ASCII characters {points}; type the key again){hint}"
            raise ConfigError(f"{source}: unknown key '{full}'{hint}")
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k, source) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:  # a dataclass's own range checks (e.g. data.augmentation.hue)
        raise ConfigError(f"{source}: '{prefix or 'top level'}': {e}") from None


# Resource caps for untrusted configs (a YAML file, or the config embedded in a checkpoint): checked before anything
# expands, copies or prints the tree, so anchors / shared references cannot turn a few bytes into gigabytes.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 20_000
MAX_CONFIG_DEPTH = 16


def check_config_tree(data: Any, source: str) -> None:
    """Refuse a config tree deeper than :data:`MAX_CONFIG_DEPTH` or with more than :data:`MAX_CONFIG_NODES`
    entries, counting every path (a list shared at many places counts each time), without expanding it.

    Raises:
        ConfigError: the tree is too large or too deep.
    """
    stack, seen = [(data, 0)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_NODES:
            raise ConfigError(f"{source}: the config holds more than {MAX_CONFIG_NODES} entries; a config is a few "
                              "hundred (refused before reading it)")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{source}: the config is nested more than {MAX_CONFIG_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, (str, bytes)) and len(node) > 4096:
            raise ConfigError(f"{source}: a config value is {len(node)} characters long")


class _StrictYAMLLoader(yaml.SafeLoader):
    """YAML loader for configs: no anchors / aliases (a config never needs them, and nested aliases expand
    exponentially) and no duplicate keys (a second ``model:`` section would silently replace the first)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"line {event.start_mark.line + 1}: YAML aliases (*{str(event.anchor)[:40]}) are "
                              "not accepted in a config; write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in keys:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: the key {key[:60]!r} appears twice in the "
                                  "same section")
            if isinstance(key, str):
                keys.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, what: str = "config file") -> Any:
    """Parse a YAML config file under the caps above (size first, then the strict loader, then the tree).

    Raises:
        FileNotFoundError / ValueError: missing, or not a regular file. ConfigError: too large, not valid YAML,
        aliases, duplicate keys, too large a tree.
    """
    from .utils.paths import require_file

    path = require_file(path, what)
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size / 2**20:.1f} MB is far too large for a config (at most "
                          f"{MAX_CONFIG_BYTES >> 20} MB; refused without parsing)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictYAMLLoader)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_bounded(str(e))})") from None
    check_config_tree(data, str(path))
    return data


def _bounded(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (messages never carry an unbounded value)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def config_from_dict(data: dict, source: str = "<dict>") -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a nested dict (missing keys take the defaults)."""
    check_config_tree(data, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    cfg = _build(ExperimentConfig, data, "", source)
    validate(cfg, source)
    return cfg


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        pass
    try:
        return yaml.load(text, Loader=_StrictYAMLLoader)
    except yaml.YAMLError:
        raise ConfigError(f"--set value {_bounded(text, 80)!r} is neither a Python nor a YAML literal (check the "
                          "brackets and quotes)") from None


def apply_overrides(data: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``a.b.c=value`` overrides to a nested dict (values parsed as Python / YAML literals)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} must look like key.path=value")
        key, text = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: '{key}' goes through a non-mapping value")
        node[parts[-1]] = _parse_value(text.strip())
    return data


def load_config(path: str | Path, overrides: Optional[list[str]] = None) -> ExperimentConfig:
    """Load a YAML experiment config strictly, with optional ``key=value`` overrides."""
    path = Path(path)
    data = read_yaml(path) or {}
    if isinstance(data, dict) and ("raft_flow" in data or "train_params" in data):
        raise ConfigError(f"{path}: this is an official MRFA config; use mrfa.config.load_official_config()")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model, data, loss, train), "
                          f"got a {type(data).__name__}")
    data = apply_overrides(data, overrides or [], "--set") if overrides else data
    return config_from_dict(data, str(path))


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: ExperimentConfig, path: str | Path, *, overwrite: bool = False) -> None:
    """Write ``cfg`` as YAML, atomically (an existing file is replaced only with ``overwrite``)."""
    from .media.writer import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False), overwrite=overwrite)


# ------------------------------------------------------------------------------------------ ranges
# Every numeric key with its closed range [low, high] (None: unbounded on that side); lists apply the range to
# each element. The upper bounds of the model sizes also cap what an untrusted checkpoint's embedded config can
# ask the loader to allocate (the parameter cap itself is checked on the meta device, mrfa.checkpoint).
_POS, _FRAC = (1e-12, None), (0.0, 1.0)
RANGES: dict[str, tuple[Optional[float], Optional[float]]] = {
    "model.image_size": (16, 2048), "model.num_channels": (1, 4), "model.num_kp": (1, 256),
    "model.mtia.stem_channels": (1, 1024), "model.mtia.layer1_blocks": (1, 32), "model.mtia.stage2_modules": (1, 32),
    "model.mtia.stage2_blocks": (1, 32), "model.mtia.stage2_channels": (1, 2048), "model.mtia.stage3_modules": (1, 32),
    "model.mtia.stage3_blocks": (1, 32), "model.mtia.stage3_channels": (1, 2048), "model.mtia.patch_size": (1, 64),
    "model.mtia.dim": (1, 4096), "model.mtia.depth": (1, 64), "model.mtia.heads": (1, 64),
    "model.mtia.mlp_ratio": (1, 16),
    "model.fomm_detector.block_expansion": (1, 1024), "model.fomm_detector.max_features": (1, 4096),
    "model.fomm_detector.num_blocks": (1, 10), "model.fomm_detector.temperature": _POS,
    "model.fomm_detector.scale_factor": (1e-3, 1.0), "model.tps.num_tps": (1, 64),
    "model.dense_motion.block_expansion": (1, 1024), "model.dense_motion.max_features": (1, 4096),
    "model.dense_motion.num_blocks": (1, 10), "model.dense_motion.scale_factor": (1e-3, 1.0),
    "model.dense_motion.kp_variance": _POS,
    "model.generator.block_expansion": (1, 1024), "model.generator.max_features": (1, 4096),
    "model.generator.num_down_blocks": (1, 10),
    "model.structure.dim": (1, 4096), "model.structure.block_expansion": (1, 1024),
    "model.structure.max_features": (1, 4096), "model.structure.num_blocks": (1, 10),
    "model.structure.kp_variance": _POS,
    "model.refinement.corr_levels": (1, 8), "model.refinement.corr_radius": (0, 8),
    "model.refinement.context_dim": (1, 4096), "model.refinement.hidden_dim": (1, 4096),
    "data.num_repeats": (1, 100_000), "data.augmentation.brightness": (0.0, None),
    "data.augmentation.contrast": (0.0, None), "data.augmentation.saturation": (0.0, None),
    "data.augmentation.hue": (0.0, 0.5), "data.split_len": (1, None), "data.synthetic_train": (1, None),
    "data.synthetic_test": (1, None), "data.synthetic_frames": (2, None), "data.num_workers": (0, 256),
    "loss.scales": (1e-3, 1.0), "loss.perceptual": (0.0, None), "loss.equivariance_value": (0.0, None),
    "loss.equivariance_jacobian": (0.0, None), "loss.background": (0.0, None),
    "loss.transform.sigma_affine": (0.0, None), "loss.transform.sigma_tps": (0.0, None),
    "loss.transform.points_tps": (1, 64),
    "loss.adversarial.block_expansion": (1, 1024), "loss.adversarial.max_features": (1, 4096),
    "loss.adversarial.num_blocks": (1, 10), "loss.adversarial.scales": (1e-3, 1.0),
    "loss.adversarial.generator_gan": (0.0, None), "loss.adversarial.discriminator_gan": (0.0, None),
    "loss.adversarial.feature_matching": (0.0, None),
    "train.num_epochs": (1, None), "train.epoch_milestones": (0, None), "train.lr": _POS,
    "train.betas": (0.0, 0.999999), "train.batch_size": (1, None), "train.grad_accum": (1, None),
    "train.clip": _POS, "train.bg_start": (0, None), "train.dropout_epoch": (0, None),
    "train.dropout_maxp": _FRAC, "train.dropout_startp": _FRAC, "train.dropout_inc_epoch": (1, None),
    "train.seed": (0, 2**63 - 1), "train.max_steps": (1, None), "train.max_minutes": _POS,
    "train.checkpoint_every": (1, None), "train.log_every": (1, None), "train.image_every": (0, None),  # 0: no images
}
LIST_LENGTHS = {"train.betas": (2, 2), "model.mtia.stage2_blocks": (2, 2), "model.mtia.stage2_channels": (2, 2),
                "model.mtia.stage3_blocks": (3, 3), "model.mtia.stage3_channels": (3, 3), "loss.scales": (1, 8),
                "loss.adversarial.scales": (1, 8), "loss.perceptual": (5, 5)}


def numeric_keys(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: value}`` of every numeric (or list-of-numbers) leaf of a config dataclass."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        key, value = prefix + f.name, getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(numeric_keys(value, key + "."))
            continue
        tp = hints[f.name]
        args = typing.get_args(tp)
        base = [a for a in args if a is not type(None)] if args and typing.get_origin(tp) is not list else [tp]
        numeric = any(b in (int, float) or typing.get_origin(b) is list and typing.get_args(b)[0] in (int, float)
                      for b in base)
        if numeric:
            out[key] = value
    return out


def check_ranges(cfg: "ExperimentConfig", source: str) -> None:
    """Every numeric key finite and inside :data:`RANGES` (one message naming the key, its value and range)."""
    for key, value in numeric_keys(cfg).items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        if key in LIST_LENGTHS:
            lo_n, hi_n = LIST_LENGTHS[key]
            if not lo_n <= len(values) <= hi_n:
                need = f"{lo_n}" if lo_n == hi_n else f"{lo_n} to {hi_n}"
                raise ConfigError(f"{source}: '{key}' needs {need} values, got {len(values)} ({value!r})")
        lo, hi = RANGES.get(key, (None, None))
        for v in values:
            if not math.isfinite(v):
                raise ConfigError(f"{source}: '{key}' must be a finite number, got {v!r}")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                rng = f">= {lo:g}" if hi is None else f"in [{lo:g}, {hi:g}]" if lo is not None else f"<= {hi:g}"
                raise ConfigError(f"{source}: '{key}' must be {rng}, got {v!r}")


def validate(cfg: ExperimentConfig, source: str = "<config>") -> None:
    """Range checks of every numeric key, then cross-field checks, with one clear message each."""
    check_ranges(cfg, source)
    m = cfg.model
    n = m.generator.num_down_blocks
    if m.image_size % (2**n) != 0:
        raise ConfigError(f"{source}: model.image_size {m.image_size} must be divisible by 2^num_down_blocks = {2**n}")
    grid = m.image_size * m.dense_motion.scale_factor
    sizes = [m.image_size // 2 ** (n - i) for i in range(n + 1)]
    if grid not in sizes:
        raise ConfigError(f"{source}: the motion grid image_size*dense_motion.scale_factor = {grid} must be one of "
                          f"the generator level sizes {sizes}")
    if len(cfg.loss.perceptual) != 5:
        raise ConfigError(f"{source}: loss.perceptual needs 5 layer weights, got {len(cfg.loss.perceptual)}")
    t = cfg.train
    if sorted(t.epoch_milestones) != list(t.epoch_milestones):
        raise ConfigError(f"{source}: train.epoch_milestones must be increasing, got {t.epoch_milestones}")
    if t.batch_size % t.grad_accum:
        raise ConfigError(f"{source}: train.batch_size {t.batch_size} must be a multiple of train.grad_accum "
                          f"{t.grad_accum}")
    if m.prior == "tpsm" and m.tps.num_tps != m.num_kp:
        raise ConfigError(f"{source}: with prior 'tpsm' model.num_kp ({m.num_kp}) must equal model.tps.num_tps "
                          f"({m.tps.num_tps}) (the structure encoders use one keypoint per TPS)")


# ------------------------------------------------------------------------------------ official layout
def _pair_to_int(value: Any, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"official MODEL.{name} must be square, got {value}.")
        value = value[0]
    return int(value)


def mtia_kwargs_from_official(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs of :class:`MTIADetector` from an official ``mtia_kp_detector.MODEL`` dict.

    Reads only the keys the official code uses (NUM_JOINTS, IMAGE_SIZE, PATCH_SIZE, DIM,
    TRANSFORMER_DEPTH, TRANSFORMER_HEADS, TRANSFORMER_MLP_RATIO, ESTIMATE_JACOBIAN, BASE_CHANNEL,
    EXTRA.STAGE2 / STAGE3) and rejects the variants this implementation does not provide.
    """
    if model_cfg.get("POS_EMBEDDING_TYPE", "sine-full") != "sine-full":
        raise ValueError(f"only POS_EMBEDDING_TYPE 'sine-full' is supported, got {model_cfg['POS_EMBEDDING_TYPE']!r}.")
    if model_cfg.get("DATA_PREPROCESS", False):
        raise ValueError("official MODEL.DATA_PREPROCESS True (ImageNet normalisation) is not supported.")
    if model_cfg.get("FIX_IMG2MOTION_ATTENTION", False):
        raise ValueError("official MODEL.FIX_IMG2MOTION_ATTENTION True is not supported.")
    stages = {}
    for name in ("STAGE2", "STAGE3"):
        stage = model_cfg["EXTRA"][name]
        if stage.get("BLOCK", "BASIC") != "BASIC" or stage.get("FUSE_METHOD", "SUM") != "SUM":
            raise ValueError(f"official EXTRA.{name} must use BLOCK BASIC and FUSE_METHOD SUM, got "
                             f"{stage.get('BLOCK')!r} / {stage.get('FUSE_METHOD')!r}.")
        if not stage["NUM_BRANCHES"] == len(stage["NUM_BLOCKS"]) == len(stage["NUM_CHANNELS"]):
            raise ValueError(f"official EXTRA.{name} NUM_BRANCHES disagrees with NUM_BLOCKS / NUM_CHANNELS.")
        stages[name] = stage
    base = int(model_cfg["BASE_CHANNEL"])
    if base != stages["STAGE3"]["NUM_CHANNELS"][0]:
        raise ValueError(f"official MODEL.BASE_CHANNEL {base} must equal EXTRA.STAGE3.NUM_CHANNELS[0] "
                         f"{stages['STAGE3']['NUM_CHANNELS'][0]} (the HRNet output channels).")
    return {
        "num_kp": int(model_cfg["NUM_JOINTS"]),
        "image_size": _pair_to_int(model_cfg["IMAGE_SIZE"], "IMAGE_SIZE"),
        "stage2_modules": int(stages["STAGE2"]["NUM_MODULES"]),
        "stage2_blocks": tuple(int(v) for v in stages["STAGE2"]["NUM_BLOCKS"]),
        "stage2_channels": tuple(int(v) for v in stages["STAGE2"]["NUM_CHANNELS"]),
        "stage3_modules": int(stages["STAGE3"]["NUM_MODULES"]),
        "stage3_blocks": tuple(int(v) for v in stages["STAGE3"]["NUM_BLOCKS"]),
        "stage3_channels": tuple(int(v) for v in stages["STAGE3"]["NUM_CHANNELS"]),
        "patch_size": _pair_to_int(model_cfg["PATCH_SIZE"], "PATCH_SIZE"),
        "dim": int(model_cfg["DIM"]),
        "depth": int(model_cfg["TRANSFORMER_DEPTH"]),
        "heads": int(model_cfg["TRANSFORMER_HEADS"]),
        "mlp_ratio": int(model_cfg["TRANSFORMER_MLP_RATIO"]),
        "estimate_jacobian": bool(model_cfg["ESTIMATE_JACOBIAN"]),
    }


def from_official(official: dict, source: str = "<official config>") -> ExperimentConfig:
    """Translate the official MRFA YAML layout (vox1.yaml / celebvhq.yaml) into our schema.

    Reads the keys the official code uses and ignores the ones it never reads.
    """
    try:
        tp = official["train_params"]
        rf = official["raft_flow"]
        dm = official["dense_motion"]
        ds = official.get("dataset_params", {}) or {}
        prior = tp.get("prior_model", "mtia")
        mtia_kw = mtia_kwargs_from_official(official["mtia_kp_detector"]["MODEL"]) if prior == "mtia" else {}
        size = int(rf.get("size", 256))
        num_kp = int(rf.get("num_kp", 10))
        model: dict[str, Any] = dict(
            image_size=size, num_channels=int(dm.get("num_channels", 3)), num_kp=num_kp, prior=prior,
            background=int(tp.get("bg_start", 1000)) < int(tp["num_epochs"]),
            dense_motion=dict(block_expansion=dm["block_expansion"], max_features=dm["max_features"],
                              num_blocks=dm["num_blocks"], scale_factor=dm["scale_factor"],
                              kp_variance=dm.get("kp_variance", 0.01)),
            generator=dict(block_expansion=rf["generator"]["block_expansion"],
                           max_features=rf["generator"]["max_features"],
                           num_down_blocks=rf["generator"]["num_up_blocks"]),
            structure=dict(dim=rf.get("dim", 256), block_expansion=rf["driving_encoder"]["block_expansion"],
                           max_features=rf["driving_encoder"]["max_features"],
                           num_blocks=rf["driving_encoder"]["num_blocks"]),
            refinement=dict(prior_only=bool(rf.get("prior_only", False))),
        )
        if prior == "mtia":
            if mtia_kw.pop("num_kp") != num_kp:
                raise ConfigError(f"{source}: mtia NUM_JOINTS differs from raft_flow.num_kp")
            if mtia_kw.pop("image_size") != size:
                raise ConfigError(f"{source}: mtia IMAGE_SIZE differs from raft_flow.size")
            mtia_kw.pop("in_channels", None)
            model["mtia"] = {k: list(v) if isinstance(v, tuple) else v for k, v in mtia_kw.items()}
        elif prior == "fomm":
            fd = official["fomm_kp_detector"]
            model["fomm_detector"] = dict(block_expansion=fd["block_expansion"], max_features=fd["max_features"],
                                          num_blocks=fd["num_blocks"], temperature=fd["temperature"],
                                          scale_factor=fd["scale_factor"],
                                          estimate_jacobian=bool(fd.get("estimate_jacobian", True)))
        elif prior == "tpsm":
            td = official["tpsm_dense_motion"]
            model["tps"] = dict(num_tps=official["tpsm_kp_detector"]["num_tps"])
            model["dense_motion"] = dict(block_expansion=td["block_expansion"], max_features=td["max_features"],
                                         num_blocks=td["num_blocks"], scale_factor=td["scale_factor"])
        else:
            raise ConfigError(f"{source}: unknown train_params.prior_model {prior!r}")
        aug = ds.get("augmentation_params", {}) or {}
        flip, jit = aug.get("flip_param", {}) or {}, aug.get("jitter_param", {}) or {}
        lw = tp.get("loss_weights", {})
        tr = tp.get("transform_params", {})
        data = dict(
            model=model,
            data=dict(root=str(ds.get("root_dir", "data/vox")), id_sampling=bool(ds.get("id_sampling", True)),
                      split_len=ds.get("split_len"), num_repeats=int(tp.get("num_repeats", 150)),
                      augmentation=dict(horizontal_flip=bool(flip.get("horizontal_flip", True)),
                                        time_flip=bool(flip.get("time_flip", True)), **jit)),
            loss=dict(scales=[float(s) for s in tp.get("scales", [1, 0.5, 0.25, 0.125])],
                      perceptual=[float(w) for w in lw.get("perceptual", [10] * 5)],
                      equivariance_value=float(lw.get("equivariance", 10)),
                      equivariance_jacobian=float(lw.get("equivariance_jacobian", 10)),
                      transform=dict(sigma_affine=tr.get("sigma_affine", 0.05), sigma_tps=tr.get("sigma_tps", 0.005),
                                     points_tps=tr.get("points_tps", 5))),
            train=dict(num_epochs=int(tp["num_epochs"]), epoch_milestones=list(tp.get("epoch_milestones", [60, 90])),
                       lr=float(tp.get("lr", 2e-4)), batch_size=int(tp.get("batch_size", 80)),
                       clip_grad=bool(tp.get("clip_grad", True)), clip=float(tp.get("clip", 10)),
                       bg_start=min(int(tp.get("bg_start", 1000)), int(tp["num_epochs"])),
                       dropout_epoch=int(tp.get("dropout_epoch", 35)), dropout_maxp=float(tp.get("dropout_maxp", 0.3)),
                       dropout_startp=float(tp.get("dropout_startp", 0.1)),
                       dropout_inc_epoch=int(tp.get("dropout_inc_epoch", 10))),
        )
    except KeyError as e:
        raise ConfigError(f"{source}: missing official key {e}") from None
    return config_from_dict(data, source)


def load_official_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    return from_official(read_yaml(Path(path)), str(path))
