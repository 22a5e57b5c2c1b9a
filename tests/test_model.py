"""Model-level tests: configs (strict), builder, bad inputs, checkpoints (ours and official), variants."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from parity_helpers import find_fixture, fixture_files, load_fixture, recipe_state_dict

import mrfa
from mrfa.checkpoint import CheckpointError, load_checkpoint, save_snapshot
from mrfa.config import ConfigError, ExperimentConfig, config_to_dict, load_config
from mrfa.official import from_official

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_cfg() -> ExperimentConfig:
    return load_config(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def tiny(tiny_cfg):
    torch.manual_seed(0)
    return mrfa.build_model(tiny_cfg).eval()


def _images(b: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.rand(b, 3, size, size, generator=g)


# ------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_loads_strictly(path):
    cfg = load_config(path)
    again = mrfa.config.config_from_dict(copy.deepcopy(config_to_dict(cfg)))
    assert again == cfg


def test_official_sized_model_parameter_count():
    model = mrfa.build_model(load_config(ROOT / "configs" / "vox256.yaml"))
    # the official vox256 model: 114,339,206 without VGG, of which 49,152 are the fixed sine embedding (a buffer here)
    assert sum(p.numel() for p in model.parameters()) == 114_339_206 - 49_152


def test_shipped_yamls_equal_the_official_configs():
    """Each fixture's official config, imported, equals the shipped YAML of the same variant (model part)."""
    found = 0
    for path in fixture_files():
        meta = load_fixture(path)["meta"]
        official = from_official(meta["config"]).model
        if meta["bg_predictor"]:
            name = "celebvhq256"
        elif meta["prior_only"]:
            name = "vox256-prior-only"
        else:
            name = {"mtia": "vox256", "fomm": "vox256-fomm", "tpsm": "vox256-tpsm"}[meta["prior_model"]]
        ours = load_config(ROOT / "configs" / f"{name}.yaml").model
        if official.prior != "mtia":  # the mtia section is unused by other priors and the importer leaves defaults
            official.mtia = ours.mtia
        assert ours == official, name
        found += 1
    assert found


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  refinement:\n    corr_raduis: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.refinement\.corr_raduis"):
        load_config(p)


@pytest.mark.parametrize("text, pattern", [
    ("model: {image_size: '256'}", "model.image_size' must be an integer"),
    ("model: {prior: hrnet}", "model.prior' must be one of"),
    ("train: {lr: fast}", "train.lr' must be a number"),
    ("model: {image_size: 250}", "divisible"),
    ("- 1\n- 2", "top level must be a mapping"),
    ("data: {augmentation: {hue: 0.7}}", "data.augmentation.*hue must be in"),
])
def test_bad_values_are_reported(tmp_path, text, pattern):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(p)


def test_overrides_and_official_yaml_rejected(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["train.lr=1e-3", "model.refinement.final_warp=refined"])
    assert cfg.train.lr == 1e-3 and cfg.model.refinement.final_warp == "refined"
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        load_config(ROOT / "configs" / "tiny.yaml", ["train.lrr=1"])
    p = tmp_path / "official.yaml"
    p.write_text("train_params: {num_epochs: 1}\nraft_flow: {}\n")
    with pytest.raises(ConfigError, match="official MRFA config"):
        load_config(p)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


