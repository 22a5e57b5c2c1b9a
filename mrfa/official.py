"""Official MRFA state_dict keys <-> ours (a prefix rename)."""
from __future__ import annotations

import re

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
