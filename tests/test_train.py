"""Training: loss dict, one step, clipping groups, loss decrease, bit-exact resume, NaN stop, CLI, adversarial
state, DDP on CPU (gloo), flow-accuracy conventions. Tiny config (64 px) with a random-weight VGG."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mrfa.builders import build_model, build_perceptual
from mrfa.checkpoint import load_checkpoint, read_checkpoint
from mrfa.cli import main as mrfa_main
from mrfa.config import load_config
from mrfa.data.synthetic import generate_dataset
from mrfa.losses.equivariance import RandomTPSTransform
from mrfa.metrics.flow import prior_positions, prior_refiner_positions, refined_positions
from mrfa.training.objective import Schedule, build_objective
from mrfa.training.state import STATE_NAME
from mrfa.training.trainer import NonFiniteLossError, Trainer
from mrfa.training.visualize import COLUMNS, training_grid


def train_main(argv: list[str]) -> int:
    return mrfa_main(["train", *argv])


REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny steps are fast, and it avoids OpenMP stalls on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, num_train=4, num_test=1, num_frames=6, size=64, clips_per_identity=2)
    return root


def tiny_overrides(root: Path, **extra: object) -> list[str]:
    base = {"data.root": str(root), "data.num_repeats": 2, "train.num_epochs": 3, "train.epoch_milestones": [1],
            "train.image_every": 0, "train.final_video": False, "train.checkpoint_every": 100}
    base.update(extra)
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in base.items()]


def tiny_cfg(root: Path, **extra: object):
    return load_config(TINY, tiny_overrides(root, **extra))


def fixed_batch(seed: int = 0, batch: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(batch, 3, 16, 16, generator=g)
    up = torch.nn.functional.interpolate(base, size=64, mode="bilinear", align_corners=False)
    return {"source": up, "driving": torch.roll(up, shifts=(2, 3), dims=(2, 3))}


# ---------------------------------------------------------------------------------------------- objective

def test_one_step_finite_keys_and_clipping_groups(data_root, tmp_path, monkeypatch) -> None:
    trainer = Trainer(tiny_cfg(data_root), output=tmp_path)
    assert trainer.loss_names == ["perceptual", "equivariance_value", "equivariance_jacobian"]
    clipped: list[set[int]] = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, norm_type=2.0, **kw):
        params = list(params)
        assert max_norm == 10.0 and norm_type == math.inf
        clipped.append({id(p) for p in params})
        out = real_clip(params, max_norm, norm_type=norm_type, **kw)
        assert max(p.grad.abs().max() for p in params if p.grad is not None) <= 10.0 * (1 + 1e-5)
        return out

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    losses = trainer.train_step([fixed_batch()])
    assert set(losses) == {"perceptual", "equivariance_value", "equivariance_jacobian", "total"}
    assert all(math.isfinite(v) for v in losses.values())
    assert losses["total"] == pytest.approx(sum(v for k, v in losses.items() if k != "total"), rel=1e-6)
    model = trainer.model
    ids = lambda m: {id(p) for p in m.parameters()}  # noqa: E731
    assert clipped == [ids(model.kp_detector), ids(model.dense_motion)]  # not the refiner / generator
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith("refiner.") for k in changed) and any(k.startswith("kp_detector.") for k in changed)
    grid = training_grid(*trainer.last_output)
    assert grid.shape == (2 * 64, len(COLUMNS) * 64, 3) and grid.dtype.name == "uint8"


def test_tpsm_skips_jacobian_and_background_term(data_root) -> None:
    cfg = tiny_cfg(data_root, **{"model.prior": "tpsm", "loss.equivariance_jacobian": 10.0, "model.background": True})
    obj = build_objective(cfg, build_model(cfg), build_perceptual(cfg))
    assert obj.loss_names() == ["perceptual", "equivariance_value", "background"]
    batch = fixed_batch()
    transform = obj.sample_transform(2, torch.Generator().manual_seed(0), torch.device("cpu"))
    losses, out = obj(batch["source"], batch["driving"], epoch=0, transform=transform)
    assert list(losses) == obj.loss_names()
    assert out.kp_driving.jacobian is None and all(torch.isfinite(v) for v in losses.values())
    # official TPS dropout schedule: 0.1 -> 0.3 over 10 epochs, off from epoch 35; never for other priors
    assert [round(Schedule.from_config(cfg).tps_dropout_p(e), 6) for e in (0, 5, 10, 34, 35)] == [0.1, 0.25, 0.3, 0.3, 0.0]
    assert Schedule.from_config(tiny_cfg(data_root)).tps_dropout_p(0) == 0.0


def test_identity_transform_gives_zero_equivariance(data_root) -> None:
    cfg = tiny_cfg(data_root)
    obj = build_objective(cfg, build_model(cfg).eval(), build_perceptual(cfg))
    batch = fixed_batch()
    identity = RandomTPSTransform(torch.eye(2, 3).expand(2, 2, 3).clone())
    losses, _ = obj(batch["source"], batch["driving"], transform=identity)
    # not exactly 0: the official frame warp samples the 2i/(n-1)-1 grid with align_corners=False (a 1/n zoom)
    assert losses["equivariance_value"].item() < 1e-3 and losses["equivariance_jacobian"].item() < 1e-3
    random_t = obj.sample_transform(2, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert obj(batch["source"], batch["driving"], transform=random_t)[0]["equivariance_value"].item() > 1e-2
    losses, _ = obj(batch["driving"], batch["driving"], transform=identity)
    assert losses["perceptual"].item() > 0  # the untrained model does not reproduce the frame


def test_loss_decreases_on_fixed_batch(data_root, tmp_path) -> None:
    trainer = Trainer(tiny_cfg(data_root, **{"train.lr": 1e-3, "loss.equivariance_value": 0.0,
                                             "loss.equivariance_jacobian": 0.0}), output=tmp_path)
    batch = fixed_batch(1)
    totals = [trainer.train_step([batch])["total"] for _ in range(6)]
    assert totals[-1] < 0.9 * totals[0], totals


# ---------------------------------------------------------------------------------------------- checkpoints

def test_resume_is_bit_exact(data_root, tmp_path) -> None:
    # 2 steps per epoch, milestone at epoch 1: the resumed part crosses an epoch boundary and an lr decay
    straight, part = tmp_path / "straight", tmp_path / "part"
    assert train_main(["--config", str(TINY), "--output", str(straight), "--set",
                       *tiny_overrides(data_root, **{"train.max_steps": 3})]) == 0
    assert train_main(["--config", str(TINY), "--output", str(part), "--set",
                       *tiny_overrides(data_root, **{"train.max_steps": 1})]) == 0
    assert train_main(["--resume", str(part), "--set", "train.max_steps=3"]) == 0
    a, b = read_checkpoint(straight / STATE_NAME), read_checkpoint(part / STATE_NAME)
    assert a["progress"] == b["progress"] and a["progress"]["step"] == 3 and a["progress"]["epoch"] == 1
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    sa, sb = a["optimizers"]["generator"]["state"], b["optimizers"]["generator"]["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert a["schedulers"] == b["schedulers"] and a["schedulers"]["generator"]["_last_lr"][0] == pytest.approx(2e-5)
    snapshot = load_checkpoint(part / "snapshot.pt")  # the inference snapshot loads on its own
    assert torch.equal(snapshot.state_dict()["refiner.pos_embedding"], b["model"]["refiner.pos_embedding"])
    log = [json.loads(line) for line in (part / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss/total" in r] == [1, 2, 3]


def test_nan_loss_stops_and_keeps_last_checkpoint(data_root, tmp_path, monkeypatch, capsys) -> None:
    trainer = Trainer(tiny_cfg(data_root, **{"train.checkpoint_every": 1, "train.max_steps": 4}), output=tmp_path)
    forward = trainer.objective.forward

    def poisoned(*args, **kwargs):
        losses, out = forward(*args, **kwargs)
        if trainer.step == 2:  # the third step
            losses["perceptual"] = losses["perceptual"] * float("nan")
        return losses, out

    monkeypatch.setattr(trainer.objective, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3 .*perceptual=nan.*step 2\) is intact"):
        trainer.fit()
    state = read_checkpoint(tmp_path / STATE_NAME)
    assert state["progress"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_adversarial_trains_and_is_checkpointed(data_root, tmp_path) -> None:
    adv = {"loss.adversarial.enabled": True, "loss.adversarial.block_expansion": 8, "loss.adversarial.max_features": 16,
           "loss.adversarial.num_blocks": 2, "loss.adversarial.feature_matching": [10.0, 10.0],
           "train.max_steps": 1}
    trainer = Trainer(tiny_cfg(data_root, **adv), output=tmp_path)
    disc_before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    result = trainer.fit()
    assert set(result.last_losses) == {"perceptual", "equivariance_value", "equivariance_jacobian", "generator_gan",
                                       "feature_matching", "discriminator_gan", "total"}
    assert all(math.isfinite(v) for v in result.last_losses.values())
    state = read_checkpoint(tmp_path / STATE_NAME)
    assert state["discriminator"].keys() == disc_before.keys()
    assert any(not torch.equal(state["discriminator"][k], disc_before[k]) for k in disc_before)
    assert len(state["optimizers"]["discriminator"]["state"]) > 0
    # resuming restores the discriminator and its optimiser
    resumed = Trainer(tiny_cfg(data_root, **adv), output=tmp_path, resume=tmp_path / STATE_NAME)
    assert all(torch.equal(v, state["discriminator"][k]) for k, v in resumed.discriminator.state_dict().items())
    assert resumed.optimizers["discriminator"].state_dict()["state"].keys() == \
        state["optimizers"]["discriminator"]["state"].keys()


def test_fit_writes_logs_tensorboard_images_and_video(data_root, tmp_path) -> None:
    cfg = tiny_cfg(data_root, **{"train.max_steps": 2, "train.image_every": 2, "train.final_video": True})
    result = Trainer(cfg, output=tmp_path).fit()
    assert result.step == 2 and len(result.totals) == 2
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 1 and {"loss/perceptual", "loss/total", "lr/generator", "perf/samples_per_s",
                                        "data/skipped_videos"} <= set(records[0])
    assert (tmp_path / "images" / "train_grid_step_00000002.png").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "reconstruction.mp4").stat().st_size > 1000 and 0 < summary["video_l1"] < 1
    from mrfa.media.video import read_video

    video = read_video(tmp_path / "reconstruction.mp4")
    assert video.shape == (6, 256, 3 * 256, 3)  # source | driving | prediction per test frame, enlarged x4


# ---------------------------------------------------------------------------------------------- CLI

def test_cli_strict_config_errors_and_dry_run(data_root, tmp_path, capsys) -> None:
    assert train_main(["--config", str(TINY), "--set", "train.bogus=1", "--output", str(tmp_path / "x")]) == 1
    assert "unknown key 'train.bogus'" in capsys.readouterr().err
    assert train_main(["--config", str(TINY), "--set", "train.lr=fast", "--dry-run"]) == 1
    assert "'train.lr' must be a number" in capsys.readouterr().err
    assert train_main(["--config", str(tmp_path / "missing.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err
    assert train_main(["--config", str(TINY), "--dry-run", "--set", "train.lr=0.001", "--output",
                       str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.001" in out and "image_size: 64" in out and f"# output: {tmp_path / 'run'}" in out
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


# ---------------------------------------------------------------------------------------------- DDP

DDP_SCRIPT = """
import json, sys, torch, torch.distributed as dist
from mrfa.config import load_config
from mrfa.utils import distributed as D
from mrfa.training.trainer import Trainer
torch.set_num_threads(1)
cfg = load_config(sys.argv[1], sys.argv[3:])
info = D.init_distributed("cpu")
trainer = Trainer(cfg, output=sys.argv[2], dist_info=info)
result = trainer.fit()
flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
everyone = [None] * info.world_size
dist.all_gather_object(everyone, flat)
if info.is_main:
    json.dump({"world": info.world_size, "step": result.step, "loss": result.last_losses,
               "equal": all(torch.equal(everyone[0], f) for f in everyone)}, open(sys.argv[2] + "/ddp.json", "w"))
