"""The inference engine choice shared by ``mrfa animate``, ``mrfa reconstruct`` and :class:`Animator`.

Not a paper box. fp32 PyTorch eager is the default and the parity reference; every other choice is an
acceleration whose difference from it is measured (``python tools/benchmark.py forward`` prints both):

* ``precision="bf16"`` (CPUs with AVX512-BF16 or AMX, and GPUs): the convolution-heavy blocks listed in
  :data:`BF16_BLOCKS` hold bf16 weights and run on bf16 activations; everything that carries coordinates stays in
  fp32 (keypoint detector and its heatmap softmax, the prior's sparse motions and mask softmax, the correlation
  lookup, flows, warps, the jacobian inverse). Each bf16 block casts its inputs to bf16 and its outputs back to
  fp32, so the blocks around it never see reduced precision.
  The correlation volume's matmul takes bf16 features too (``reduced_correlation``; the volume is stored in
  fp32 and looked up at fp32 coordinates).
* ``precision="fp16"``: the same blocks in fp16, GPUs only.
* ``channels_last``: NHWC activations and weights for the convolutions (same arithmetic, other memory order).
* ``compile``: ``torch.compile`` of the model (first call slow).
* ``refine_levels=N``: refine only the N coarsest levels (paper Table 6; the finer ones warp with the flow they
  receive). None refines every level (official).
* ``keep_memory`` (CPU): keep freed memory in the process (:func:`mrfa.utils.memory.keep_freed_memory`), so the
  large per-frame buffers do not pay page faults on every frame. Same arithmetic, bit-identical outputs;
  process-wide, hence off unless asked (every ``--speed`` preset asks; the plain default stays the reference).

A choice the machine cannot serve is refused with one sentence (:func:`check_engine`), never a silent slowdown.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch
from torch import nn

from mrfa.utils.memory import keep_freed_memory

Backend = Literal["torch", "onnxruntime", "openvino"]
EXPORT_BACKENDS = ("onnxruntime", "openvino")  # they run an mrfa export folder, not a checkpoint
Precision = Literal["fp32", "bf16", "fp16"]

# The blocks that run in reduced precision: convolution stacks whose outputs are features, images or small flow
# residuals, not coordinates. Measured on the vox256 fixture weights (tools/benchmark.py forward, AMD EPYC, batch 1):
# generator + structure/dense-motion hourglasses 1.17x at 78 dB PSNR against fp32; adding the refinement's motion
# encoder, refine head and context projections 1.53x at 72 dB; adding the detector's HRNet gains nothing and drops
# to 39 dB (keypoints move), so the keypoint detector stays fp32.
BF16_BLOCKS: tuple[str, ...] = (
    "generator.down_blocks", "generator.up_blocks", "generator.resblock", "generator.channel_block",
    "refiner.driving.hourglass", "refiner.source.hourglass",
    "dense_motion.hourglass",
    "refiner.motion_encoder", "refiner.refine_head", "refiner.to_context",
)
# Of those, the blocks whose outputs feed only other reduced-precision blocks or elementwise ops that promote to
# fp32 (which compute in fp32 on the same values): they skip the exit cast, with identical results.
KEEP_REDUCED_OUTPUT: tuple[str, ...] = (
    "generator.channel_block", "generator.resblock", "generator.up_blocks",
    "refiner.motion_encoder", "refiner.to_context",
)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class EngineOptions:
    """How to run the model at inference (defaults: the fp32 eager parity reference)."""

    backend: Backend = "torch"
    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False
    refine_levels: Optional[int] = None
    keep_memory: bool = False
    reduced_correlation: bool = True  # with bf16 / fp16: the correlation matmul in that precision too
    fewer_casts: bool = True  # with bf16 / fp16: no exit cast where the next consumer casts back (same values)


def refinement_levels(model: nn.Module) -> int:
    """How many refinement levels ``model`` has (one per generator level: ``num_down_blocks + 1``)."""
    config = getattr(model, "config", None)
    if config is not None:
        return int(config.model.generator.num_down_blocks) + 1
    return len(getattr(model.generator, "channels", ())) or 1


# The user-facing speed presets. Each is resolved per machine to the fastest combination measured to keep its
# accuracy bound against the fp32 reference (tools/benchmark.py forward, the official vox256 model on the parity
# fixture weights, batch 1; 2-core AMD EPYC with AVX512-BF16, 2026-12-03). Every preset keeps freed memory in the
# process (keep_memory: same arithmetic, no page faults on the per-frame buffers).
#   exact    fp32 eager                                    bit-identical to the parity reference
#   fast     bf16 + channels_last              72 dB       (>= 60 dB)   on a CPU without bf16: exact
#   fastest  bf16 + channels_last + levels N-1 43 dB       (>= 40 dB)   on a CPU without bf16: fp32 + N-1
SPEEDS = ("exact", "fast", "fastest")


def speed_preset(speed: str, device: torch.device, *, exported: bool = False) -> tuple[EngineOptions, str]:
    """The engine options of a speed preset on ``device`` and a line saying what was chosen and how accurate it
    was measured to be. ``exported``: the model is an ``mrfa export`` folder, which runs at the precision it was
    exported with whatever the preset: on a CPU with OpenVINO (measured faster than onnxruntime and the torch
    fp32 path, max |diff| 5e-5 against it on an fp32 export), else onnxruntime.

    Raises:
        ValueError: an unknown preset.
    """
    if speed not in SPEEDS:
        raise ValueError(f"unknown --speed {speed!r}; choose {', '.join(SPEEDS)}")
    if exported:
        backend = "openvino" if device.type == "cpu" and export_runtime_status("openvino") is None else "onnxruntime"
        return (EngineOptions(backend=backend),
                f"{speed}: the exported graphs with {backend}, at the precision they were exported with")
    keep = device.type == "cpu"
    if speed == "exact":
        return EngineOptions(keep_memory=keep), "exact: fp32, bit-identical to the parity reference"
    reduced = "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp16" if device.type == "cuda" else None
    if speed == "fast":
        if reduced is None:
            return (EngineOptions(keep_memory=keep),
                    "fast: fp32 (this CPU has no native bf16, which would be slower than fp32)")
        return (EngineOptions(precision=reduced, channels_last=True, keep_memory=keep),
                f"fast: {reduced} + channels_last (measured 72 dB PSNR against fp32 with bf16)")
    if reduced is None:
        return (EngineOptions(refine_levels=-1, keep_memory=keep),
                "fastest: fp32, finest level not refined (measured 43 dB PSNR against fp32; this CPU has no bf16)")
    return (EngineOptions(precision=reduced, channels_last=True, refine_levels=-1, keep_memory=keep),
            f"fastest: {reduced} + channels_last, finest level not refined (measured 43 dB PSNR against fp32)")


def export_runtime_status(backend: str) -> Optional[str]:
    """None when the runtime of an export backend can be imported, else one sentence saying what to install."""
    import importlib.util

    if backend == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
        return "the onnxruntime backend needs the optional packages onnx and onnxruntime (pip install '.[onnx]')"
    if backend == "openvino" and importlib.util.find_spec("openvino") is None:
        return "the openvino backend needs the optional package openvino (pip install '.[openvino]')"
    return None


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), so that bf16 is not emulated (slow)."""
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            flags = _cpu_flags()
            return not flags or bool(flags & {"avx512_bf16", "amx_bf16"})
    except (AttributeError, RuntimeError):
        pass
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def check_engine(options: EngineOptions, device: torch.device) -> None:
    """Refuse, with one sentence, a choice this machine cannot serve.

    Raises:
        ValueError: fp16 on a CPU, bf16 on a CPU without AVX512-BF16 / AMX, an unknown backend or precision, a
            non-positive ``refine_levels``, options of the torch backend given to an export backend, a missing
            runtime, openvino on a GPU.
    """
    if options.backend not in ("torch", *EXPORT_BACKENDS):
        raise ValueError(f"unknown backend {options.backend!r}; choose torch, onnxruntime or openvino")
    if options.precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {options.precision!r}; choose fp32, bf16 or fp16")
    if options.refine_levels is not None and options.refine_levels == 0:
        raise ValueError("--refine-levels must be >= 1 (a count of the coarsest levels) or negative (-1: all "
                         "but the finest level), not 0")
    if options.backend in EXPORT_BACKENDS:
        runtime_missing = export_runtime_status(options.backend)
        if runtime_missing is not None:
            raise ValueError(runtime_missing)
        if options.backend == "openvino" and device.type != "cpu":
            raise ValueError("--backend openvino runs on the CPU (use --device cpu, or the torch / onnxruntime "
                             "backend on a GPU)")
        torch_only = [name for name, on in (("--precision bf16/fp16", options.precision != "fp32"),
                                            ("--channels-last", options.channels_last), ("--compile", options.compile),
                                            ("--refine-levels", options.refine_levels is not None)) if on]
        if torch_only:
            raise ValueError(f"{', '.join(torch_only)} apply to the torch backend only; the {options.backend} backend "
                             "runs the exported graphs at the precision they were exported with (mrfa export "
                             "--precision)")
        return
    if device.type == "cpu":
        if options.precision == "fp16":
            raise ValueError("--precision fp16 needs a GPU (CPUs have no fast fp16 convolutions); use bf16 or fp32")
        if options.precision == "bf16" and not cpu_supports_bf16():
            raise ValueError("--precision bf16 needs a CPU with AVX512-BF16 or AMX (this one would emulate it, "
                             "slower than fp32); use --precision fp32")


