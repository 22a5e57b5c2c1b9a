"""Build / load the CUDA extension of the fused correlation lookup (packaging).

Compiled on first CUDA use with ``torch.utils.cpp_extension.load`` into a cache directory keyed by the
PyTorch / CUDA versions, the GPU architecture and a hash of the sources
(``$MRFA_EXT_DIR`` or ``~/.cache/mrfa_ext``; ``MRFA_EXT_VERBOSE=1`` prints the compiler commands), or imported from an ahead-of-time build
(``mrfa.ops.corr_lookup._C``) when one is installed. Nothing is ever compiled for CPU tensors or on a
PyTorch build without CUDA: those cases are refused before the toolchain is touched.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import os
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ("corr_lookup.cpp", "corr_lookup_kernel.cu")
HEADERS = ("corr_lookup_core.h", "corr_lookup_launch.h")
AOT_MODULE = "mrfa.ops.corr_lookup._C"


class ExtensionUnavailable(RuntimeError):
    """The CUDA extension cannot be used here; the message says why (with the build log tail)."""


def source_hash() -> str:
    """First 16 hex digits of the SHA-256 over the names and contents of every kernel source and header."""
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update(name.encode())
        h.update((CSRC / name).read_bytes())
    return h.hexdigest()[:16]


def build_directory(device: torch.device) -> Path:
    """``$MRFA_EXT_DIR`` (default ``~/.cache/mrfa_ext``) / ``torch<ver>-cu<ver>-sm<cap>-<source hash>``."""
    major, minor = torch.cuda.get_device_capability(device)
    root = Path(os.environ.get("MRFA_EXT_DIR", Path.home() / ".cache" / "mrfa_ext")).expanduser()
    tag = f"torch{torch.__version__.split('+')[0]}-cu{torch.version.cuda}-sm{major}{minor}-{source_hash()}"
    return root / tag


def unavailable_reason(device: torch.device) -> str | None:
    """Why the extension cannot be built for ``device`` without touching any toolchain, or None."""
    if device.type != "cuda":
        return f"tensors are on {device.type}, the extension is CUDA-only"
    if torch.version.cuda is None:
        return f"this PyTorch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    return None


def load_extension(device: torch.device) -> ModuleType:
    """The compiled extension for ``device`` (built on first call, cached per process).

    Raises:
        ExtensionUnavailable: CPU tensors, CPU-only PyTorch, or a failed build (message has the log tail).
    """
    reason = unavailable_reason(device)
    if reason is not None:
        raise ExtensionUnavailable(f"mrfa corr_lookup CUDA extension unavailable: {reason}")
    index = device.index if device.index is not None else torch.cuda.current_device()
    module, error = _load_cached(index)
    if module is None:
        raise ExtensionUnavailable(error)
    return module


@functools.lru_cache(maxsize=None)
def _load_cached(device_index: int) -> tuple[ModuleType | None, str]:
    """(module, "") or (None, reason); one attempt per process and device."""
    try:
        return importlib.import_module(AOT_MODULE), ""
    except ImportError:
        pass
    from torch.utils import cpp_extension

    device = torch.device("cuda", device_index)
    if cpp_extension.CUDA_HOME is None:
        return None, ("mrfa corr_lookup CUDA extension unavailable: nvcc not found (set CUDA_HOME to a CUDA "
                      f"toolkit matching torch.version.cuda = {torch.version.cuda})")
    directory = build_directory(device)
    directory.mkdir(parents=True, exist_ok=True)
    major, minor = torch.cuda.get_device_capability(device)
    saved_arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"  # build for the GPU actually present
    try:
        module = cpp_extension.load(
            name=f"mrfa_corr_lookup_{source_hash()}", sources=[str(CSRC / s) for s in SOURCES],
            extra_include_paths=[str(CSRC)], build_directory=str(directory),
            extra_cflags=["-O3"], extra_cuda_cflags=["-O3", "-lineinfo"], with_cuda=True,
            verbose=os.environ.get("MRFA_EXT_VERBOSE") == "1")
    except (RuntimeError, OSError, ImportError) as exc:  # compiler / linker / loader failures
        tail = "\n".join(str(exc).splitlines()[-40:])
        return None, (f"mrfa corr_lookup CUDA extension failed to build in {directory} (delete a stale 'lock' "
                      f"file there if a previous build was killed):\n{tail}")
    finally:
        if saved_arch is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = saved_arch
    return module, ""