D.cleanup()
"""


def test_ddp_two_processes_gloo(data_root, tmp_path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(TINY), str(out), *tiny_overrides(data_root, **{"train.batch_size": 4, "train.max_steps": 3})]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "ddp.json").read_text())
    assert report["world"] == 2 and report["step"] == 3 and report["equal"]
    assert all(math.isfinite(v) for v in report["loss"].values())
    state = read_checkpoint(out / STATE_NAME)  # written by rank 0 only, with both ranks' RNG streams
    assert state["progress"]["world_size"] == 2 and len(state["rng"]["per_rank"]) == 2
    initial = build_model(load_config(TINY))
    assert not torch.equal(state["model"]["refiner.pos_embedding"], initial.state_dict()["refiner.pos_embedding"])


# ---------------------------------------------------------------------------------------------- flow accuracy

def test_flow_accuracy_conventions() -> None:
    size, g = 64, 16
    # a pure translation by (+3, -2) pixels written in each convention must decode to the same positions
    xs = torch.arange(size, dtype=torch.float32)
    truth = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), dim=-1)[None] + torch.tensor([3.0, -2.0])
    flow = torch.tensor([3.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, size, size)
    assert torch.allclose(refined_positions(flow), truth)
    cells = (torch.arange(g, dtype=torch.float32) + 0.5) / g * 2 - 1  # align_corners=False cell centres
    grid = torch.stack(torch.meshgrid(cells, cells, indexing="xy"), dim=-1)[None]  # identity grid
    shift = torch.tensor([3.0, -2.0]) * 2 / size  # pixels -> normalised units (align_corners=False)
    inner = slice(8, -8)  # away from the border, where bilinear upsampling extrapolates by clamping
    assert torch.allclose(prior_positions(grid + shift, size)[:, inner, inner], truth[:, inner, inner], atol=1e-4)
    ac_grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, g), torch.linspace(-1, 1, g), indexing="xy"), -1)[None]
    ident = prior_refiner_positions(ac_grid, size)  # the refiner's (align_corners=True) identity is exact
    assert torch.allclose(ident, truth - torch.tensor([3.0, -2.0]), atol=1e-4)
