"""ONNX export (``mrfa export``) and the onnxruntime backend that runs the exported graphs.

Not a paper box: deployment. A checkpoint becomes a folder of three standard-ONNX graphs plus a manifest:

* ``encoder.onnx``: source image ``[1, 3, S, S]`` -> everything per video (source keypoints, generator features,
  source structure, the prior's blurred source);
* ``keypoints.onnx``: frames ``[B, 3, S, S]`` -> detector keypoints (the reference frame's, once per video);
* ``renderer.onnx``: the encoding + driving frames ``[B, 3, S, S]`` (dynamic batch) + reference keypoints +
  ``scale`` (adapt-scale factor, 1 without) + ``relative`` (1: relative motion, 0: absolute) [+ ``background``
  (1: the background motion of reconstruction, 0: none, as the official demo)] -> prediction ``[B, 3, S, S]`` and
  the driving keypoints.
* ``manifest.json``: image size, every input / output with its shape, precision, the mrfa version and the
  checkpoint's SHA-256.

The graphs use GridSample for the warps and the correlation lookup (the reference implementation is traced) and a
closed-form 2x2 inverse for the jacobians. :class:`OnnxModel` runs them with onnxruntime (CPU execution provider;
CUDA when present) behind the methods :class:`mrfa.inference.animate.Animator` calls, so ``--backend onnxruntime``
works for ``mrfa animate`` and ``mrfa reconstruct``; torch is used only to hold arrays.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from mrfa.inference.engine import BF16_BLOCKS, EXPORT_BACKENDS, apply_reduced_precision, export_runtime_status
from mrfa.media.writer import atomic_path, check_output, write_json
from mrfa.nn.mrfa import MRFA, SourceEncoding, expand_encoding
from mrfa.nn.refiner import SourceStructure
from mrfa.nn.relative_motion import normalize_kp
from mrfa.types import Keypoints
from mrfa.version import __version__

PathLike = Union[str, Path]
GRAPHS = ("encoder.onnx", "keypoints.onnx", "renderer.onnx")
MANIFEST = "manifest.json"
LAYOUT = (*GRAPHS, MANIFEST)
FORMAT = "mrfa-onnx/1"
OPSET = 18


# ------------------------------------------------------------------------------------------ graph modules
def _encoding_names(model: MRFA) -> list[str]:
    names = ["source", "kp_value"] + (["kp_jacobian"] if _has_jacobian(model) else [])
    names += [f"feature_{i}" for i in range(len(model.generator.channels))]
    if not model.refiner.prior_only:
        names += ["structure_key", "structure_in", "structure_hourglass"]
    if model.dense_motion is not None:
        names += ["prior_input"]
    return names


def _has_jacobian(model: MRFA) -> bool:
    with torch.no_grad():
        kp = model.kp_detector(torch.zeros(1, model.num_channels, model.image_size, model.image_size))
    return kp.jacobian is not None


def _flatten(enc: SourceEncoding) -> list[Tensor]:
    out = [enc.source, enc.kp.value] + ([enc.kp.jacobian] if enc.kp.jacobian is not None else [])
    out += list(enc.features)
    if enc.structure is not None:
        out += list(enc.structure)
    if enc.prior_input is not None:
        out.append(enc.prior_input)
    return out


def _unflatten(tensors: list[Tensor], names: list[str]) -> SourceEncoding:
    t = dict(zip(names, tensors))
    kp = Keypoints(t["kp_value"], t.get("kp_jacobian"))
    features = [t[n] for n in names if n.startswith("feature_")]
    structure = SourceStructure(t["structure_key"], t["structure_in"], t["structure_hourglass"]) \
        if "structure_key" in t else None
    return SourceEncoding(t["source"], kp, features, structure, t.get("prior_input"))


class _Encoder(nn.Module):
    def __init__(self, model: MRFA) -> None:
        super().__init__()
        self.model = model

    def forward(self, source: Tensor) -> tuple[Tensor, ...]:
        return tuple(_flatten(self.model.encode_source(source)))


class _Keypoints(nn.Module):
    def __init__(self, model: MRFA) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor) -> tuple[Tensor, ...]:
        kp = self.model.kp_detector(frames)
        return (kp.value,) if kp.jacobian is None else (kp.value, kp.jacobian)


class _Renderer(nn.Module):
    """Reenactment and reconstruction in one graph: ``relative`` and ``background`` blend the paths arithmetically
    (exactly one of them is 1), so the graph has no data-dependent control flow."""

    def __init__(self, model: MRFA, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        n = len(self.names)
        enc = _unflatten(list(inputs[:n]), self.names)
        driving, kp_ref_value = inputs[n], inputs[n + 1]
        kp_d = self.model.kp_detector(driving)
        jac = kp_d.jacobian is not None  # a Python bool at trace time
        k = n + 2
        kp_ref_jac = inputs[k] if jac else None
        k += int(jac)
        scale, relative = inputs[k], inputs[k + 1]
        background = inputs[k + 2] if self.model.bg_predictor is not None else None
        b = driving.shape[0]
        enc = expand_encoding(enc, b)
        kp_s = enc.kp
        kp_ref = Keypoints(kp_ref_value.expand(b, -1, -1),
                           None if kp_ref_jac is None else kp_ref_jac.expand(b, -1, -1, -1))
        rel = normalize_kp(kp_s, kp_d, kp_ref, relative=True, adapt_scale=True, scale=scale.view(1, 1, 1),
                           relative_jacobian=jac)
        value = kp_d.value + relative * (rel.value - kp_d.value)
        jacobian = None if not jac else kp_d.jacobian + relative * (rel.jacobian - kp_d.jacobian)
        bg_param = None
        if background is not None:
            eye = torch.eye(3, dtype=driving.dtype).expand(b, 3, 3)
            bg_param = eye + background * (self.model.bg_predictor(enc.source, driving) - eye)
        out = self.model.generate(enc, Keypoints(value, jacobian), bg_param=bg_param)
        return out.prediction, value


# ------------------------------------------------------------------------------------------ export
def sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _io(session_side: list[Any]) -> list[dict[str, Any]]:
    return [{"name": x.name, "shape": [d if isinstance(d, int) else str(d) for d in x.shape], "type": x.type}
            for x in session_side]


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence what the exporter says about itself on success: torchvision operators it skips (torchvision is not
    a dependency) and torch's own deprecation notices. Real errors still raise."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*treespec.*")
            yield
    finally:
        registration.setLevel(level)


def export_onnx(model: MRFA, output: PathLike, *, checkpoint: Optional[PathLike] = None,
                overwrite: bool = False, precision: str = "fp32") -> Path:
    """Write the three graphs and the manifest into the folder ``output`` (atomically: a complete folder or none).

    Raises:
        ValueError: an unsupported precision, or an output the output policy refuses.
        RuntimeError: the exporter failed (its first line).
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"unknown export precision {precision!r}; choose fp32 or fp16")
    missing = export_runtime_status("onnxruntime")
    if missing is not None:
        raise ValueError(missing)
    import onnxruntime as ort

    output = check_output(output, inputs=[checkpoint], overwrite=overwrite, layout=LAYOUT)
    model = model.eval()
    if precision == "fp16":  # the torch engine's reduced-precision blocks, in fp16; inputs / outputs stay fp32
        model = apply_reduced_precision(copy.deepcopy(model), "fp16")
    size, c = model.image_size, model.num_channels
    names = _encoding_names(model)
    jac = "kp_jacobian" in names
    g = torch.Generator().manual_seed(0)
    source = torch.rand(1, c, size, size, generator=g)
    driving = torch.rand(2, c, size, size, generator=g)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        enc = model.encode_source(source)
        kp = model.kp_detector(driving[:1])
    flat = _flatten(enc)
    extra = [kp.value] + ([kp.jacobian] if jac else []) + [torch.ones(1), torch.ones(1)]
    extra_names = ["kp_ref_value"] + (["kp_ref_jacobian"] if jac else []) + ["scale", "relative"]
    if model.bg_predictor is not None:
        extra.append(torch.zeros(1))
        extra_names.append("background")
    renderer_inputs = (*flat, driving, *extra)
    renderer_names = [*names, "driving", *extra_names]
    kp_names = ["kp_value"] + (["kp_jacobian"] if jac else [])
    specs = {
        "encoder.onnx": (_Encoder(model), (source,), ["source_image"], names, None),
        "keypoints.onnx": (_Keypoints(model), (driving,), ["frames"], kp_names, ({0: batch},)),
        "renderer.onnx": (_Renderer(model, names), renderer_inputs, renderer_names, ["prediction", "kp_result"],
                          (tuple({0: batch} if n == "driving" else None for n in renderer_names),)),  # *inputs
    }
    manifest: dict[str, Any] = {
        "format": FORMAT, "mrfa_version": __version__, "precision": precision, "opset": OPSET,
        "image_size": size, "num_channels": c, "prior": getattr(getattr(model, "config", None), "model", None)
        and model.config.model.prior, "has_jacobian": jac, "background": model.bg_predictor is not None,
        "prior_only": model.refiner.prior_only, "encoding": names,
        "reduced_precision_blocks": list(BF16_BLOCKS) if precision == "fp16" else [],
        "checkpoint_sha256": sha256(checkpoint) if checkpoint is not None else None,
        "config": dataclasses.asdict(model.config) if getattr(model, "config", None) is not None else None,
        "graphs": {},
    }
    with atomic_path(output, fsync=False, overwrite=overwrite, layout=LAYOUT) as tmp, _quiet_exporter():
        tmp.mkdir(parents=True)
        for file, (module, args, in_names, out_names, dynamic) in specs.items():
            try:
                torch.onnx.export(module.eval(), args, str(tmp / file), dynamo=True, opset_version=OPSET,
                                  input_names=in_names, output_names=out_names, dynamic_shapes=dynamic,
                                  verbose=False, optimize=True, external_data=False)
            except Exception as err:  # the exporter raises many types; one line for the user
                lines = [ln for ln in str(err).splitlines() if ln.strip()]
                if os.environ.get("MRFA_DEBUG_EXPORT"):
                    raise
                raise RuntimeError(f"ONNX export of {file} failed: {lines[0] if lines else type(err).__name__}") \
                    from None
            sess = ort.InferenceSession(str(tmp / file), providers=["CPUExecutionProvider"])
            manifest["graphs"][file] = {"inputs": _io(sess.get_inputs()), "outputs": _io(sess.get_outputs()),
                                        "sha256": sha256(tmp / file)}
        write_json(tmp / MANIFEST, manifest, indent=1)
    return output


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and check an export's ``manifest.json`` (one sentence naming the file for any damage).

    Raises:
        ValueError: unreadable or truncated JSON, another format, or a missing key.
    """
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged (not valid JSON: {str(err)[:80]}); export again with mrfa export") \
            from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path}: unsupported export format {str(got)[:60]!r} (expected {FORMAT})")
    missing = [k for k in ("image_size", "num_channels", "encoding", "background", "graphs") if k not in manifest]
    missing += [f"graphs.{g}" for g in GRAPHS if g not in manifest.get("graphs", {})]
    if missing:
        raise ValueError(f"{path} is damaged: it lacks {', '.join(missing[:3])}; export again with mrfa export")
    shape = next((i.get("shape") for i in manifest["graphs"]["encoder.onnx"].get("inputs", [])), None)
    if isinstance(shape, list) and shape and shape[-1] != manifest["image_size"]:
        raise ValueError(f"{path} is damaged: image_size {manifest['image_size']} does not match the encoder graph's "
                         f"{shape[-1]} px; export again with mrfa export")
    return manifest


# ------------------------------------------------------------------------------------------ runtime
class _Output(NamedTuple):
    prediction: Tensor
    kp_driving: Keypoints


class OnnxEncoding(NamedTuple):
    """A source encoding held as the encoder graph's outputs (numpy), with the source keypoints as tensors."""

    source: Tensor
    kp: Keypoints
    arrays: list[np.ndarray]