# ------------------------------------------------------------------------------------------- model
def test_tiny_forward_backward_every_parameter_gets_a_gradient(tiny_cfg):
    torch.manual_seed(0)
    model = mrfa.build_model(tiny_cfg).train()
    s, d = _images(2, tiny_cfg.model.image_size)
    out = model(s, d)
    size = tiny_cfg.model.image_size
    assert out.prediction.shape == (2, 3, size, size) and out.warped_image.shape == (2, 3, size, size)
    assert [f.shape[-1] for f in out.flows] == [4, 8, 16, 32, 64]
    assert all(torch.isfinite(t).all() for t in [out.prediction, *out.flows, *out.occlusions])
    (out.prediction.mean() + sum(f.mean() for f in out.flows)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad[:5]


@pytest.mark.parametrize("override", [
    ["model.prior=fomm"], ["model.prior=tpsm"], ["model.refinement.prior_only=true"],
    ["model.refinement.flow_init=correlation"], ["model.refinement.final_warp=refined"], ["model.background=true"],
])
def test_variants_run(override):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", override)
    model = mrfa.build_model(cfg).eval()
    s, d = _images(1, cfg.model.image_size)
    with torch.no_grad():
        out = model(s, d)
    assert out.prediction.shape == s.shape and torch.isfinite(out.prediction).all()


def test_final_warp_flag_changes_only_the_warp(tiny_cfg):
    torch.manual_seed(0)
    a = mrfa.build_model(tiny_cfg).eval()
    b = mrfa.build_model(load_config(ROOT / "configs" / "tiny.yaml", ["model.refinement.final_warp=refined"])).eval()
    b.load_state_dict(a.state_dict())
    s, d = _images(1, tiny_cfg.model.image_size)
    with torch.no_grad():
        oa, ob = a(s, d), b(s, d)
    assert torch.equal(oa.flows[-1], ob.flows[-1])
    assert not torch.equal(oa.warped_image, ob.warped_image)


@pytest.mark.parametrize("make, pattern", [
    (lambda s: s[:, :, :32], r"shape \[B, 3, 64, 64\].*got \[1, 3, 32, 64\]"),
    (lambda s: s[:, :1], r"got \[1, 1, 64, 64\]"),
    (lambda s: (s * 255).to(torch.uint8), "floating-point"),
    (lambda s: s.numpy(), "must be a torch.Tensor"),
    (lambda s: s[0], r"got \[3, 64, 64\]"),
])
def test_bad_inputs_give_one_clear_error(tiny, make, pattern):
    s, d = _images(1, 64)
    with pytest.raises((ValueError, TypeError), match=pattern):
        tiny(make(s), d)


def test_batch_mismatch(tiny):
    s, _ = _images(1, 64)
    _, d = _images(2, 64)
    with pytest.raises(ValueError, match="batch sizes differ"):
        tiny(s, d)


def test_animate_with_cached_source_encoding(tiny):
    s, d = _images(1, 64)
    d2, _ = _images(3, 64, seed=1)
    with torch.no_grad():
        enc = tiny.encode_source(s)
        kp0 = tiny.kp_detector(d)
        batched = tiny.animate(s, d2, d, source_encoding=enc, kp_driving_initial=kp0).prediction
        single = torch.cat([tiny.animate(s, d2[i:i + 1], d).prediction for i in range(3)])
        same = tiny.animate(s, d, d).prediction  # driving == initial: keypoints equal the source's
        recon = tiny.generate(enc, enc.kp).prediction
    assert batched.shape == (3, 3, 64, 64)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(same, recon, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------- checkpoints
def test_snapshot_roundtrip(tmp_path, tiny, tiny_cfg):
    path = tmp_path / "snap.pt"
    save_snapshot(path, tiny, tiny_cfg)
    loaded = load_checkpoint(path)
    s, d = _images(1, 64)
    with torch.no_grad():
        assert torch.equal(tiny(s, d).prediction, loaded(s, d).prediction)
    assert loaded.config == tiny_cfg


def test_official_checkpoint_layout_loads(tmp_path):
    """A DDP-style {'model': {'module.<official key>': ...}} file from a fixture's shapes + recipe loads."""
    path = find_fixture("vox256-mtia.pt")
    assert path is not None, "the parity fixture vox256-mtia.pt is missing"
    meta = load_fixture(path)["meta"]
    state = recipe_state_dict(path.parent, meta)
    for key, shape in meta["shapes"].items():  # the computed entries an official file also holds
        if key not in state:
            state[key] = torch.zeros(shape, dtype=torch.long if key.endswith("num_batches_tracked") else torch.float32)
    path = tmp_path / "official.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {}, "epoch": 99}, path)
    model = load_checkpoint(path)
    ours = model.state_dict()
    key = "refiner.refine_head.conv1.weight"
    assert torch.equal(ours[key], state["decoder.refine.conv1.weight"])
    # converter CLI
    out = tmp_path / "converted.pt"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_official.py"), str(path), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert torch.equal(load_checkpoint(out).state_dict()[key], ours[key])


def test_checkpoint_errors(tmp_path, tiny, tiny_cfg):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(bad)
    good = tmp_path / "snap.pt"
    save_snapshot(good, tiny, tiny_cfg)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(trunc)
    other = tmp_path / "vgg.pt"
    torch.save({"features.0.weight": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not an MRFA checkpoint"):
        load_checkpoint(other)
    # right kind, wrong contents: one message with the first missing / unexpected keys
    state = dict(tiny.state_dict())
    state.pop("generator.final.weight")
    state["generator.extra"] = torch.zeros(1)
    broken = tmp_path / "broken.pt"
    torch.save({"format": "mrfa-snapshot/1", "config": config_to_dict(tiny_cfg), "model": state}, broken)
    with pytest.raises(CheckpointError, match=r"1 missing keys \(first: generator.final.weight\).*unexpected"):
        load_checkpoint(broken)
    # a snapshot of another size does not fit a given config
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint(good, config=load_config(ROOT / "configs" / "tiny.yaml", ["model.num_kp=5"]))


def test_the_model_says_whether_it_has_jacobians():
    for name, expected in (("tiny", True), ("vox256-tpsm", False)):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert mrfa.build_model(cfg).has_jacobian is expected, name