class _ReducedPrecision:
    """Forward hooks that run one block in ``dtype``: inputs cast on entry, outputs cast back to fp32 on exit."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def before(self, module: nn.Module, args: tuple) -> tuple:
        return tuple(_cast(a, self.dtype) for a in args)

    def after(self, module: nn.Module, args: tuple, output: Any) -> Any:
        return _cast(output, torch.float32)


def _cast(x: Any, dtype: torch.dtype) -> Any:
    if torch.is_tensor(x) and x.is_floating_point():
        return x.to(dtype)
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return type(x)(_cast(v, dtype) for v in x)
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # NamedTuple
        return type(x)(*(_cast(v, dtype) for v in x))
    return x


def prepare_model(model: nn.Module, options: EngineOptions, device: torch.device) -> nn.Module:
    """Apply ``options`` to ``model`` (in place; returns the module to call, compiled when asked).

    The model must already be on ``device`` and in eval mode.
    """
    check_engine(options, device)
    if options.keep_memory and device.type == "cpu":
        keep_freed_memory()
    levels = refinement_levels(model)
    refine = options.refine_levels
    model.refiner.refine_levels = refine if refine is None or refine > 0 else max(1, levels + refine)
    if options.precision in _DTYPES:
        apply_reduced_precision(model, options.precision, correlation=options.reduced_correlation,
                                fewer_casts=options.fewer_casts)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    if options.compile:  # the methods the inference paths call (a compiled forward alone would miss encode/decode)
        warnings.warn("--compile: the first frames compile the model, which takes a minute or more on a CPU; the "
                      "frames after that are faster", RuntimeWarning, stacklevel=2)
        for owner, name in ((model.kp_detector, "forward"), (model.refiner, "forward"),
                            (model.generator, "encode"), (model.generator, "decode")):
            setattr(owner, name, torch.compile(getattr(owner, name)))
        if model.dense_motion is not None:
            model.dense_motion.forward = torch.compile(model.dense_motion.forward)
    return model


def apply_reduced_precision(model: nn.Module, precision: str, *, correlation: bool = False,
                            fewer_casts: bool = False) -> nn.Module:
    """Put the :data:`BF16_BLOCKS` of ``model`` in bf16 / fp16 (in place): their weights, and hooks that cast each
    block's inputs to that dtype and its outputs back to fp32 (with ``fewer_casts``, not the outputs of
    :data:`KEEP_REDUCED_OUTPUT`: same values, fewer copies). With
    ``correlation`` the correlation volume's matmul takes reduced-precision features too (its volume stays fp32).
    Used by :func:`prepare_model` and the fp16 export."""
    dtype = _DTYPES[precision]
    if correlation:
        model.refiner.corr_dtype = dtype
    hooks = _ReducedPrecision(dtype)
    for name in BF16_BLOCKS:
        block = _submodule(model, name)
        if block is None:
            continue
        block.to(dtype)
        for part in (block if isinstance(block, nn.ModuleList) else [block]):  # a ModuleList is never called
            part.register_forward_pre_hook(hooks.before)
            if not (fewer_casts and name in KEEP_REDUCED_OUTPUT):
                part.register_forward_hook(hooks.after)
    return model


def _submodule(model: nn.Module, name: str) -> Optional[nn.Module]:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None