def _load_error(folder: Path, runtime: str, err: Exception) -> ValueError:
    """One sentence for a runtime's failure to load the export: its first non-empty line."""
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    return ValueError(f"{folder}: {runtime} could not load the export ({lines[0][:160] if lines else 'error'})")


def _onnxruntime_sessions(folder: Path, device: Union[str, torch.device]) -> dict[str, Any]:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("--device cuda with --backend onnxruntime needs onnxruntime-gpu (the installed "
                             "onnxruntime has no CUDA execution provider)")
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
    try:
        return {g: ort.InferenceSession(str(folder / g), options, providers=providers) for g in GRAPHS}
    except Exception as err:  # onnxruntime raises its own types; one sentence for the user
        raise _load_error(folder, "onnxruntime", err) from None


class _OpenVinoGraph:
    """One graph compiled by OpenVINO, called like an onnxruntime session (``run(None, feeds)`` -> list)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def run(self, _names: Any, feeds: dict[str, Any]) -> list[np.ndarray]:
        result = self.compiled(feeds)
        return [result[out] for out in self.compiled.outputs]


def openvino_sessions(folder: Path, device: Union[str, torch.device] = "cpu", *,
                      precision_hint: str = "f32") -> dict[str, Any]:
    """The export's graphs compiled by OpenVINO's CPU plugin, each called like an onnxruntime session.

    ``precision_hint`` is OpenVINO's INFERENCE_PRECISION_HINT: ``f32`` keeps the export's fp32 arithmetic (on CPUs
    with bf16 OpenVINO's default lowers the whole graph, keypoints included, to bf16); ``bf16`` is for benchmarks.
    """
    import openvino as ov

    if not str(device).startswith("cpu"):
        raise ValueError("--backend openvino runs on the CPU (use --device cpu)")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision_hint, "PERFORMANCE_HINT": "LATENCY"}
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or torch.get_num_threads()
    config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    try:
        return {g: _OpenVinoGraph(core.compile_model(str(folder / g), "CPU", config)) for g in GRAPHS}
    except Exception as err:  # OpenVINO raises its own types; one sentence for the user
        raise _load_error(folder, "OpenVINO", err) from None


class OnnxModel:
    """The exported graphs behind the methods :class:`~mrfa.inference.animate.Animator` calls.

    Args:
        folder: an ``mrfa export`` folder.
        device: ``cpu`` or ``cuda`` (the CUDA execution provider, when onnxruntime has it).
        runtime: ``onnxruntime`` or ``openvino`` (OpenVINO's CPU plugin, told to infer in fp32: on CPUs with bf16
            it would otherwise lower the whole graph to bf16, keypoints included).
    """

    def __init__(self, folder: PathLike, device: Union[str, torch.device] = "cpu",
                 runtime: str = "onnxruntime") -> None:
        if runtime not in EXPORT_BACKENDS:
            raise ValueError(f"unknown runtime {runtime!r}; choose onnxruntime or openvino")
        status = export_runtime_status(runtime)
        if status is not None:
            raise ValueError(status)
        folder = Path(folder)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{folder} is not an mrfa ONNX export (no {MANIFEST}); create one with "
                                    "mrfa export --checkpoint C --output DIR")
        self.manifest = read_manifest(manifest_path)
        for graph in GRAPHS:  # every graph is present, and the one this export wrote (its SHA-256)
            path = folder / graph
            if not path.is_file():
                raise ValueError(f"{folder} is a damaged export: {graph} is missing (export again with mrfa export)")
            expected = self.manifest["graphs"][graph].get("sha256")
            if expected != sha256(path):
                raise ValueError(f"{folder} is a damaged export: {graph} does not match the SHA-256 in {MANIFEST} "
                                 "(export again with mrfa export)")
        self.runtime = runtime
        if runtime == "openvino":
            self.sessions = openvino_sessions(folder, device)
        else:
            self.sessions = _onnxruntime_sessions(folder, device)
        self.image_size = int(self.manifest["image_size"])
        self.num_channels = int(self.manifest["num_channels"])
        self.names: list[str] = self.manifest["encoding"]
        self.refiner = dataclasses.make_dataclass("Refiner", [("refine_levels", Optional[int], None)])()
        self.bg_predictor = object() if self.manifest["background"] else None

    # the parts of nn.Module the Animator uses
    def to(self, *args: Any, **kwargs: Any) -> "OnnxModel":
        return self

    def eval(self) -> "OnnxModel":
        return self

    def _run(self, graph: str, feeds: dict[str, Any]) -> list[np.ndarray]:
        feeds = {k: (v.detach().cpu().float().contiguous().numpy() if torch.is_tensor(v) else v)
                 for k, v in feeds.items()}
        return self.sessions[graph].run(None, feeds)

    def encode_source(self, source: Tensor) -> OnnxEncoding:
        arrays = self._run("encoder.onnx", {"source_image": source})
        t = dict(zip(self.names, arrays))
        kp = Keypoints(torch.from_numpy(t["kp_value"]),
                       torch.from_numpy(t["kp_jacobian"]) if "kp_jacobian" in t else None)
        return OnnxEncoding(torch.from_numpy(t["source"]), kp, arrays)

    def kp_detector(self, frames: Tensor) -> Keypoints:
        out = self._run("keypoints.onnx", {"frames": frames})
        return Keypoints(torch.from_numpy(out[0]), torch.from_numpy(out[1]) if len(out) > 1 else None)

    def _render(self, enc: OnnxEncoding, driving: Tensor, kp_ref: Keypoints, scale: float, relative: bool,
                background: bool) -> _Output:
        feeds: dict[str, Any] = dict(zip(self.names, enc.arrays))
        feeds.update(driving=driving, kp_ref_value=kp_ref.value[:1])
        if self.manifest["has_jacobian"]:
            feeds["kp_ref_jacobian"] = kp_ref.jacobian[:1]
        feeds.update(scale=np.array([scale], np.float32), relative=np.array([float(relative)], np.float32))
        if self.manifest["background"]:
            feeds["background"] = np.array([float(background)], np.float32)
        pred, kp_d = self._run("renderer.onnx", feeds)
        return _Output(torch.from_numpy(pred), Keypoints(torch.from_numpy(kp_d), None))

    def animate(self, source: Tensor, driving: Tensor, driving_initial: Tensor, *, relative: bool = True,
                adapt_scale: bool = False, source_encoding: OnnxEncoding, kp_driving_initial: Keypoints,
                scale: Optional[Tensor] = None, **_: Any) -> _Output:
        s = float(scale.reshape(-1)[0]) if adapt_scale and scale is not None else 1.0
        return self._render(source_encoding, driving, kp_driving_initial, s, relative, background=False)

    def reconstruct_encoded(self, enc: OnnxEncoding, driving: Tensor) -> _Output:
        kp = self.kp_detector(driving[:1])  # unused with relative=0; any keypoints of the right shape
        return self._render(enc, driving, kp, 1.0, relative=False, background=True)
