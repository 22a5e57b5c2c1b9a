"""The training loop (paper Sec. 4 "Implementation details"; official ``train.py``), plus what the
official trainer lacks: single-process CPU/GPU runs, mixed precision, channels_last, ``torch.compile``,
gradient accumulation, bit-exact resume and a NaN/inf guard.

Recipe: Adam (lr 2e-4, betas (0.5, 0.999)) over three parameter groups (kp_detector, decoder, dense_motion),
a second Adam for the background predictor and a third for the optional discriminator; MultiStepLR on
epochs (gamma 0.1); inf-norm gradient clipping at ``train.clip`` of the keypoint detector, the dense motion
and the background predictor (each separately), never of the decoder. ``train.batch_size`` is the global
batch = per-process micro-batch x world size x ``train.grad_accum``. An epoch is one pass over
``num_repeats`` x identities; ``step`` counts optimiser steps.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from mrfa.builders import (
    CLIPPED_GROUPS,
    build_discriminator,
    build_model,
    build_optimizers,
    build_perceptual,
    build_schedulers,
    parameter_groups,
)
from mrfa.checkpoint import load_state_strict, save_snapshot
from mrfa.config import ExperimentConfig, config_to_dict
from mrfa.media.writer import write_json
from mrfa.training.data import ResumableSampler, build_loader, build_test_dataset, build_train_dataset, ensure_dataset
from mrfa.training.logging import TrainLogger
from mrfa.training.objective import DiscriminatorObjective, build_objective
from mrfa.training.state import SNAPSHOT_NAME, STATE_NAME, capture_rng, read_state, restore_rng, write_state
from mrfa.training.visualize import training_grid, write_reconstruction_video
from mrfa.utils import distributed as D
from mrfa.utils.warnings import RunWarnings

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """A loss term (or a parameter) became NaN/inf; the message names it and the last good checkpoint."""


@dataclasses.dataclass
class TrainResult:
    """What ``Trainer.fit`` returns: final progress, per-step total losses of this run and the last terms."""

    step: int
    epoch: int
    output: Path
    totals: list[float]
    last_losses: dict[str, float]
    wall_s: float


class Trainer:
    """Builds everything from ``cfg`` and trains (see the module docstring).

    Args:
        cfg: resolved experiment config.
        output: run folder (state, snapshot, logs, images, video).
        dist_info: process layout from :func:`mrfa.utils.distributed.init_distributed` (None = 1 CPU/GPU
            process on ``device``).
        device: used when ``dist_info`` is None.
        resume: a training-state file to continue from.
        with_data: build the dataset and loader (False: only ``train_step`` on caller batches, e.g. benchmarks).
    """

    def __init__(self, cfg: ExperimentConfig, *, output: str | Path, dist_info: Optional[D.DistInfo] = None,
                 device: str | torch.device = "cpu", resume: Optional[str | Path] = None,
                 with_data: bool = True) -> None:
        self.cfg, self.output = cfg, Path(output)
        self.warn = RunWarnings("mrfa train")  # accepted-but-suspicious conditions, counted in summary.json
        self.time_capped: Optional[tuple[int, int]] = None  # (step reached, steps planned) when max_minutes stopped
        self.dist = dist_info or D.DistInfo(0, 1, 0, torch.device(device))
        self.device, t = self.dist.device, cfg.train
        _set_determinism(t.deterministic, self.device)
        world, accum = self.dist.world_size, t.grad_accum
        if accum < 1 or t.batch_size % (world * accum) != 0:
            raise ValueError(f"train.batch_size {t.batch_size} must be divisible by world size {world} x "
                             f"train.grad_accum {accum}")
        self.micro_batch, self.accum = t.batch_size // (world * accum), accum

        # data (rank 0 generates the synthetic set, the others wait); with_data=False: train_step only
        self.dataset = self.sampler = self.loader = None
        self.steps_per_epoch = self.batches_per_epoch = 0
        if with_data:
            self._build_data()

        self._build_networks()
        self.groups = parameter_groups(self.model)
        self.optimizers = build_optimizers(t, self.groups, self.discriminator)
        self.schedulers = build_schedulers(t, self.optimizers)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.amp == "fp16")
        self.amp = torch.autocast(self.device.type, dtype=AMP_DTYPES.get(t.amp, torch.float32),
                                  enabled=t.amp != "none")

        # per-rank random streams (data items are keyed by (seed, epoch, index) and need none)
        random.seed(t.seed + self.dist.rank)
        np.random.seed(t.seed + self.dist.rank)
        torch.manual_seed(t.seed + 1000 * (self.dist.rank + 1))
        self.transform_gen = torch.Generator().manual_seed(t.seed + 7919 * (self.dist.rank + 1))
        self.step = self.epoch = self.batch_in_epoch = 0
        self._saved_step: Optional[int] = None
        if resume is not None:
            self._load(Path(resume))

        self._wrap()
        self.loss_names = self.objective.loss_names() + (["discriminator_gan"] if self.disc_module else [])
        self.last_output: Optional[tuple] = None

    def _build_networks(self) -> None:
        """Model, discriminator and objective, with identical initial weights on every rank."""
        cfg, t = self.cfg, self.cfg.train
        torch.manual_seed(t.seed)
        model = build_model(cfg)
        if self.dist.world_size > 1 and self.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        fmt = torch.channels_last if t.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=fmt)
        self.discriminator = build_discriminator(cfg)
        if self.discriminator is not None:
            self.discriminator = self.discriminator.to(self.device, memory_format=fmt)
        self.objective = build_objective(cfg, self.model, build_perceptual(cfg).to(self.device),
                                         discriminator=self.discriminator)

    def _wrap(self) -> None:
        """``torch.compile`` per part (``train.compile``), then DDP (which broadcasts rank 0's weights)."""
        cfg, t = self.cfg, self.cfg.train
        if t.compile:  # per part: the jacobian-equivariance double backward cannot go through compiled code
            for part in (self.model.kp_detector, self.model.dense_motion, self.model.refiner,
                         self.model.bg_predictor, self.objective.perceptual.backbone, self.discriminator):
                if part is not None:
                    part.compile()
        self.gen_module: torch.nn.Module = self.objective
        self.disc_module: Optional[torch.nn.Module] = None
        if self.discriminator is not None:
            self.disc_module = DiscriminatorObjective(self.discriminator, cfg.loss.adversarial.discriminator_gan)
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # parameters without a gradient: the bg predictor before bg_start, the generator's coarse-branch
            # ChannelBlocks in prior-only mode (built for checkpoint compatibility, skipped by decode)
            unused = (self.model.bg_predictor is not None and t.bg_start > self.epoch) or \
                cfg.model.refinement.prior_only
            self.gen_module = DDP(self.objective, device_ids=ids, find_unused_parameters=unused)
            if self.disc_module is not None:
                self.disc_module = DDP(self.disc_module, device_ids=ids)

    def _build_data(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        ensure_dataset(cfg, is_main=self.dist.is_main)
        D.barrier()
        self.dataset = build_train_dataset(cfg)
        self.sampler = ResumableSampler(len(self.dataset), num_replicas=self.dist.world_size, rank=self.dist.rank,
                                        seed=t.seed)
        self.steps_per_epoch = self.sampler.num_samples // self.micro_batch // self.accum
        if self.steps_per_epoch < 1:
            raise ValueError(f"an epoch has {self.sampler.num_samples} items per process, fewer than one step "
                             f"({self.micro_batch} x grad_accum {self.accum}); raise data.num_repeats or lower "
                             f"train.batch_size")
        self.batches_per_epoch = self.steps_per_epoch * self.accum  # micro-batches used per epoch (rest dropped)
        self.loader = build_loader(self.dataset, self.sampler, micro_batch=self.micro_batch,
                                   num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda",
                                   seed=t.seed)

    # ------------------------------------------------------------------------------------------ one step
    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches (dicts with 'source' and 'driving').

        Returns:
            the mean of each loss term over the micro-batches (this rank) and ``'total'``.

        Raises:
            NonFiniteLossError: a loss term is NaN/inf on any rank (nothing is updated).
        """
        self.model.train()
        sums = torch.zeros(len(self.loss_names) + 1, dtype=torch.float64)
        for i, batch in enumerate(micro_batches):
            sync = i == len(micro_batches) - 1
            source, driving = (self._to_device(batch[k]) for k in ("source", "driving"))
            transform = self.objective.sample_transform(source.shape[0], self.transform_gen, self.device)
            if self.discriminator is not None:
                self.discriminator.requires_grad_(False)  # a fixed critic during the generator step
            with self._no_sync(self.gen_module, sync):
                with self.amp:
                    losses, out = self.gen_module(source, driving, epoch=self.epoch, transform=transform)
                total = sum(losses.values())
                *row, total_value = self._checked_values(losses, total)
                self.scaler.scale(total / len(micro_batches)).backward()
            if self.disc_module is not None:
                self.discriminator.requires_grad_(True)
                with self._no_sync(self.disc_module, sync):
                    with self.amp:
                        d_losses = self.disc_module(driving, out.prediction.detach(), out.kp_driving.value.detach())
                    d_total = d_losses["discriminator_gan"]
                    row += self._checked_values(d_losses, d_total)[:-1]
                    self.scaler.scale(d_total / len(micro_batches)).backward()
            sums += torch.tensor(row + [total_value], dtype=torch.float64)  # generator total last
        self.last_output = (source.detach(), driving.detach(), out)
        for opt in self.optimizers.values():
            self.scaler.unscale_(opt)
        if self.cfg.train.clip_grad:
            for name in CLIPPED_GROUPS:
                if name in self.groups:
                    torch.nn.utils.clip_grad_norm_(self.groups[name], self.cfg.train.clip, norm_type=math.inf)
        for opt in self.optimizers.values():
            self.scaler.step(opt)
        self.scaler.update()
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self.step += 1
        means = (sums / len(micro_batches)).tolist()
        return dict(zip(self.loss_names + ["total"], means))

    def _checked_values(self, losses: dict[str, torch.Tensor], total: torch.Tensor) -> list[float]:
        """Loss values as floats (+ the total last); raise on NaN/inf on any rank before anything is updated."""
        vec = torch.stack([v.detach().float() for v in losses.values()] + [total.detach().float()])
        bad = (~torch.isfinite(vec)).any().to(torch.int32)
        D.all_reduce_(bad, "max")
        values = vec.tolist()
        if bad.item():
            terms = ", ".join(f"{k}={v:.4g}" for k, v in zip(list(losses) + ["total"], values))
            raise NonFiniteLossError(f"non-finite loss at step {self.step + 1} (epoch {self.epoch}): {terms}; "
                                     f"training stopped, {self._last_good()}")
        return values

    def _last_good(self) -> str:
        if self._saved_step is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint {self.output / STATE_NAME} (step {self._saved_step}) is intact"

    def _to_device(self, x: Any) -> torch.Tensor:
        x = torch.as_tensor(x).to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x

    @staticmethod
    def _no_sync(module: torch.nn.Module, sync: bool):
        return module.no_sync() if isinstance(module, DDP) and not sync else contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------ loop
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.cfg.train.num_epochs
        return min(total, self.cfg.train.max_steps) if self.cfg.train.max_steps is not None else total

    def fit(self) -> TrainResult:
        """Train until ``num_epochs`` or ``max_steps``; checkpoints every ``checkpoint_every`` steps and at the end."""
        if self.loader is None:
            raise ValueError("this Trainer was built with with_data=False; fit() needs the dataset")
        t, start_time = self.cfg.train, time.perf_counter()
        total = self.total_steps()
        log = TrainLogger(self.output, enabled=self.dist.is_main, total_steps=total, start_step=self.step)
        log.message(f"[mrfa train] {self.output}: {self.steps_per_epoch} steps/epoch, global batch "
                    f"{t.batch_size} = {self.micro_batch} x {self.dist.world_size} process(es) x {self.accum}, "
                    f"device {self.device}, amp {t.amp}, start step {self.step} (epoch {self.epoch}), "
                    f"{self.dataset.dataset.num_skipped} video(s) skipped")
        totals: list[float] = []
        last: dict[str, float] = {}
        window = torch.zeros(len(self.loss_names) + 1, dtype=torch.float64)
        window_steps, data_time, tick = 0, 0.0, time.perf_counter()
        try:
            while self.step < total:
                self.sampler.set_position(self.epoch, self.batch_in_epoch * self.micro_batch)
                self.dataset.set_epoch(self.epoch)
                batches = iter(self.loader)
                while self.batch_in_epoch < self.batches_per_epoch and self.step < total:
                    t0 = time.perf_counter()
                    micro = [next(batches) for _ in range(self.accum)]
                    data_time += time.perf_counter() - t0
                    last = self.train_step(micro)
                    self.batch_in_epoch += self.accum
                    totals.append(last["total"])
                    window += torch.tensor(list(last.values()), dtype=torch.float64)
                    window_steps += 1
                    log.advance(1, {"loss": last["total"]})
                    if self._time_is_up(start_time):
                        planned = total
                        self.time_capped = (self.step, planned)
                        if self.dist.is_main:
                            self.warn("time_capped", f"stopped at the train.max_minutes={t.max_minutes:g} cap after "
                                      f"{self.step} of {planned} planned steps ({100 * self.step / planned:.0f} %); "
                                      "the model is undertrained (raise the cap, or resume this run to continue)")
                        total = self.step
                    if self.step % t.log_every == 0 or self.step == total:
                        tick = self._log(log, window, window_steps, tick, data_time)
                        window.zero_()
                        window_steps, data_time = 0, 0.0
                    if self.dist.is_main and t.image_every > 0 and self.step % t.image_every == 0:
                        log.image(self.step, "train/grid", training_grid(*self.last_output))
                    if self.step % t.checkpoint_every == 0 and self.step < total:
                        self.save()
                del batches
                if self.batch_in_epoch >= self.batches_per_epoch:  # epoch finished
                    for s in self.schedulers.values():
                        s.step()
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if self.epoch >= t.num_epochs:
                        break
            self.save()
            if self.dist.is_main:
                self._finish(log, last, time.perf_counter() - start_time)
        finally:
            log.close()
            D.barrier()
        return TrainResult(self.step, self.epoch, self.output, totals, last, time.perf_counter() - start_time)

    def _time_is_up(self, start_time: float) -> bool:
        """True once ``train.max_minutes`` have passed (rank 0's clock decides for every rank)."""
        if self.cfg.train.max_minutes is None:
            return False
        up = torch.tensor(int(self.dist.is_main and time.perf_counter() - start_time > 60 * self.cfg.train.max_minutes))
        return bool(D.all_reduce_(up, "max").item())

    def _log(self, log: TrainLogger, window: torch.Tensor, steps: int, tick: float, data_time: float) -> float:
        now = time.perf_counter()
        mean = D.all_reduce_(window.clone(), "sum") / (steps * self.dist.world_size)
        values: dict[str, Any] = {"epoch": self.epoch}
        values.update({f"loss/{k}": float(v) for k, v in zip(self.loss_names + ["total"], mean.tolist())})
        for name, opt in self.optimizers.items():
            values[f"lr/{name}"] = opt.param_groups[0]["lr"]
        elapsed = max(now - tick, 1e-9)
        values["perf/samples_per_s"] = steps * self.cfg.train.batch_size / elapsed
        values["perf/sec_per_step"] = elapsed / steps
        values["perf/data_fraction"] = data_time / elapsed
        values["data/skipped_videos"] = self.dataset.dataset.num_skipped
        log.scalars(self.step, values)
        return now

    # ------------------------------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Write ``training-state.pt`` and ``snapshot.pt`` (rank 0, atomically) after checking the weights."""
        bad = torch.tensor(0, dtype=torch.int32)
        for name, p in self.model.state_dict().items():
            if p.is_floating_point() and not torch.isfinite(p).all():
                bad.fill_(1)
                break
        D.all_reduce_(bad, "max")
        if bad.item():
            raise NonFiniteLossError(f"non-finite weights at step {self.step}; training stopped, {self._last_good()}")
        rng = capture_rng(self.transform_gen)
        rngs = [rng]
        if self.dist.distributed:
            rngs = [None] * self.dist.world_size
            dist.all_gather_object(rngs, rng)
        if self.dist.is_main:
            samples = self.batch_in_epoch * self.micro_batch * self.dist.world_size
            write_state(self.output / STATE_NAME, config=config_to_dict(self.cfg), model=self.model,
                        optimizers=self.optimizers, schedulers=self.schedulers, scaler=self.scaler,
                        discriminator=self.discriminator, rng={"per_rank": rngs},
                        progress={"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                                  "samples_in_epoch": samples, "world_size": self.dist.world_size})
            save_snapshot(self.output / SNAPSHOT_NAME, self.model, self.cfg, overwrite=True, step=self.step)
        self._saved_step = self.step

    def _load(self, path: Path) -> None:
        state = read_state(path)
        saved_model = state["config"].get("model")
        if saved_model != config_to_dict(self.cfg.model):
            diff = [k for k in set(saved_model) | set(config_to_dict(self.cfg.model))
                    if saved_model.get(k) != config_to_dict(self.cfg.model).get(k)]
            raise ValueError(f"--resume {path}: the model config differs from the checkpoint's (keys: "
                             f"{sorted(diff)}); resume with the checkpoint's model settings")
        load_state_strict(self.model, state["model"], path)
        for name, opt in self.optimizers.items():
            if name not in state["optimizers"]:
                raise ValueError(f"--resume {path} has no '{name}' optimiser state (was the config changed?)")
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
        p = state["progress"]
        self.step, self.epoch = int(p["step"]), int(p["epoch"])
        per_rank = state["rng"]["per_rank"]
        if p.get("world_size", 1) == self.dist.world_size:
            self.batch_in_epoch = int(p["batch_in_epoch"])
            restore_rng(per_rank[self.dist.rank], self.transform_gen)
        else:  # another layout: continue at the same sample count, with fresh random streams
            self.batch_in_epoch = int(p["samples_in_epoch"]) // (self.micro_batch * self.dist.world_size)
            print(f"[mrfa train] rank {self.dist.rank}: world size changed ({p.get('world_size')} -> "
                  f"{self.dist.world_size}); resuming with new random streams (not bit-exact)", flush=True)
        self._saved_step = self.step

    # ------------------------------------------------------------------------------------------ end of run
    def _finish(self, log: TrainLogger, last: dict[str, float], wall: float) -> None:
        summary: dict[str, Any] = {"step": self.step, "epoch": self.epoch, "wall_s": round(wall, 1),
                                   "final_losses": last, "skipped_videos": self.dataset.dataset.num_skipped,
                                   "planned_steps": self.time_capped[1] if self.time_capped else self.step,
                                   "stopped_by_time_cap": self.time_capped is not None,
                                   "warnings": self.warn.as_dict()}
        test = build_test_dataset(self.cfg) if self.cfg.train.final_video else None
        if test is not None:
            video = write_reconstruction_video(self.model, test, self.output / "reconstruction.mp4")
            summary.update(video)
            log.scalars(self.step, {"eval/video_l1": video["video_l1"]})
        write_json(self.output / "summary.json", summary, indent=2, overwrite=True)
        log.message(f"[mrfa train] done: step {self.step}, {wall:.0f} s, final losses "
                    + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))


def _set_determinism(enabled: bool, device: torch.device) -> None:
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
