"""MTIA keypoint detector (HRNet + TokenPose-B): parity with the official fixtures, tiny-model checks."""
from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from parity_helpers import (
    MEAN_RTOL,
    RTOL,
    RTOL_TRAIN_BN,
    compare,
    fixture_files,
    fixture_inputs,
    get_path,
    load_fixture,
    recipe_state_dict,
)

from mrfa.official import mtia_kwargs_from_official
from mrfa.nn.intermediates import capture
from mrfa.nn.keypoint_mtia import MTIADetector, sine_position_embedding

POS_KEY = "encoder.transformer.pos_embedding"

TINY = dict(num_kp=5, image_size=64, stem_channels=16, layer1_blocks=1, stage2_modules=1,
            stage2_blocks=(1, 1), stage2_channels=(8, 16), stage3_modules=1, stage3_blocks=(1, 1, 1),
            stage3_channels=(8, 16, 32), patch_size=4, dim=64, depth=2, heads=4, mlp_ratio=2)


@functools.lru_cache(maxsize=None)
def _fixture(path: Path) -> dict[str, Any]:
    return load_fixture(path)


def _mtia_fixture_paths() -> list[Path]:
    return [p for p in fixture_files() if _fixture(p)["meta"].get("prior_model") == "mtia"]


def _build_official(path: Path) -> tuple[MTIADetector, dict[str, Any]]:
    fx = _fixture(path)
    meta = fx["meta"]
    model = MTIADetector(**mtia_kwargs_from_official(meta["config"]["mtia_kp_detector"]["MODEL"]))
    enc_shapes = {k: v for k, v in meta["shapes"].items() if k.startswith("encoder.")}
    # The recipe draws every key from its own RNG, so generating the encoder keys alone is exact.
    state = recipe_state_dict(path.parent, {**meta, "shapes": enc_shapes})
    state = {k[len("encoder."):]: v for k, v in state.items() if k != POS_KEY}
    # Counters are skipped by the recipe; keep ours so the load can be strict.
    state.update({k: v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")})
    model.load_state_dict(state, strict=True)
    model.train(meta["bn_mode"] == "train")
    return model, fx


@pytest.mark.parametrize("path", _mtia_fixture_paths(), ids=lambda p: p.name)
def test_mtia_matches_official_fixture(path: Path) -> None:
    model, fx = _build_official(path)
    meta = fx["meta"]
    train_bn = meta["bn_mode"] == "train"
    rtol = RTOL_TRAIN_BN if train_bn else RTOL
    mean_rtol = RTOL_TRAIN_BN if train_bn else MEAN_RTOL

    ours_pos = model.transformer.pos_embedding
    assert POS_KEY not in {f"encoder.{k}" for k in model.state_dict()}
    assert torch.allclose(ours_pos, fx["deterministic_buffers"][POS_KEY], rtol=0, atol=1e-6)

    x = fixture_inputs(fx)
    images = [x["source"], x["driving"]]
    outputs: list[tuple[Any, dict[str, torch.Tensor]]] = []
    with torch.no_grad():
        if train_bn:  # batch statistics are per call: one call per image, as recorded
            for img in images:
                with capture() as trace:
                    outputs.append((model(img), trace))
        else:  # running statistics: both calls as one batch
            with capture() as trace:
                kp = model(torch.cat(images))
            b = images[0].shape[0]
            for c in range(2):
                part = slice(c * b, (c + 1) * b)
                outputs.append((type(kp)(kp.value[part], kp.jacobian[part]),
                                {k: v[part] for k, v in trace.items()}))

    failures = []
    for c, (kp, trace) in enumerate(outputs):
        mine = {f"recon.kp[{c}].kp": kp.value, f"recon.kp[{c}].jacobian": kp.jacobian}
        mine.update({f"recon.detector[{c}].{k}": v for k, v in trace.items()})
        expected = {f"recon.kp[{c}].{k}" for k in get_path(fx, f"recon.kp[{c}]")}
        expected |= {f"recon.detector[{c}].{k}" for k in get_path(fx, f"recon.detector[{c}]")}
        assert set(mine) == expected, f"traced tensors {sorted(mine)} != recorded {sorted(expected)}"
        for p, tensor in mine.items():
            reason = compare(tensor, get_path(fx, p), p, meta, rtol=rtol, mean_rtol=mean_rtol)
            if reason is not None:
                failures.append(reason)
    assert not failures, "\n".join(failures)


def test_official_parameter_count() -> None:
    model = MTIADetector()  # official vox1 configuration
    n_params = sum(p.numel() for p in model.parameters())
    # The official 12,283,462 includes the 16*16*192 fixed sine values stored as a Parameter.
    assert n_params + 16 * 16 * 192 == 12_283_462
    assert sum(p.numel() for p in model.pre_feature.parameters()) == 7_685_632
    assert len(list(model.pre_feature.state_dict())) == 930


def test_sine_embedding_layout() -> None:
    pos = sine_position_embedding(4, 8, 16)  # [1, 32, 16]
    assert pos.shape == (1, 32, 16)
    step_y, step_x = 2 * math.pi / (4 + 1e-6), 2 * math.pi / (8 + 1e-6)
    # token 9 = row 1, col 1; y features first (sin, cos interleaved), then x features
    assert torch.isclose(pos[0, 9, 0], torch.tensor(math.sin(2 * step_y)), atol=1e-6)
    assert torch.isclose(pos[0, 9, 1], torch.tensor(math.cos(2 * step_y)), atol=1e-6)
    assert torch.isclose(pos[0, 9, 8], torch.tensor(math.sin(2 * step_x)), atol=1e-6)
    assert torch.isclose(pos[0, 9, 10], torch.tensor(math.sin(2 * step_x / 10000 ** (2 / 8))), atol=1e-6)
    assert torch.equal(pos[0, 1, :8], pos[0, 0, :8])  # same row -> same y features


def test_tiny_detector_shapes_grads_and_identity_init() -> None:
    torch.manual_seed(0)
    model = MTIADetector(**TINY)
    image = torch.rand(2, 3, 64, 64)
    with capture() as trace:
        kp = model(image)
    assert kp.value.shape == (2, 5, 2) and kp.jacobian.shape == (2, 5, 2, 2)
    assert kp.value.abs().max() < 1
    assert torch.equal(kp.jacobian, torch.eye(2).expand(2, 5, 2, 2))
    assert trace["hrnet_feature"].shape == (2, 8, 16, 16)
    assert trace["tokens"].shape == (2, 10 + 16, 64) and trace["kp_tokens"].shape == (2, 10, 64)

    # The zero-init jacobian Linear blocks the gradient to the LayerNorm before it; perturb it.
    torch.nn.init.normal_(model.transformer.mlp_head_jacobian[1].weight, std=0.02)
    kp = model(image)
    (kp.value.square().sum() + (kp.jacobian * torch.randn(2, 5, 2, 2)).sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"

    no_jac = MTIADetector(**{**TINY, "estimate_jacobian": False})
    out = no_jac(image)
    assert out.jacobian is None and out.value.shape == (2, 5, 2)
    assert no_jac.transformer.keypoint_token.shape == (1, 5, 64)


def test_bad_inputs_raise() -> None:
    model = MTIADetector(**TINY)
    with pytest.raises(ValueError, match="64x64"):
        model(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match="multiple of 16"):
        MTIADetector(**{**TINY, "image_size": 72})
    official = {"NUM_JOINTS": 10, "IMAGE_SIZE": [256, 256], "PATCH_SIZE": [4, 4], "DIM": 192,
                "TRANSFORMER_DEPTH": 12, "TRANSFORMER_HEADS": 8, "TRANSFORMER_MLP_RATIO": 3,
                "ESTIMATE_JACOBIAN": True, "BASE_CHANNEL": 32, "EXTRA": {
                    "STAGE2": {"NUM_MODULES": 1, "NUM_BRANCHES": 2, "BLOCK": "BASIC", "NUM_BLOCKS": [4, 4],
                               "NUM_CHANNELS": [32, 64], "FUSE_METHOD": "SUM"},
                    "STAGE3": {"NUM_MODULES": 4, "NUM_BRANCHES": 3, "BLOCK": "BASIC", "NUM_BLOCKS": [4, 4, 4],
                               "NUM_CHANNELS": [32, 64, 128], "FUSE_METHOD": "SUM"}}}
    assert mtia_kwargs_from_official(official)["stage3_channels"] == (32, 64, 128)
    bad = copy.deepcopy(official)
    bad["BASE_CHANNEL"] = 48
    with pytest.raises(ValueError, match="BASE_CHANNEL"):
        mtia_kwargs_from_official(bad)
    bad = copy.deepcopy(official)
    bad["EXTRA"]["STAGE3"]["BLOCK"] = "BOTTLENECK"
    with pytest.raises(ValueError, match="STAGE3"):
        mtia_kwargs_from_official(bad)
