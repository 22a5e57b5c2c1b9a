"""Training data plumbing (paper Sec. 4 "Datasets"; official ``DatasetRepeater`` + ``DistributedSampler``).

Builds the repeated ``FramesDataset`` of a config, generates the embedded synthetic dataset when
``data.synthetic`` is set and the root is missing, and provides a sampler that can start in the middle of
an epoch (for bit-exact resume). Items are reproducible: ``FramesDataset(seed=train.seed)`` draws item
``i`` of epoch ``e`` with ``default_rng((seed, e, i))``, so the data stream depends only on the sampler
order, which depends only on ``(seed, epoch)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler

from mrfa.config import ExperimentConfig
from mrfa.data.augment import AugmentationParams
from mrfa.data.frames_dataset import DatasetRepeater, FramesDataset


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled by ``seed + epoch``, equal shards, ``drop_last``) that skips the first
    ``start`` samples of this rank's shard, so an interrupted epoch continues where it stopped.

    Args:
        dataset_len: number of items of the (repeated) dataset.
        num_replicas, rank: the process group layout (1, 0 for a single process).
        seed: shuffle seed.
    """

    def __init__(self, dataset_len: int, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(range(dataset_len), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Select the epoch's order and skip its first ``start`` samples (of this rank's shard)."""
        self.set_epoch(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def ensure_dataset(cfg: ExperimentConfig, *, is_main: bool) -> Path:
    """Return the dataset root; with ``data.synthetic`` write the embedded dataset there first if it is missing.

    Only the main process generates; callers synchronise the other ranks afterwards.

    Raises:
        FileNotFoundError: the root (or its train split) does not exist and ``data.synthetic`` is false.
    """
    root = Path(cfg.data.root)
    if (root / "train").is_dir():
        return root
    if not cfg.data.synthetic:
        raise FileNotFoundError(f"dataset root {root} has no train/ folder; point data.root at a dataset "
                                f"(root/train/<video>, root/test/<video>) or set data.synthetic: true to generate "
                                f"the embedded synthetic dataset there")
    if is_main:
        from mrfa.data.synthetic import generate_dataset

        d = cfg.data
        print(f"[mrfa train] generating the synthetic dataset in {root} ({d.synthetic_train} train + "
              f"{d.synthetic_test} test clips, {d.synthetic_frames} frames, {cfg.model.image_size} px)", flush=True)
        generate_dataset(root, num_train=d.synthetic_train, num_test=d.synthetic_test,
                         num_frames=d.synthetic_frames, size=cfg.model.image_size, seed=cfg.train.seed,
                         overwrite=False)
    return root


def augmentation_params(cfg: ExperimentConfig) -> AugmentationParams:
    return cfg.data.augmentation


def build_train_dataset(cfg: ExperimentConfig) -> DatasetRepeater:
    """The repeated training dataset (identity sampling, official augmentation, seeded items)."""
    size = cfg.model.image_size
    base = FramesDataset(cfg.data.root, frame_shape=(size, size, cfg.model.num_channels),
                         id_sampling=cfg.data.id_sampling, split_len=cfg.data.split_len, is_train=True,
                         augmentation=augmentation_params(cfg), seed=cfg.train.seed)
    return DatasetRepeater(base, cfg.data.num_repeats)


def build_test_dataset(cfg: ExperimentConfig) -> Optional[FramesDataset]:
    """The test split as whole videos, or None when the root has no usable ``test/`` folder."""
    size = cfg.model.image_size
    if not (Path(cfg.data.root) / "test").is_dir():
        return None
    try:
        return FramesDataset(cfg.data.root, frame_shape=(size, size, cfg.model.num_channels), is_train=False)
    except ValueError:  # no usable test video
        return None


def build_loader(dataset: DatasetRepeater, sampler: ResumableSampler, *, micro_batch: int, num_workers: int,
                 pin_memory: bool, seed: int) -> DataLoader:
    """DataLoader over ``sampler``; its own generator keeps the global torch RNG untouched (resume)."""
    return DataLoader(dataset, batch_size=micro_batch, sampler=sampler, num_workers=num_workers, drop_last=True,
                      pin_memory=pin_memory, persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed))
