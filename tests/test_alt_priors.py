"""Alternative priors of MRFA: FOMM / TPS keypoint detectors, TPS dense motion, background predictor.

Parity with the official implementation through the fixtures (README sections 4-6): every fixture
file whose ``meta`` selects the component is rebuilt from its official config, loaded strictly with
the recipe weights (official prefix stripped) and compared tensor by tensor with ``compare()``.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from parity_helpers import compare, fixture_inputs, load_fixture, recipe_state_dict, select
from torch import nn

from mrfa.builders import build_dense_motion, build_kp_detector
from mrfa.official import from_official
from mrfa.nn.bg_motion import BGMotionPredictor
from mrfa.nn.dense_motion_tps import TPSDenseMotionNetwork
from mrfa.nn.intermediates import capture
from mrfa.nn.keypoint_fomm import FOMMKeypointDetector
from mrfa.nn.keypoint_tps import TPSKeypointDetector
from mrfa.nn.resnet import ResNet18
from mrfa.types import Keypoints

# images seen by the detector calls of each section (README section 4)
CALL_IMAGES = {"recon": ["source", "driving"], "animate": ["source", "driving_initial", "driving"],
               "animate_adapt": ["source", "driving_initial", "driving"]}


@functools.lru_cache(maxsize=None)
def _fixture(path: str) -> dict[str, Any]:
    return load_fixture(path)


def _relevant(files: list[Path], want) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, fixture) of every fixture whose metadata satisfies ``want``."""
    found = [(p.parent, _fixture(str(p))) for p in files]
    found = [(d, fx) for d, fx in found if want(fx["meta"])]
    assert found, "no parity fixture exercises this component"
    return found


def _load_official(module: nn.Module, fixture_dir: Path, meta: dict[str, Any], prefix: str) -> nn.Module:
    """Strict load of the recipe weights under ``prefix``; every official key must exist in ``module``."""
    shapes = {k: v for k, v in meta["shapes"].items() if k.startswith(prefix)}
    state = recipe_state_dict(fixture_dir, {**meta, "shapes": shapes})
    module.load_state_dict({k[len(prefix):]: v for k, v in state.items()}, strict=True)
    official = {k[len(prefix):] for k in shapes if not k.endswith("down.weight")}  # computed anti-alias kernels
    assert set(module.state_dict()) == official
    return module.eval()


