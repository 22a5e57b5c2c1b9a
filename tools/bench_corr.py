"""Benchmark MRFA's correlation path: time and peak memory, forward and forward+backward.

Variants of the whole correlation path of one forward (volume/features -> 6 lookups on the official schedule):
  A    official construction: full volume, then at every iteration pool over the driving grid, copy to
       query-major, pool the source maps, grid_sample lookup (JialeTao/MRFA modules/raft.py)
  A2   volume pooled once per driving factor (the previous mrfa code)
  B    every pyramid built once from pooled features (mrfa default), grid_sample reference lookup
  S    B + the window-stencil op in PyTorch (the custom op's non-CUDA kernel; CPU only)
  C    B + the fused CUDA kernel (GPU with a working extension only)
  T    B + the Triton kernel (GPU with Triton only)
  OTF  on the fly: no volume, correlations of the looked-up windows only (corr_mode: onthefly)
Plus a lookup-only comparison on a prebuilt full-resolution pyramid (reference vs stencil / kernel, with the
achieved bandwidth against a measured device copy on GPU), and optionally a model step (--model).

Examples:
    python tools/benchmark.py corr                                   # CPU, small sizes
    python tools/benchmark.py corr --sizes 256:16 512:4 --out /tmp/corr_bench        # GPU
    python tools/benchmark.py corr --sizes 128:1 --model refiner --model-size 256     # + refiner fwd+bwd
    python tools/benchmark.py corr --sizes --model full --model-size 512 --max-batch  # GPU, largest batch

Memory: GPU = max_memory_allocated over the start; CPU = peak RSS over the start (VmHWM reset through
/proc/self/clear_refs, glibc told to unmap big buffers on free). "saved" = unique storages autograd saved for
backward (saved-tensor hooks).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from mrfa.ops.corr_lookup import (
    corr_lookup_onthefly,
    corr_lookup_reference,
    kernel_unavailable_reason,
    triton_unavailable_reason,
)
from mrfa.ops.corr_lookup.op import corr_lookup_fused
from mrfa.ops.correlation import build_pyramids, corr_volume, correlation_state, pool_driving, source_pyramid
from mrfa.ops.grid import coords_grid

LEVELS, RADIUS, CHANNELS, ITERATIONS = 2, 3, 256, 6


# ----------------------------------------------------------------------------------------------- measuring
class Meter:
    """Peak memory over a starting point (CUDA allocator, or process RSS on CPU) and saved-tensor bytes."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.base, self.saved = device, 0, {}

    def start(self) -> None:
        self.saved = {}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            _malloc_trim()
            self.base = _proc_kib("VmRSS") * 1024
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            except OSError:
                pass

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2 ** 20
        return (_proc_kib("VmHWM") * 1024 - self.base) / 2 ** 20

    def hooks(self):
        def pack(t: torch.Tensor) -> torch.Tensor:
            s = t.untyped_storage()
            self.saved[(s.data_ptr(), s.device)] = s.nbytes()
            return t
        return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)

    def saved_mib(self) -> float:
        return sum(self.saved.values()) / 2 ** 20


def _proc_kib(field: str) -> int:
    try:
        return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    except (OSError, AttributeError):
        return 0


