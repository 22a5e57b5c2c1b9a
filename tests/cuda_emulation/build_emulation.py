"""Build the real CUDA kernel source + the real wrapper as a CPU extension (MRFA_CUDA_EMULATION).

``corr_lookup_kernel.cu`` is compiled as C++ through ``kernel_emulated.cpp`` against ``cuda_emulation.h``,
together with ``corr_lookup.cpp``: the launchers, AT_DISPATCH (fp64/fp32/fp16/bf16), radius dispatch and input
checks all run, on CPU tensors, with launches executed as serial loops. Blocks are capped at
``MAX_BLOCKS`` so that the grid-stride loop is exercised. Cached by a hash of every source involved.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

from mrfa.ops.corr_lookup import build as build_mod

HERE = Path(__file__).resolve().parent
SHIM_FILES = ("cuda_emulation.h", "kernel_emulated.cpp")
MAX_BLOCKS = 3  # x 128 threads: more than 384 queries take the grid-stride loop


def emulation_hash() -> str:
    h = hashlib.sha256(build_mod.source_hash().encode())
    for name in SHIM_FILES:
        h.update(name.encode())
        h.update((HERE / name).read_bytes())
    h.update(f"{MAX_BLOCKS}/{torch.__version__}".encode())
    return h.hexdigest()[:16]


def load_emulated_extension(verbose: bool = False) -> tuple[ModuleType, float]:
    """(module, seconds spent loading: the build time on a cold cache)."""
    from torch.utils import cpp_extension

    bin_dir = str(Path(sys.executable).parent)  # the pip 'ninja' of an unactivated virtualenv
    if shutil.which("ninja") is None and bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    tag = emulation_hash()
    root = Path(os.environ.get("MRFA_EXT_DIR", Path.home() / ".cache" / "mrfa_ext")).expanduser()
    directory = root / f"emulation-{tag}"
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    module = cpp_extension.load(
        name=f"mrfa_corr_emulated_{tag}",
        sources=[str(build_mod.CSRC / "corr_lookup.cpp"), str(HERE / "kernel_emulated.cpp")],
        extra_include_paths=[str(build_mod.CSRC), str(HERE)],
        extra_cflags=["-O1", "-DMRFA_CUDA_EMULATION", f"-DMRFA_MAX_BLOCKS={MAX_BLOCKS}"],
        build_directory=str(directory), with_cuda=False, verbose=verbose)
    return module, time.perf_counter() - start
