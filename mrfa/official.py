"""The official MRFA format in one place: its state_dict keys <-> ours (a prefix rename), its YAML configs ->
our schema (the keys the official code reads), and the variant of a checkpoint that carries no config.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .config import ConfigError, ExperimentConfig, ModelConfig, config_from_dict, read_yaml

# official prefix -> our prefix (first match wins; longer prefixes first)
RENAMES: list[tuple[str, str]] = [
    ("decoder.generator.", "generator."),
    ("decoder.pos_embedding", "refiner.pos_embedding"),
    ("decoder.kp_img_head.", "refiner.source.head."),
    ("decoder.kp_img.", "refiner.source.hourglass."),
    ("decoder.kp_head.", "refiner.driving.head."),
    ("decoder.kp.", "refiner.driving.hourglass."),
    ("decoder.corr_enc.", "refiner.motion_encoder."),
    ("decoder.refine.", "refiner.refine_head."),
    ("decoder.to_context.", "refiner.to_context."),
    ("encoder.", "kp_detector."),
    ("dense_motion.", "dense_motion."),
    ("bg_predictor.", "bg_predictor."),
]

# computed / loss-only entries of the official state_dict that our model does not hold
DROPPED = re.compile(r"^(pyramid\.|vgg\.)|(^|\.)down\.weight$|^encoder\.transformer\.pos_embedding$")


def strip_module_prefix(state: dict) -> dict:
    """Remove the DDP / DataParallel ``module.`` prefix when every key has it."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def official_to_ours(state: dict) -> tuple[dict, list[str]]:
    """Rename official keys to ours. Returns (renamed state, official keys that map to nothing)."""
    out, unknown = {}, []
    for key, value in strip_module_prefix(state).items():
        if DROPPED.search(key):
            continue
        for old, new in RENAMES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            unknown.append(key)
    return out, unknown


def is_official_state(state: dict) -> bool:
    keys = strip_module_prefix(state).keys()
    return any(k.startswith(("encoder.", "decoder.")) for k in keys)


def infer_official_config(state: dict) -> ExperimentConfig:
    """Official checkpoints carry no config: read the variant from the key names (shapes checked on load)."""
    keys = strip_module_prefix(state).keys()
    model = ModelConfig()
    if any(k.startswith("encoder.predictor.") for k in keys):
        model.prior = "fomm"
    elif any(k.startswith("encoder.fg_encoder.") for k in keys):
        model.prior = "tpsm"
    model.background = any(k.startswith("bg_predictor.") for k in keys)
    model.refinement.prior_only = not any(k.startswith("decoder.corr_enc.") for k in keys)
    return ExperimentConfig(model=model)


# ------------------------------------------------------------------------------------ official configs
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