def _malloc_trim() -> None:
    """Make RSS follow live tensors (glibc): fixed 128 KiB mmap threshold, freed heap returned to the OS."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: no dynamic growth, big buffers are unmapped on free
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], list], grads: Optional[Callable[[list], list]], device: torch.device, reps: int,
            reset: Optional[Callable[[], None]] = None) -> dict:
    """Median forward and forward+backward time (ms) and peak memory (MiB) of ``fn`` (returns outputs).

    ``reset`` runs before every repetition (e.g. drop accumulated .grad tensors).
    """
    meter = Meter(device)
    fwd, full, peak_f, peak_b = [], [], 0.0, 0.0
    for rep in range(reps + 1):  # first run = warm-up (and extension build)
        if reset is not None:
            reset()
        meter.start()
        t0 = time.perf_counter()
        with meter.hooks():
            outs = fn()
        _sync(device)
        t1 = time.perf_counter()
        pf = meter.peak_mib()
        if grads is not None:
            torch.autograd.backward(outs, grads(outs))
            _sync(device)
        t2 = time.perf_counter()
        pb = meter.peak_mib()
        saved = meter.saved_mib()
        del outs
        if rep:
            fwd.append((t1 - t0) * 1e3)
            full.append((t2 - t0) * 1e3)
            peak_f, peak_b = max(peak_f, pf), max(peak_b, pb)
    return dict(fwd_ms=statistics.median(fwd), fwd_bwd_ms=statistics.median(full) if grads else None,
                peak_fwd_mib=peak_f, peak_fwd_bwd_mib=peak_b if grads else None, saved_mib=saved)


# ----------------------------------------------------------------------------------------------- path variants
def make_case(size: int, batch: int, device: torch.device, seed: int = 0) -> dict:
    """Structure features at size/4, and the 6 iterations' (factor, coords) with smooth +-8 px flows."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    grid = size // 4
    query = torch.randn(batch, CHANNELS, grid, grid, generator=g).to(device).requires_grad_()
    key = torch.randn(batch, CHANNELS, grid, grid, generator=g).to(device).requires_grad_()
    iters = []
    for i in range(ITERATIONS):
        res = size // 32 * 2 ** i
        n, f = min(res, grid), max(grid // res, 1)
        flow = F.interpolate(torch.randn(batch, 2, 4, 4, generator=g) * 8, size=(n, n), mode="bicubic",
                             align_corners=True).to(device)
        centre = coords_grid(batch, n, n, device=device) * f + flow  # level-0 source pixels, ~5% out of range
        iters.append((f, centre.requires_grad_()))
    return dict(query=query, key=key, iters=iters, device=device)


def _triton_lookup(pyramid: list, coords, radius: int):
    from mrfa.ops.corr_lookup.triton_op import corr_lookup_triton

    return corr_lookup_triton(pyramid, coords, radius)


def with_triton(device: torch.device) -> bool:
    return device.type == "cuda" and triton_unavailable_reason() is None


def path_variants(case: dict, *, with_cuda: bool) -> dict[str, Callable[[], list]]:
    q, k, iters = case["query"], case["key"], case["iters"]
    factors = sorted({f for f, _ in iters})

    def official() -> list:
        volume = corr_volume(q, k)
        outs = []
        for f, c in iters:  # the official re-pools and copies the whole volume at every iteration
            pooled = pool_driving(volume, f) if f > 1 else volume.clone()
            outs.append(corr_lookup_reference(source_pyramid(pooled, LEVELS), c, RADIUS))
        return outs

    def per_factor() -> list:
        volume, cache = corr_volume(q, k), {}
        for f in factors:
            cache[f] = source_pyramid(pool_driving(volume, f), LEVELS)
        return [corr_lookup_reference(cache[f], c, RADIUS) for f, c in iters]

    def once(lookup: Callable) -> Callable[[], list]:
        def run() -> list:
            pyramids = build_pyramids(q, k, factors, LEVELS)
            return [lookup(pyramids[f], c, RADIUS) for f, c in iters]
        return run

    def onthefly() -> list:
        state = correlation_state(q, k, factors, LEVELS, mode="onthefly")
        return [corr_lookup_onthefly(state.queries[f], state.keys, c, RADIUS) for f, c in iters]

    out = {"A official": official, "A2 per-factor": per_factor, "B once+grid_sample": once(corr_lookup_reference)}
    if case["device"].type == "cuda":
        if with_cuda:
            out["C once+cuda kernel"] = once(corr_lookup_fused)
        if with_triton(case["device"]):
            out["T once+triton kernel"] = once(_triton_lookup)
    else:
        out["S once+stencil op"] = once(corr_lookup_fused)
    out["OTF on the fly"] = onthefly
    return out


def path_inputs(case: dict) -> list:
    return [case["query"], case["key"]] + [c for _, c in case["iters"]]


# ----------------------------------------------------------------------------------------------- lookup only
def copy_bandwidth_gbs(device: torch.device) -> Optional[float]:
    """Device-to-device copy bandwidth (read + write), GB/s, median of 10 copies of 1 GiB."""
    if device.type != "cuda":
        return None
    src = torch.empty(2 ** 28, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(11):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * src.numel() * 4 / statistics.median(times[1:]) / 1e9


def lookup_only(case: dict, reps: int, with_cuda: bool) -> dict:
    """Reference vs stencil / fused kernel on the prebuilt f = 1 pyramid (one full-resolution iteration)."""
    device = case["device"]
    with torch.no_grad():
        pyramid = [lv.detach().requires_grad_() for lv in build_pyramids(case["query"], case["key"], [1], LEVELS)[1]]
    coords = case["iters"][-1][1].detach().requires_grad_()
    grads_for = _random_grads(device)
    rows = {"reference (grid_sample)": lambda: [corr_lookup_reference(pyramid, coords, RADIUS)]}
    if device.type == "cuda":
        if with_cuda:
            rows["fused kernel"] = lambda: [corr_lookup_fused(pyramid, coords, RADIUS)]
        if with_triton(device):
            rows["triton kernel"] = lambda: [_triton_lookup(pyramid, coords, RADIUS)]
    else:
        rows["stencil op"] = lambda: [corr_lookup_fused(pyramid, coords, RADIUS)]
    leaves = [*pyramid, coords]
    results = {name: measure(fn, grads_for, device, reps, reset=lambda: _drop_grads(leaves))
               for name, fn in rows.items()}
    b, q = pyramid[0].shape[0], pyramid[0].shape[1] * pyramid[0].shape[2]
    taps = (2 * RADIUS + 1) ** 2
    window = (2 * RADIUS + 2) ** 2 * pyramid[0].element_size()
    floor_fwd = b * q * LEVELS * (window + taps * 4) + b * q * 8  # window reads + output + coords
    dense = sum(lv.numel() * lv.element_size() for lv in pyramid)  # zero-filled level gradients
    floor_bwd = floor_fwd + b * q * LEVELS * window + dense
    results["_floor_bytes"] = dict(fwd=floor_fwd, bwd_incl_zero_fill=floor_bwd)
    return results


def _drop_grads(tensors: list) -> None:
    for t in tensors:
        t.grad = None


def _random_grads(device: torch.device) -> Callable[[list], list]:
    cache: dict = {}

    def make(outs: list) -> list:
        key = tuple(tuple(o.shape) for o in outs)
        if key not in cache:
            gen = torch.Generator(device="cpu").manual_seed(1)
            cache[key] = [torch.randn(o.shape, generator=gen).to(device) for o in outs]
        return cache[key]
    return make


# ----------------------------------------------------------------------------------------------- model step
MODEL_CONFIGS = {"A official": ("onthefly", "torch"), "B volume/torch": ("volume", "torch"),
                 "C volume/cuda": ("volume", "cuda"), "T volume/triton": ("volume", "triton"),
                 "OTF onthefly": ("onthefly", "torch")}


def _model(name: str, size: int, device: torch.device):
    from mrfa.builders import build_model
    from mrfa.config import ModelConfig

    torch.manual_seed(0)
    m = ModelConfig(image_size=size)
    m.refinement.corr_mode, m.refinement.corr_impl = MODEL_CONFIGS[name]  # "A" patches _lookup on top of onthefly
    return build_model(m).to(device)


def model_step(kind: str, size: int, batch: int, device: torch.device, reps: int, with_cuda: bool) -> dict:
    """Refiner-only or full-model training step (L1 to the driving frame) per correlation configuration."""
    from mrfa.nn.refiner import MotionRefiner

    results = {}
    for name in MODEL_CONFIGS:
        if name.startswith("C") and not (device.type == "cuda" and with_cuda):
            continue
        if name.startswith("T") and not with_triton(device):
            continue
        model = _model(name, size, device)
        gen = torch.Generator(device="cpu").manual_seed(0)
        src, drv = (torch.rand(batch, 3, size, size, generator=gen).to(device) for _ in range(2))
        if kind == "full":
            def fn(model=model, src=src, drv=drv) -> list:
                return [(model(src, drv).prediction - drv).abs().mean()]
        else:
            fn = _refiner_fn(model, batch, size, device, gen)
        original = MotionRefiner._lookup
        if name.startswith("A"):
            MotionRefiner._lookup = _official_lookup
        try:
            results[name] = measure(fn, lambda outs: [torch.ones_like(o) for o in outs], device, reps,
                                    reset=lambda model=model: model.zero_grad(set_to_none=True))
        finally:
            MotionRefiner._lookup = original
        del model
    return results


def _refiner_fn(model, batch, size, device, gen) -> Callable[[], list]:
    from mrfa.types import DenseMotion

    g = size // 4
    feats = [torch.randn(batch, c, size // 2 ** (5 - i), size // 2 ** (5 - i), generator=gen).to(device)
             for i, c in enumerate(model.generator.channels)]
    kp_d, kp_s = (torch.rand(batch, 10, 2, generator=gen).to(device) * 2 - 1 for _ in range(2))
    ident = torch.stack(torch.meshgrid(torch.linspace(-1, 1, g), torch.linspace(-1, 1, g), indexing="xy"), -1)
    deform = (ident[None] + 0.05 * torch.randn(batch, g, g, 2, generator=gen)).to(device).requires_grad_()
    dense = DenseMotion(deformation=deform, occlusion=torch.zeros(batch, 1, g, g, device=device),
                      mask=torch.zeros(batch, 11, g, g, device=device))
    img_down = torch.rand(batch, 3, g, g, generator=gen).to(device)
    src = torch.rand(batch, 3, size, size, generator=gen).to(device)

    def fn() -> list:
        out = model.refiner(feats, src, kp_d, dense, kp_source=kp_s, img_down=img_down)
        return [sum(w.mean() for w in out.warped) + sum(f.mean() for f in out.flows)]
    return fn


def _official_lookup(self, volume, pyramids, flow, basic):
    """MotionRefiner._lookup with the official construction (needs the on-the-fly state: raw features)."""
    from mrfa.ops.grid import resize

    g, r, b = self.grid_size, flow.shape[-1], flow.shape[0]
    f, n = max(g // r, 1), min(r, g)
    if "volume" not in pyramids.pyramids:  # the official einsum, once per forward
        pyramids.pyramids["volume"] = corr_volume(pyramids.queries[1], pyramids.keys[0].permute(0, 3, 1, 2))
    vol = pyramids.pyramids["volume"]
    centre = ((resize(flow, g) * (g / r)) if r > g else flow) + coords_grid(b, n, n, device=flow.device)
    pooled = pool_driving(vol, f) if f > 1 else vol.clone()
    corr = corr_lookup_reference(source_pyramid(pooled, self.corr_levels), centre * f, self.corr_radius)
    return corr if r <= g else resize(corr, r)


def max_batch(size: int, device: torch.device, with_cuda: bool, limit: int = 256) -> dict:
    """Largest full-model training-step batch that fits, per configuration (doubling, then bisection)."""
    out = {}
    for name in ("B volume/torch", "C volume/cuda", "OTF onthefly"):
        if name.startswith("C") and not with_cuda:
            continue
        model, lo, hi, b = _model(name, size, device), 0, None, 1
        while b <= limit and b > lo:
            try:
                src, drv = (torch.rand(b, 3, size, size, device=device) for _ in range(2))
                (model(src, drv).prediction - drv).abs().mean().backward()
                _sync(device)
                lo, b = b, (b * 2 if hi is None else (b + hi) // 2)
            except torch.cuda.OutOfMemoryError:
                hi, b = b, (lo + b) // 2
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        out[name] = lo
        del model
    return out


# ----------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:i]")
    parser.add_argument("--sizes", nargs="*", default=None,
                        help="image_size:batch pairs for the path benchmark (GPU default 256:16 512:4, CPU 64:2 128:1)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions after one warm-up (GPU 10, CPU 3)")
    parser.add_argument("--model", choices=("none", "refiner", "full"), default="none", help="also time a model step")
    parser.add_argument("--model-size", type=int, default=256)
    parser.add_argument("--model-batch", type=int, default=1)
    parser.add_argument("--max-batch", action="store_true", help="GPU: largest full-model batch at --model-size")
    parser.add_argument("--threads", type=int, default=None, help="CPU: torch.set_num_threads")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (the official 2021 behaviour)")
    parser.add_argument("--out", type=Path, default=None, help="write results.json here")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes if args.sizes is not None else (["256:16", "512:4"] if gpu else ["64:2", "128:1"])
    reps = args.reps or (10 if gpu else 3)
    reason = kernel_unavailable_reason(device.type, device.index) if gpu else "CPU run"
    with_cuda = reason is None
    name = torch.cuda.get_device_name(device) if gpu else "cpu"
    triton_ok = with_triton(device)
    print(f"device: {name}; torch {torch.__version__}; CUDA kernel: {'yes' if with_cuda else 'no (' + reason + ')'}; "
          f"Triton kernel: {'yes' if triton_ok else 'no'}")
    results: dict = {"device": name, "torch": torch.__version__, "kernel": with_cuda, "triton": triton_ok,
                     "paths": {}, "lookup": {}}
    bandwidth = copy_bandwidth_gbs(device)
    if bandwidth:
        print(f"measured device copy bandwidth: {bandwidth:.0f} GB/s")
        results["copy_gbs"] = bandwidth
    for spec in sizes:
        size, batch = (int(v) for v in spec.split(":"))
        case = make_case(size, batch, device)
        grads_for = _random_grads(device)
        print(f"\n== correlation path, {size} px, batch {batch} (grid {size // 4}, C={CHANNELS}, {ITERATIONS} lookups)")
        print(f"{'variant':24s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'peak fwd MiB':>13s} {'peak f+b MiB':>13s} "
              f"{'saved MiB':>10s}")
        rows = {}
        for vname, fn in path_variants(case, with_cuda=with_cuda).items():
            rows[vname] = r = measure(fn, grads_for, device, reps, reset=lambda c=case: _drop_grads(path_inputs(c)))
            print(f"{vname:24s} {r['fwd_ms']:9.2f} {r['fwd_bwd_ms']:11.2f} {r['peak_fwd_mib']:13.1f} "
                  f"{r['peak_fwd_bwd_mib']:13.1f} {r['saved_mib']:10.1f}")
        results["paths"][spec] = rows
        look = lookup_only(case, reps, with_cuda)
        results["lookup"][spec] = look
        floor = look.pop("_floor_bytes")
        print(f"-- lookup only (prebuilt full-resolution pyramid, L={LEVELS}, r={RADIUS}); essential bytes "
              f"fwd {floor['fwd'] / 1e6:.1f} MB, bwd incl. zero-fill {floor['bwd_incl_zero_fill'] / 1e6:.1f} MB")
        ref = look["reference (grid_sample)"]
        for lname, r in look.items():
            line = (f"{lname:24s} fwd {r['fwd_ms']:8.3f} ms ({ref['fwd_ms'] / r['fwd_ms']:5.2f}x)  fwd+bwd "
                    f"{r['fwd_bwd_ms']:8.3f} ms ({ref['fwd_bwd_ms'] / r['fwd_bwd_ms']:5.2f}x)  "
                    f"peak f+b {r['peak_fwd_bwd_mib']:8.1f} MiB")
            if bandwidth and lname in ("fused kernel", "triton kernel"):
                gbs = floor["fwd"] / (r["fwd_ms"] / 1e3) / 1e9
                gbs_fb = (floor["fwd"] + floor["bwd_incl_zero_fill"]) / (r["fwd_bwd_ms"] / 1e3) / 1e9
                line += (f"  fwd {gbs:.0f} GB/s = {100 * gbs / bandwidth:.0f}% / fwd+bwd {gbs_fb:.0f} GB/s = "
                         f"{100 * gbs_fb / bandwidth:.0f}% of copy bandwidth")
            print(line)
        del case
    if args.model != "none":
        print(f"\n== {args.model} training step, {args.model_size} px, batch {args.model_batch}")
        rows = model_step(args.model, args.model_size, args.model_batch, device, reps, with_cuda)
        results["model"] = {"kind": args.model, "size": args.model_size, "batch": args.model_batch, "rows": rows}
        for mname, r in rows.items():
            print(f"{mname:24s} fwd {r['fwd_ms']:10.1f} ms  fwd+bwd {r['fwd_bwd_ms']:10.1f} ms  peak f+b "
                  f"{r['peak_fwd_bwd_mib']:9.1f} MiB  saved {r['saved_mib']:9.1f} MiB")
    if args.max_batch and gpu:
        results["max_batch"] = mb = max_batch(args.model_size, device, with_cuda)
        print(f"\n== largest full-model batch at {args.model_size} px: {mb}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
