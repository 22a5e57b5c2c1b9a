"""Forward benchmark with accuracy (``python tools/benchmark.py forward``): every inference path of
:mod:`mrfa.inference.engine` against the fp32 eager reference, in ONE run on one machine.

For each path and batch size a fresh child process builds the model, warms up, times ``--repeats`` forwards
(median), and saves its predictions; the parent prints frames/s, the speed-up over the reference of the same
batch, peak RSS of the child, and the prediction's max |diff|, mean |diff| and PSNR against the reference
(images in [0, 1]).

Weights: ``--fixture vox256-mtia.pt`` (the parity fixtures' recipe weights and their recorded input pair),
``--checkpoint FILE`` (a trained model, e.g. runs/demo/snapshot.pt), or a seeded random init of ``--config``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mrfa.utils.machine import cpu_name

REPO = Path(__file__).resolve().parents[1]
PATHS = {  # name -> engine options (EngineOptions fields)
    "fp32 eager (reference)": {},
    "fp32 + keep memory": {"keep_memory": True},
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16 + channels_last": {"precision": "bf16", "channels_last": True},
    "bf16 + channels_last, fp32 correlation": {"precision": "bf16", "channels_last": True,
                                               "reduced_correlation": False},
    "bf16 + channels_last + keep memory": {"precision": "bf16", "channels_last": True, "keep_memory": True},
    "refine-levels N-1": {"refine_levels": -1},
    "bf16 + channels_last + refine-levels N-1": {"precision": "bf16", "channels_last": True, "refine_levels": -1},
    "bf16 + channels_last + refine-levels N-1 + keep memory": {"precision": "bf16", "channels_last": True,
                                                               "refine_levels": -1, "keep_memory": True},
    "compile": {"compile": True},
    "onnxruntime fp32": {"backend": "onnxruntime"},
    "onnxruntime fp16": {"backend": "onnxruntime", "export_precision": "fp16"},  # meant for GPU providers
    "openvino fp32": {"backend": "openvino", "hint": "f32"},  # the fp32 export run by OpenVINO (.[openvino])
    "openvino bf16": {"backend": "openvino", "hint": "bf16"},  # ... with its bf16 inference-precision hint
    "--speed exact": "exact",  # the presets, resolved for this machine as the commands resolve them
    "--speed fast": "fast",
    "--speed fastest": "fastest",
}


def path_options(path: str, device: str = "cpu") -> dict:
    """The EngineOptions fields of a path (a preset is resolved by ``speed_preset`` for ``device``)."""
    import dataclasses

    import torch

    from mrfa.inference.engine import speed_preset

    spec = PATHS[path]
    if isinstance(spec, str):
        return dataclasses.asdict(speed_preset(spec, torch.device(device))[0])
    return dict(spec)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", default=str(REPO / "configs" / "vox256.yaml"))
    parser.add_argument("--checkpoint", default=None, help="a trained snapshot instead of random weights")
    parser.add_argument("--fixture", default=None, help="a parity fixture (.pt): its recipe weights and inputs")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", nargs="+", default=None, help=f"subset of: {' | '.join(PATHS)}")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    return parser


# ------------------------------------------------------------------------------------------ child side
def _load(args: argparse.Namespace):
    import torch

    import mrfa
    from mrfa.official import from_official
    from mrfa.official import official_to_ours

    if args.fixture:
        fx = torch.load(args.fixture, map_location="cpu", weights_only=True)
        meta = fx["meta"]
        fixdir = Path(args.fixture).parent
        spec = importlib.util.spec_from_file_location("fixture_weights", fixdir / "fixture_weights.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        state = module.make_state_dict(meta["shapes"], meta["recipe_seed"], include_vgg=meta["recipe_include_vgg"])
        cfg = from_official(meta["config"])
        model = mrfa.build_model(cfg)
        ours, _ = official_to_ours(state)
        missing, _ = model.load_state_dict(ours, strict=False)  # the recipe leaves out computed buffers
        params = {k for k, _ in model.named_parameters()}
        if params & set(missing):
            raise SystemExit(f"fixture recipe lacks parameters: {sorted(params & set(missing))[:5]}")
        src = fx["inputs"]["source"].float() / 255.0
        drv = fx["inputs"]["driving"].float() / 255.0
        return model.eval(), src[:1], drv[:1]
    if args.checkpoint:
        model = mrfa.load_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = mrfa.build_model(mrfa.load_config(args.config)).eval()
    size = model.image_size
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2])[None]  # smooth, face-free but structured input
    src = (base + 0.05 * torch.rand(1, 3, size, size, generator=g)).clamp(0, 1)
    drv = (base.roll(3, dims=-1) + 0.05 * torch.rand(1, 3, size, size, generator=g)).clamp(0, 1)
    return model, src, drv


def measure(args: argparse.Namespace, path: str, batch: int, out: Path) -> dict:
    import torch

    from mrfa.inference.engine import EngineOptions, prepare_model
    from mrfa.utils.memory import rss_mib

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, src, drv = _load(args)
    model = model.to(device)
    opts = path_options(path, args.device)
    if opts.get("backend") in ("onnxruntime", "openvino"):  # export once (not timed), then run the graphs
        from mrfa.inference.export import OnnxModel, export_onnx

        folder = export_onnx(model, out.with_suffix(".onnx.d"), precision=opts.pop("export_precision", "fp32"))
        onnx = OnnxModel(folder, runtime=opts["backend"])
        if opts["backend"] == "openvino" and opts["hint"] != "f32":  # the same graphs under another precision hint
            from mrfa.inference.export import openvino_sessions

            onnx.sessions = openvino_sessions(folder, precision_hint=opts["hint"])

        def engine(s, d):
            return onnx.reconstruct_encoded(onnx.encode_source(s[:1]), d)
    else:
        engine = prepare_model(model, EngineOptions(**opts), device)
    src = src.expand(batch, -1, -1, -1).contiguous().to(device)
    drv = drv.expand(batch, -1, -1, -1).contiguous().to(device)
    if opts.get("channels_last"):
        src, drv = src.contiguous(memory_format=torch.channels_last), drv.contiguous(memory_format=torch.channels_last)
    base = rss_mib()
    times = []
    with torch.inference_mode():
        for i in range(args.repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            pred = engine(src, drv).prediction
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
    torch.save(pred.float().cpu().contiguous(), out)
    t = statistics.median(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"path": path, "batch": batch, "seconds_per_batch": t, "frames_per_second": batch / t,
            "peak_rss_mib": peak, "forward_rss_mib": peak - base, "threads": torch.get_num_threads(),
            "options": {k: v for k, v in opts.items()}}


# ------------------------------------------------------------------------------------------ parent side
def _diff(pred, ref) -> dict:

    d = (pred - ref).abs()
    mse = float(((pred.clamp(0, 1) - ref.clamp(0, 1)) ** 2).mean())
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
            "psnr_db": math.inf if mse == 0 else 10 * math.log10(1.0 / mse)}


def run(args: argparse.Namespace) -> int:
    import torch

    from mrfa.inference.engine import EngineOptions, check_engine

    paths = args.paths or list(PATHS)
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        raise SystemExit(f"unknown path(s) {unknown}; choose from {list(PATHS)}")
    if "fp32 eager (reference)" not in paths:
        paths = ["fp32 eager (reference)", *paths]
    weights = (f"fixture {Path(args.fixture).name}" if args.fixture else
               f"checkpoint {args.checkpoint}" if args.checkpoint else f"random init of {args.config}")
    print(f"# forward benchmark: {weights}; device {args.device}"
          f"{' (' + cpu_name() + ')' if args.device == 'cpu' else ''}; torch {torch.__version__}")
    print("| path | batch | frames/s | speed-up | peak RSS MiB | max abs diff | mean abs diff | PSNR dB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch:
            ref_pred, ref_fps = None, None
            for path in paths:
                opts = {k: v for k, v in path_options(path, args.device).items()
                        if k not in ("export_precision", "hint")}
                try:
                    check_engine(EngineOptions(**opts), torch.device(args.device))
                except ValueError as err:
                    print(f"| {path} | {batch} | refused: {err} | | | | | |")
                    continue
                out = Path(tmp) / f"{len(rows)}.pt"
                cmd = [sys.executable, __file__, "_child", json.dumps({k: v for k, v in vars(args).items() if not callable(v)}), path, str(batch), str(out)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"| {path} | {batch} | failed: {proc.stderr.strip().splitlines()[-1][:120]} | | | | | |")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                pred = torch.load(out, weights_only=True)
                if ref_pred is None:
                    ref_pred, ref_fps = pred, r["frames_per_second"]
                r.update(_diff(pred, ref_pred), speedup=r["frames_per_second"] / ref_fps)
                rows.append(r)
                print(f"| {path} | {batch} | {r['frames_per_second']:.2f} | {r['speedup']:.2f}x | "
                      f"{r['peak_rss_mib']:.0f} | {r['max_abs_diff']:.2e} | {r['mean_abs_diff']:.2e} | "
                      f"{r['psnr_db']:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"weights": weights, "cpu": cpu_name(), "rows": rows}, indent=1))
    return 0


def child_main(argv: list[str]) -> int:
    args = argparse.Namespace(**json.loads(argv[0]))
    print(json.dumps(measure(args, argv[1], int(argv[2]), Path(argv[3]))))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(run(add_arguments(argparse.ArgumentParser(description=__doc__)).parse_args()))