class _Checker:
    """Collects compare() failures and the max abs diff per group."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta, self.failures, self.max_diff, self.done = meta, [], {}, set()

    def __call__(self, group: str, mine: torch.Tensor, path: str, ref: Any) -> None:
        reason = compare(mine, ref, path, self.meta)
        if reason is not None:
            self.failures.append(reason)
        a, b = select(mine.detach().float(), ref)
        if a.shape == b.shape:
            self.max_diff[group] = max(self.max_diff.get(group, 0.0), float((a - b).abs().max()))
        self.done.add(path)

    def assert_ok(self, prefixes: tuple[str, ...]) -> None:
        dropped = [d["path"] for d in self.meta["dropped"]]
        missing = [p for p in self.meta["tensors"] if p.startswith(prefixes) and p not in self.done
                   and not any(p.startswith(d) for d in dropped)]
        print(self.meta["config_name"], {k: f"{v:.2e}" for k, v in self.max_diff.items()})
        assert not missing, f"recorded tensors not compared: {missing}"
        assert not self.failures, "\n".join(self.failures)


def _check_detector(fx: dict[str, Any], detector: nn.Module, check: _Checker) -> None:
    x = fixture_inputs(fx)
    for sec in fx["meta"]["sections"]:
        for c, name in enumerate(CALL_IMAGES[sec]):
            with torch.no_grad(), capture() as trace:
                kp = detector(x[name])
            ref = fx[sec]["kp"][c]
            check("kp", kp.value, f"{sec}.kp[{c}].kp", ref["kp"])
            if "jacobian" in ref:
                check("jacobian", kp.jacobian, f"{sec}.kp[{c}].jacobian", ref["jacobian"])
            else:
                assert kp.jacobian is None
            internals = fx[sec]["detector"][c] if "detector" in fx[sec] else None
            for key, value in (internals or {}).items():
                check(f"detector.{key}", trace[key], f"{sec}.detector[{c}].{key}", value)


def test_fomm_detector_matches_fixture(parity_fixtures):
    for fixture_dir, fx in _relevant(parity_fixtures, lambda m: m["prior_model"] == "fomm"):
        meta = fx["meta"]
        det = build_kp_detector(from_official(meta["config"]).model)
        _load_official(det, fixture_dir, meta, "encoder.")
        check = _Checker(meta)
        _check_detector(fx, det, check)
        check.assert_ok(tuple(f"{s}.{k}" for s in meta["sections"] for k in ("kp[", "detector[")))


def test_tps_detector_and_dense_motion_match_fixture(parity_fixtures):
    for fixture_dir, fx in _relevant(parity_fixtures, lambda m: m["prior_model"] == "tpsm"):
        meta = fx["meta"]
        det = build_kp_detector(from_official(meta["config"]).model)
        _load_official(det, fixture_dir, meta, "encoder.")
        net = build_dense_motion(from_official(meta["config"]).model)
        _load_official(net, fixture_dir, meta, "dense_motion.")
        check = _Checker(meta)
        _check_detector(fx, det, check)
        source = fixture_inputs(fx)["source"]
        for sec in meta["sections"]:
            used = fx[sec]["kp_used"]
            if sec == "recon":  # driving = detector call 1, background affine when recorded
                drv, bg = used[1]["kp"], (fx[sec].get("bg_param") or [None])[0]
            else:  # relative motion transfer, no background (official demo)
                drv, bg = fx[sec]["kp_norm"]["kp"], None
            with torch.no_grad(), capture() as trace:
                out = net(source, Keypoints(drv), Keypoints(used[0]["kp"]), bg_param=bg)
            assert torch.equal(out.mask, trace["contribution_maps"]) and torch.equal(out.occlusion, trace["occlusion"])
            for key, ref in fx[sec]["dense_motion"].items():
                check(f"dense_motion.{key}", trace[key], f"{sec}.dense_motion.{key}", ref)
        check.assert_ok(tuple(f"{s}.{k}" for s in meta["sections"] for k in ("kp[", "detector[", "dense_motion.")))


def test_bg_predictor_matches_fixture(parity_fixtures):
    for fixture_dir, fx in _relevant(parity_fixtures, lambda m: m["bg_predictor"]):
        meta = fx["meta"]
        bg = BGMotionPredictor(num_channels=from_official(meta["config"]).model.num_channels)
        _load_official(bg, fixture_dir, meta, "bg_predictor.")
        check = _Checker(meta)
        x = fixture_inputs(fx)
        if meta["bg_active"]:
            with torch.no_grad():
                check("bg_param", bg(x["source"], x["driving"]), "recon.bg_param[0]", fx["recon"]["bg_param"][0])
            assert "recon.bg_param[0]" in check.done
        check.assert_ok(("recon.bg_param",))


# ----------------------------------------------------------------------------- no fixtures needed

def _assert_all_grads(module: nn.Module) -> None:
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"parameters without gradient: {missing}"


def test_resnet18_uses_torchvision_names():
    names = list(ResNet18(in_channels=6, num_outputs=6).state_dict())
    assert len(names) == 122  # 122 bg_encoder.* keys in the official celebvhq state_dict
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.num_batches_tracked",
                "layer2.0.downsample.0.weight", "layer4.0.downsample.1.running_mean", "fc.weight", "fc.bias"):
        assert key in names
    assert "layer1.0.downsample.0.weight" not in names


def test_fomm_detector_tiny_forward_backward():
    torch.manual_seed(0)
    det = FOMMKeypointDetector(num_kp=3, block_expansion=4, max_features=16, num_blocks=2, scale_factor=0.5)
    with torch.no_grad():  # make the jacobian path depend on its weights
        det.jacobian.weight.normal_(0, 0.1)
    with capture() as trace:
        kp = det(torch.rand(2, 3, 32, 32))
    assert kp.value.shape == (2, 3, 2) and kp.jacobian.shape == (2, 3, 2, 2)
    assert trace["heatmap_logits"].shape == (2, 3, 10, 10) and trace["jacobian_map"].shape == (2, 4, 10, 10)
    assert kp.value.abs().max() <= 1
    ((kp.value * torch.randn_like(kp.value)).sum() + (kp.jacobian * torch.randn_like(kp.jacobian)).sum()).backward()
    _assert_all_grads(det)


def test_fomm_detector_jacobian_starts_at_identity():
    det = FOMMKeypointDetector(num_kp=2, block_expansion=4, max_features=16, num_blocks=2, scale_factor=0.5).eval()
    jac = det(torch.rand(1, 3, 32, 32)).jacobian
    assert torch.allclose(jac, torch.eye(2).expand_as(jac), atol=1e-6)


def test_tps_detector_tiny_forward_backward():
    torch.manual_seed(0)
    det = TPSKeypointDetector(num_tps=2)
    with capture() as trace:
        kp = det(torch.rand(2, 3, 64, 64))
    assert kp.value.shape == (2, 10, 2) and kp.jacobian is None and trace["fc_out"].shape == (2, 20)
    assert torch.allclose(kp.value.flatten(1), 2 * torch.sigmoid(trace["fc_out"]) - 1)
    (kp.value * torch.randn_like(kp.value)).sum().backward()
    _assert_all_grads(det)


def test_bg_predictor_identity_init_and_backward():
    torch.manual_seed(0)
    bg = BGMotionPredictor()
    src, drv = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    assert torch.equal(bg(src, drv), torch.eye(3).expand(2, 3, 3))
    with torch.no_grad():  # zero fc weight blocks the backbone gradient at init
        bg.bg_encoder.fc.weight.normal_(0, 0.1)
    out = bg(src, drv)
    assert torch.equal(out[:, 2], torch.tensor([[0.0, 0.0, 1.0]] * 2))
    (out * torch.randn_like(out)).sum().backward()
    _assert_all_grads(bg)


def _tiny_tps_dense_motion() -> TPSDenseMotionNetwork:
    return TPSDenseMotionNetwork(num_tps=2, block_expansion=8, max_features=32, num_blocks=2, scale_factor=0.5)


def test_tps_dense_motion_tiny_forward_backward():
    torch.manual_seed(0)
    net = _tiny_tps_dense_motion()
    kp_s, kp_d = torch.rand(2, 10, 2) * 1.6 - 0.8, torch.rand(2, 10, 2) * 1.6 - 0.8
    bg = torch.eye(3).repeat(2, 1, 1) + 0.05 * torch.randn(2, 3, 3) * torch.tensor([1.0, 1.0, 0.0]).view(3, 1)
    out = net(torch.rand(2, 3, 32, 32), Keypoints(kp_d), Keypoints(kp_s), bg_param=bg)
    assert out.deformation.shape == (2, 16, 16, 2) and out.occlusion.shape == (2, 1, 16, 16)
    assert out.mask.shape == (2, 3, 16, 16) and out.heatmap.shape == (2, 11, 16, 16)
    assert out.sparse_motion.shape == (2, 3, 16, 16, 2) and out.sparse_deformed.shape == (2, 3, 3, 16, 16)
    assert torch.allclose(out.mask.sum(1), torch.ones(2, 16, 16), atol=1e-5)
    assert torch.equal(out.heatmap[:, 0], torch.zeros(2, 16, 16))
    ((out.deformation * torch.randn_like(out.deformation)).sum() + out.occlusion.sum()).backward()
    _assert_all_grads(net)


def test_tps_dense_motion_dropout_only_in_training():
    torch.manual_seed(0)
    net = _tiny_tps_dense_motion()
    args = (torch.rand(2, 3, 32, 32), Keypoints(torch.rand(2, 10, 2) - 0.5), Keypoints(torch.rand(2, 10, 2) - 0.5))
    net.eval()
    with torch.no_grad():
        ref = net(*args, dropout_p=0.0)
        assert torch.equal(net(*args, dropout_p=0.9).deformation, ref.deformation)
    net.train()
    with torch.no_grad():
        plain = net(*args, dropout_p=0.0)
        torch.manual_seed(1)
        dropped = net(*args, dropout_p=0.9)
    assert not torch.allclose(dropped.deformation, plain.deformation)
    off = dropped.mask.amax(dim=(2, 3)) == 0  # [B, M] components switched off
    assert off.any() and not off[:, 0].any()  # some TPS dropped, background always kept
    assert torch.allclose(dropped.mask.sum(1), torch.ones(2, 16, 16), atol=1e-4)
