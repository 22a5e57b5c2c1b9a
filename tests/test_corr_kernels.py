"""The lookup kernels proven without a GPU, against the exact stencil reference (tests/corr_kernel_cases.py).

* CUDA under emulation: the real ``corr_lookup_kernel.cu`` and the real wrapper ``corr_lookup.cpp`` compiled as
  C++ with the shim in tests/cuda_emulation/ (launches run as serial loops over blocks and threads, threads in
  reverse order, blocks capped so the grid-stride loop runs). Sweeps fp64/fp32/fp16/bf16, radius 0..4,
  1..4 levels, strided inputs, out-of-range / non-finite coordinates, batch > 1, forward and backward.
* Triton: the Triton kernels, in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set by conftest.py when
  there is no GPU) or on the GPU when there is one.
* Dispatch: ``impl`` auto / cuda / triton / torch, and ``auto`` on CPU never compiling or importing Triton.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from corr_kernel_cases import DTYPES, check_kernel, make_case

from mrfa.ops import corr_lookup as dispatch
from mrfa.ops.corr_lookup import corr_lookup, corr_lookup_reference
from mrfa.ops.corr_lookup.stencil import lookup_forward

ROOT = Path(__file__).resolve().parents[1]
HAS_GPU = torch.cuda.is_available()


# --------------------------------------------------------------------------------------- CUDA under emulation
@pytest.fixture(scope="module")
def emulated():
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        pytest.skip("no host C++ compiler to build the CUDA kernel under emulation")
    from cuda_emulation.build_emulation import load_emulated_extension

    module, seconds = load_emulated_extension()
    print(f"\nemulated CUDA extension loaded in {seconds:.1f} s (a cold cache includes the build)")
    return module


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4])
def test_emulated_cuda_kernel_equals_stencil(emulated, dtype, radius):
    from cuda_emulation.build_emulation import MAX_BLOCKS

    for num_levels in (1, 2, 3, 4):
        for strided in (False, True):
            case = {"strided": strided}
            assert 2 * 12 * 17 > MAX_BLOCKS * 128  # the default case takes the grid-stride loop
            check_kernel(emulated.forward, emulated.backward, dtype, radius, num_levels, **case)
    check_kernel(emulated.forward, emulated.backward, dtype, radius, 2, b=3, h=3, w=5, height=6, width=4)


def test_emulated_wrapper_rejects_bad_inputs(emulated):
    levels, coords = make_case(torch.float32, 3, 2, b=1, h=3, w=4)
    c32 = coords.float()
    cases = [
        ((levels, c32, 5), "radius must be in 0..4"),
        ((levels * 3, c32, 3), "expected 1 to 4 pyramid levels"),
        ((levels, coords, 3), "coords must be Float for Float levels"),
        (([levels[0], levels[1].double()], c32, 3), "level 1 has dtype Double"),
        ((levels, c32[:, :, :2], 3), "coords must be \\[B, 2, h, w\\] with h\\*w = Q = 12"),
        (([lv[..., :0] for lv in levels], c32, 3), "level 0 has an empty map"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            emulated.forward(*args)
    grad = torch.zeros(1, 10, 3, 4)
    with pytest.raises(RuntimeError, match="grad_out must be \\[B, 98, h, w\\]"):
        emulated.backward(grad, levels, c32, 3)


def test_emulated_empty_batch(emulated):
    levels, coords = make_case(torch.float32, 1, 2, b=1, h=2, w=2)
    out = emulated.forward([lv[:0] for lv in levels], coords.float()[:0], 1)
    assert out.shape == (0, 18, 2, 2)


# --------------------------------------------------------------------------------------- Triton
@pytest.fixture(scope="module")
def triton_kernel():
    pytest.importorskip("triton", reason="triton is a test dependency (make install); not installed here")
    if not HAS_GPU and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and TRITON_INTERPRET is not 1")
    from mrfa.ops.corr_lookup import triton_kernel as tk

    return tk


DEVICE = "cuda" if HAS_GPU else "cpu"
TRITON_CASES = (
    [(torch.float32, r, 2, False) for r in (0, 1, 2, 3, 4)]
    + [(torch.float32, 1, n, s) for n in (1, 3, 4) for s in (False, True)]
    + [(d, r, 2, s) for d in (torch.float64, torch.float16, torch.bfloat16) for r, s in ((0, True), (3, False))]
    + [(torch.bfloat16, 4, 4, True)]
)


@pytest.mark.parametrize("dtype,radius,num_levels,strided", TRITON_CASES,
                         ids=lambda v: str(v).split(".")[-1] if isinstance(v, torch.dtype) else str(v))
def test_triton_kernel_equals_stencil(triton_kernel, dtype, radius, num_levels, strided):
    block = 256 if DEVICE == "cpu" else 128  # 408 queries: 2 programs (a masked tail) in the interpreter

    def forward(levels, coords, r):
        return triton_kernel.forward(levels, coords, r, block=block)

    def backward(grad, levels, coords, r):
        return triton_kernel.backward(grad, levels, coords, r, block=block)

    check_kernel(forward, backward, dtype, radius, num_levels, strided=strided, device=DEVICE)


def test_triton_op_dispatch_autograd_and_determinism(triton_kernel):
    pyr = [torch.randn(2, 3, 4, 9, 7, dtype=torch.float64, device=DEVICE, requires_grad=True),
           torch.randn(2, 3, 4, 4, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)]
    coords = (torch.rand(2, 2, 3, 4, dtype=torch.float64, device=DEVICE) * 10 - 1).requires_grad_()
    out = corr_lookup(pyr, coords, 2, impl="triton")
    ref = corr_lookup_reference(pyr, coords, 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [*pyr, coords], grad)
    expected = torch.autograd.grad(ref, [*pyr, coords], grad)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)
    again = torch.autograd.grad(corr_lookup(pyr, coords, 2, impl="triton"), [*pyr, coords], grad)
    assert all(torch.equal(a, b) for a, b in zip(got, again))  # owner computes: bitwise deterministic


def test_triton_refused_on_cpu_outside_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    levels, coords = make_case(torch.float32, 1, 1, b=1, h=2, w=2)
    pyr = [levels[0].view(1, 2, 2, *levels[0].shape[-2:])]
    with pytest.raises(ValueError, match="impl 'triton' needs CUDA tensors.*TRITON_INTERPRET=1"):
        corr_lookup(pyr, coords.float(), 1, impl="triton")


# --------------------------------------------------------------------------------------- dispatch
def test_auto_on_cpu_never_compiles_nor_imports_triton():
    """A fresh process runs the model's lookup with impl 'auto' on CPU: no build, no Triton module loaded."""
    code = (
        "import sys, torch\n"
        "from torch.utils import cpp_extension\n"
        "def forbidden(*a, **k): raise AssertionError('compile attempted')\n"
        "cpp_extension.load = forbidden\n"
        "from mrfa.ops.corr_lookup import corr_lookup, corr_lookup_reference\n"
        "pyr = [torch.randn(1, 3, 3, 8, 8), torch.randn(1, 3, 3, 4, 4)]\n"
        "c = torch.rand(1, 2, 3, 3) * 8\n"
        "assert torch.equal(corr_lookup(pyr, c, 3, impl='auto'), corr_lookup_reference(pyr, c, 3))\n"
        "print(sorted(m for m in sys.modules if m == 'triton' or m.startswith('triton.')))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_auto_choice_order_on_a_gpu(monkeypatch):
    monkeypatch.setattr(dispatch, "kernel_unavailable_reason", lambda *a: None)
    assert dispatch.auto_choice(0)[0] == "cuda"
    monkeypatch.setattr(dispatch, "kernel_unavailable_reason", lambda *a: "nvcc not found (set CUDA_HOME)")
    monkeypatch.setattr(dispatch, "triton_unavailable_reason", lambda: None)
    choice, why = dispatch.auto_choice(0)
    assert choice == "triton" and "nvcc not found" in why
    monkeypatch.setattr(dispatch, "triton_unavailable_reason", lambda: "triton is not importable")
    choice, why = dispatch.auto_choice(0)
    assert choice == "torch" and "nvcc not found" in why and "not importable" in why


def test_unknown_impl_is_refused():
    levels, coords = make_case(torch.float32, 1, 1, b=1, h=2, w=2)
    pyr = [levels[0].view(1, 2, 2, *levels[0].shape[-2:])]
    with pytest.raises(ValueError, match="unknown corr_lookup impl 'fast'.*'triton'"):
        corr_lookup(pyr, coords.float(), 1, impl="fast")


# --------------------------------------------------------------------------------------- on a GPU
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_cuda_and_triton_kernels_on_gpu_equal_stencil(dtype):
    from mrfa.ops.corr_lookup import triton_kernel as tk
    from mrfa.ops.corr_lookup.op import corr_lookup_backward_op, corr_lookup_op

    for radius in (0, 3, 4):
        for num_levels in (1, 2, 4):
            for strided in (False, True):
                case = {"strided": strided, "device": "cuda"}
                check_kernel(corr_lookup_op, corr_lookup_backward_op, dtype, radius, num_levels, **case)
                check_kernel(tk.forward, tk.backward, dtype, radius, num_levels, **case)
    levels, coords = make_case(torch.float32, 3, 2, device="cuda")
    a = corr_lookup_op(levels, coords.float(), 3)
    b = tk.forward(levels, coords.float(), 3)
    torch.testing.assert_close(a, b, rtol=0, atol=2e-6)
    assert torch.isfinite(lookup_forward(levels, coords.float(), 3)).all()
