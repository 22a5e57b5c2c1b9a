"""Configuration schema (dataclasses) and the strict YAML loader.

YAML files in ``configs/`` are instances of :class:`ExperimentConfig`. Loading is strict: an unknown or
misspelled key, or a value of the wrong type, raises :class:`ConfigError` naming the key and the file.
``--set a.b=value`` overrides are applied with the same checks. The official MRFA format (its YAML layout and
its weights' keys) is read by :mod:`mrfa.official`.
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
        raise ConfigError(f"{path}: this is an official MRFA config; use mrfa.official.load_official_config()")
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
