"""``mrfa train`` / ``python tools/train.py``: train MRFA from a YAML config (one process or torchrun).

Examples::

    python tools/train.py --config configs/demo.yaml
    python tools/train.py --config configs/vox256.yaml --set loss.backbone=vgg16-lpips --output runs/vox
    python tools/train.py --resume runs/vox --set train.max_steps=20000
    torchrun --nproc_per_node=4 tools/train.py --config configs/vox256.yaml --output runs/vox4

Exit codes: 0 done, 1 error (bad config, missing data ...), 3 stopped on a NaN/inf loss (the last good
checkpoint is kept).
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path
from typing import Optional

import yaml

from mrfa.config import ExperimentConfig, apply_overrides, config_from_dict, config_to_dict, load_config, save_config
from mrfa.training.state import STATE_NAME, read_state, resolve_resume_path
from mrfa.utils import distributed as D


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mrfa train`` (also used by tools/train.py)."""
    parser.add_argument("--config", metavar="YAML",
                        help="experiment config (configs/*.yaml); optional with --resume, which then uses the "
                             "config stored in the training state")
    parser.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=100 loss.backbone=vgg16-lpips")
    parser.add_argument("--output", metavar="DIR",
                        help="run folder (default: the --resume folder, else runs/<config name>)")
    parser.add_argument("--resume", metavar="DIR_or_CKPT",
                        help="continue bit-exactly from a run folder (its training-state.pt) or a state file")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config and the run layout, then exit without training")


def resolve_config(args: argparse.Namespace) -> tuple[ExperimentConfig, Optional[Path]]:
    """The resolved config (file + overrides, or the resumed state's config + overrides) and the resume file."""
    overrides = [item for group in args.overrides for item in group]
    resume = resolve_resume_path(args.resume) if args.resume else None
    if args.config:
        return load_config(args.config, overrides), resume
    if resume is None:
        raise ValueError("--config is required (or --resume with a run folder / training state)")
    data = copy.deepcopy(read_state(resume)["config"])
    return config_from_dict(apply_overrides(data, overrides), f"{resume} (embedded config)"), resume


def output_dir(args: argparse.Namespace, resume: Optional[Path]) -> Path:
    if args.output:
        return Path(args.output)
    if resume is not None:
        return resume.parent
    return Path("runs") / Path(args.config).stem


def check_run_folder(output: Path, resume: Optional[Path], config: Optional[str]) -> None:
    """The output policy of a training run: a run writes into a new or empty folder, or continues its own run
    folder (``--resume DIR`` with the default or the same ``--output``); it never writes into a folder holding
    anything else (a config file, another run's state, hidden files)."""
    continuing = resume is not None and output.resolve() == resume.parent.resolve()
    if continuing:
        return
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; training writes a run folder")
    if output.is_dir() and any(output.iterdir()):
        held = "a training state" if (output / STATE_NAME).exists() else "files"
        hint = f"pass --resume {output} to continue it or " if held == "a training state" and resume is None else ""
        raise ValueError(f"--output {output} already holds {held}; {hint}choose a new or empty folder "
                         "(nothing in it is replaced)")
    for item, what in ((config, "--config"), (resume, "--resume")):
        if item is not None and output.exists() and Path(item).resolve().is_relative_to(output.resolve()):
            raise ValueError(f"{what} {item} lies inside --output {output}; choose another output folder")


def run(args: argparse.Namespace) -> int:
    """Run ``mrfa train`` with parsed arguments; returns the exit code."""
    from mrfa.training.trainer import NonFiniteLossError, Trainer

    cfg, resume = resolve_config(args)
    output = output_dir(args, resume)
    check_run_folder(output, resume, args.config)
    if args.dry_run:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        print(f"# output: {output}\n# resume: {resume if resume else 'no'}")
        return 0
    dist_info = D.init_distributed(args.device)
    created = not output.exists()
    try:
        if dist_info.is_main:
            output.mkdir(parents=True, exist_ok=True)
        try:
            trainer = Trainer(cfg, output=output, dist_info=dist_info, resume=resume)
        except BaseException:
            # an error before training started: leave no run folder behind that this run created
            if created and dist_info.is_main and output.is_dir() and not any(output.iterdir()):
                shutil.rmtree(output, ignore_errors=True)
            raise
        if dist_info.is_main:  # only once the run (or the resume) is accepted
            save_config(cfg, output / "config.yaml", overwrite=resume is not None)
        trainer.fit()
    except NonFiniteLossError as err:
        print(f"mrfa train: stopped: {err}", file=sys.stderr)
        return 3
    finally:
        D.cleanup()
    return 0
