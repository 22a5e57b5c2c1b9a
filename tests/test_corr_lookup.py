"""Correlation lookup: reference, window stencil / kernel math, custom op, on-the-fly mode, pyramids, dispatch.

CPU tests check the algorithm of the CUDA kernel through the PyTorch stencil (the op's CPU kernel) and the op's
registration (opcheck, gradcheck, torch.compile); the kernel sources themselves run in tests/test_corr_kernels.py
(CUDA under emulation, Triton in its interpreter). Tests marked ``cuda`` run the real kernel and are skipped
without a GPU (run them with ``-m cuda``).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from mrfa.nn.intermediates import capture
from mrfa.ops.corr_lookup import build as build_mod
from mrfa.ops.corr_lookup import corr_lookup, corr_lookup_onthefly, corr_lookup_reference
from mrfa.ops.corr_lookup.stencil import lookup_backward, lookup_forward
from mrfa.ops.correlation import (
    build_pyramids,
    channels_last_keys,
    corr_volume,
    correlation_state,
    pool_driving,
    source_pyramid,
)

CSRC = Path(build_mod.__file__).parent / "csrc"
HAS_GPU = torch.cuda.is_available()


def _coords(b: int, h: int, w: int, width: int, height: int, *, margin: float = 4.0, frac: bool = True,
            dtype=torch.float64, device="cpu", seed: int = 0) -> torch.Tensor:
    """[B, 2, h, w] coordinates over [-margin, size + margin); fractional parts in [0.05, 0.95] if ``frac``."""
    g = torch.Generator().manual_seed(seed)
    span = torch.tensor([width, height], dtype=torch.float64).view(1, 2, 1, 1) + 2 * margin
    c = torch.rand(b, 2, h, w, generator=g, dtype=torch.float64) * span - margin
    if frac:
        c = c.floor() + 0.05 + 0.9 * torch.rand(b, 2, h, w, generator=g, dtype=torch.float64)
    return c.to(device=device, dtype=dtype)


def _pyramid(b: int, h: int, w: int, height: int, width: int, levels: int = 2, *, dtype=torch.float64,
             device="cpu", seed: int = 1) -> list[torch.Tensor]:
    """Random levels [B, h, w, H_l, W_l]; level l halves (floors) the previous one."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(levels):
        out.append(torch.randn(b, h, w, height, width, generator=g, dtype=torch.float64).to(device=device, dtype=dtype))
        height, width = height // 2, width // 2
    return out


def _flat(pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
    return [lv.reshape(lv.shape[0], lv.shape[1] * lv.shape[2], *lv.shape[-2:]) for lv in pyramid]


# ----------------------------------------------------------------------------------------------- reference
def test_reference_gradcheck_float64():
    pyr = [lv.requires_grad_() for lv in _pyramid(2, 3, 4, 7, 9)]
    coords = _coords(2, 3, 4, 9, 7).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: corr_lookup_reference([a, b], c, 1), (*pyr, coords))


@pytest.mark.parametrize("level", [0, 1])
def test_one_hot_volume_x_outer_y_inner(level):
    r, k = 3, 7
    height, width = 12, 14
    pyr = [torch.zeros(1, 1, 1, height, width, dtype=torch.float64),
           torch.zeros(1, 1, 1, height // 2, width // 2, dtype=torch.float64)]
    sx, sy, dx, dy = 4, 3, 2, -1  # one-hot at (sx, sy) of the level; window centre offset (dx, dy) away from it
    pyr[level][0, 0, 0, sy, sx] = 1.0
    centre = torch.tensor([sx - dx, sy - dy], dtype=torch.float64).view(1, 2, 1, 1) * 2 ** level
    for out in (corr_lookup_reference(pyr, centre, r), lookup_forward(_flat(pyr), centre, r)):
        taps = out[0, level * k * k:(level + 1) * k * k, 0, 0]
        expected = torch.zeros(k * k, dtype=torch.float64)
        expected[(dx + r) * k + (dy + r)] = 1.0  # channel a*(2r+1) + b <-> offset (a - r, b - r)
        assert torch.equal(taps, expected)
        assert out[0, (1 - level) * k * k:(2 - level) * k * k].abs().max() == 0


# ----------------------------------------------------------------------------------------------- stencil
@pytest.mark.parametrize("radius", [0, 1, 3])
@pytest.mark.parametrize("frac", [True, False])
def test_stencil_forward_equals_reference(radius, frac):
    pyr = _pyramid(2, 5, 6, 7, 9)  # odd sizes: level 1 is 3 x 4
    coords = _coords(2, 5, 6, 9, 7, margin=radius + 3.0, frac=frac)
    coords[0, :, 0, 0] = torch.tensor([-radius - 1.0, 2.0])  # window just touching the left border
    coords[0, :, 0, 1] = torch.tensor([8.0, 6.0])  # exact last pixel
    coords[1, :, 0, 0] = torch.tensor([1e6, -1e6])  # far away
    ref = corr_lookup_reference(pyr, coords, radius)
    out = lookup_forward(_flat(pyr), coords, radius)
    assert out.shape == ref.shape == (2, 2 * (2 * radius + 1) ** 2, 5, 6) and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_stencil_backward_equals_autograd_of_reference(radius):
    pyr = [lv.requires_grad_() for lv in _pyramid(2, 5, 6, 7, 9)]
    coords = _coords(2, 5, 6, 9, 7, margin=radius + 2.0).requires_grad_()
    ref = corr_lookup_reference(pyr, coords, radius)
    grad = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, [*pyr, coords], grad)
    got = lookup_backward(grad, _flat([p.detach() for p in pyr]), coords.detach(), radius)
    assert len(got) == 3
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e.reshape(g.shape), rtol=0, atol=1e-12)
    assert got[-1].abs().max() > 0  # the coordinate gradient is really there


def test_non_finite_coords_give_zero_taps_and_gradients():
    pyr = _flat(_pyramid(1, 2, 2, 6, 6))
    coords = _coords(1, 2, 2, 6, 6, margin=0.0)
    coords[0, 0, 0, 0], coords[0, 1, 0, 1], coords[0, 0, 1, 0] = float("nan"), float("inf"), -float("inf")
    out = lookup_forward(pyr, coords, 2).view(1, -1, 4)
    assert torch.isfinite(out).all() and out[..., :3].abs().max() == 0 and out[..., 3].abs().max() > 0
    grads = lookup_backward(torch.ones(1, out.shape[1], 2, 2, dtype=torch.float64), pyr, coords, 2)
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[-1].view(2, 4)[:, :3].abs().max() == 0
    assert all(g[0, :3].abs().max() == 0 for g in grads[:-1])


# ----------------------------------------------------------------------------------------------- custom op
def test_op_gradcheck_opcheck_and_compile():
    from mrfa.ops.corr_lookup.op import corr_lookup_fused, corr_lookup_op

    levels = [lv.requires_grad_() for lv in _flat(_pyramid(2, 3, 4, 7, 9))]
    coords = _coords(2, 3, 4, 9, 7).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: corr_lookup_op([a, b], c, 1), (*levels, coords))
    result = torch.library.opcheck(corr_lookup_op, (levels, coords, 1))
    assert set(result.values()) == {"SUCCESS"}, result
    strided = torch.randn(2, 12, 9, 7, dtype=torch.float64).transpose(-1, -2).requires_grad_()  # non-contiguous
    result = torch.library.opcheck(corr_lookup_op, ([strided, levels[1]], coords, 2))
    assert set(result.values()) == {"SUCCESS"}, result

    pyr = [lv.detach().float().view(2, 3, 4, *lv.shape[-2:]).requires_grad_() for lv in levels]
    c32 = coords.detach().float().requires_grad_()
    compiled = torch.compile(lambda a, b, c: corr_lookup_fused([a, b], c, 3), backend="aot_eager", fullgraph=True)
    out = compiled(*pyr, c32)
    ref = corr_lookup_reference(pyr, c32, 3)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g_out = torch.autograd.grad(out.square().sum(), [*pyr, c32])
    g_ref = torch.autograd.grad(ref.square().sum(), [*pyr, c32])
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_op_rejects_bad_inputs():
    from mrfa.ops.corr_lookup.op import corr_lookup_op

    levels = _flat(_pyramid(1, 2, 2, 6, 6))
    with pytest.raises(ValueError, match="coords must be torch.float64"):
        corr_lookup_op(levels, _coords(1, 2, 2, 6, 6, dtype=torch.float32), 1)
    with pytest.raises(ValueError, match="radius"):
        corr_lookup_op(levels, _coords(1, 2, 2, 6, 6), 5)
    with pytest.raises(ValueError, match=r"coords must be \[B=1, 2, h, w\]"):
        corr_lookup_op(levels, _coords(1, 3, 2, 6, 6), 1)


# ----------------------------------------------------------------------------------------------- on the fly
@pytest.mark.parametrize("radius", [1, 3])
def test_onthefly_equals_volume_lookup(radius):
    g = torch.Generator().manual_seed(3)
    query = torch.randn(2, 8, 5, 6, generator=g, dtype=torch.float64).requires_grad_()
    key = torch.randn(2, 8, 7, 9, generator=g, dtype=torch.float64).requires_grad_()
    coords = _coords(2, 5, 6, 9, 7, margin=radius + 2.0).requires_grad_()
    ref = corr_lookup_reference(source_pyramid(corr_volume(query, key), 2), coords, radius)
    out = corr_lookup_onthefly(query, channels_last_keys(key, 2), coords, radius, chunk_elements=700)  # 3 chunks
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (query, key, coords), grad),
                    torch.autograd.grad(ref, (query, key, coords), grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_onthefly_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    query = torch.randn(1, 4, 3, 3, generator=g, dtype=torch.float64).requires_grad_()
    key = torch.randn(1, 4, 5, 6, generator=g, dtype=torch.float64).requires_grad_()
    coords = _coords(1, 3, 3, 6, 5, margin=2.0).requires_grad_()
    fn = lambda q, k, c: corr_lookup_onthefly(q, channels_last_keys(k, 2), c, 1, chunk_elements=100)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (query, key, coords))


# ----------------------------------------------------------------------------------------------- pyramids
def test_pyramids_built_once_equal_per_iteration_pooling():
    g = torch.Generator().manual_seed(5)
    query = torch.randn(2, 16, 16, 16, generator=g, dtype=torch.float64)
    key = torch.randn(2, 16, 16, 16, generator=g, dtype=torch.float64)
    once = build_pyramids(query, key, [8, 4, 2, 1, 1], num_levels=2)
    assert sorted(once) == [1, 2, 4, 8]
    volume = corr_volume(query, key)
    for f, levels in once.items():
        official = source_pyramid(pool_driving(volume, f), 2)  # what the official code rebuilds every iteration
        assert [lv.shape for lv in levels] == [lv.shape for lv in official]
        for a, b in zip(levels, official):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    state = correlation_state(query, key, [4, 1], 2, mode="onthefly")
    assert state.pyramids == {} and sorted(state.queries) == [1, 4] and state.keys[1].shape == (2, 8, 8, 16)
    with pytest.raises(ValueError, match="unknown correlation mode"):
        correlation_state(query, key, [1], 2, mode="sparse")


def _small_refiner(mode: str):
    from mrfa.nn.refiner import MotionRefiner
    from mrfa.types import DenseMotion

    torch.manual_seed(0)
    refiner = MotionRefiner(num_kp=4, num_channels=3, grid_size=16, level_channels=[8, 8, 8, 8], dim=16,
                            block_expansion=4, max_features=16, num_blocks=2, context_dim=8, hidden_dim=8,
                            corr_mode=mode).double()
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(1, 8, s, s, generator=g, dtype=torch.float64) for s in (4, 8, 16, 32)]
    src = torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64)
    kp_d, kp_s = (torch.rand(1, 4, 2, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(2))
    ident = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="xy"), -1)
    deform = (ident[None].double() + 0.2 * torch.randn(1, 16, 16, 2, generator=g, dtype=torch.float64))
    dense = DenseMotion(deformation=deform.requires_grad_(), occlusion=torch.zeros(1, 1, 16, 16, dtype=torch.float64),
                        mask=torch.zeros(1, 5, 16, 16, dtype=torch.float64))
    img_down = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64)
    out = refiner(feats, src, kp_d, dense, kp_source=kp_s, img_down=img_down)
    loss = sum(f.square().mean() for f in out.flows) + sum(w.mean() for w in out.warped)
    grads = torch.autograd.grad(loss, [*refiner.parameters(), dense.deformation], allow_unused=True)
    return refiner, out, grads


def _per_iteration_lookup(self, pyramids, flow):
    """MotionRefiner._lookup with the official construction: full volume, pooled and re-pyramided every time."""
    from mrfa.ops.grid import coords_grid, resize

    g, r, b = self.grid_size, flow.shape[-1], flow.shape[0]
    f, n = max(g // r, 1), min(r, g)
    centre = (resize(flow, g) * (g / r) if r > g else flow) + coords_grid(b, n, n, dtype=flow.dtype)
    vol = corr_volume(pyramids.queries[1], pyramids.keys[0].permute(0, 3, 1, 2))
    corr = corr_lookup_reference(source_pyramid(pool_driving(vol, f), self.corr_levels), centre * f, self.corr_radius)
    return corr if r <= g else resize(corr, r)


def test_refiner_modes_agree(monkeypatch):
    """Volume (pyramids once), on-the-fly and the official per-iteration construction: outputs and gradients."""
    from mrfa.nn.refiner import MotionRefiner

    _, out_v, g_v = _small_refiner("volume")
    _, out_o, g_o = _small_refiner("onthefly")
    monkeypatch.setattr(MotionRefiner, "_lookup", _per_iteration_lookup)
    _, out_a, g_a = _small_refiner("onthefly")  # per-iteration lookup reads the raw features of this state
    for other, grads in ((out_o, g_o), (out_a, g_a)):
        for a, b in zip(out_v.flows + out_v.warped + out_v.occlusion, other.flows + other.warped + other.occlusion):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        for a, b in zip(g_v, grads):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert g_v[-1].abs().max() > 0  # gradients reach the prior's deformation through the lookup coordinates


# ----------------------------------------------------------------------------------------------- dispatch
def test_dispatch_on_cpu_never_compiles(monkeypatch):
    from torch.utils import cpp_extension

    def forbidden(*args, **kwargs):
        raise AssertionError("a CUDA build was attempted on CPU tensors")

    monkeypatch.setattr(cpp_extension, "load", forbidden)
    pyr = _pyramid(1, 3, 3, 8, 8, dtype=torch.float32)
    coords = _coords(1, 3, 3, 8, 8, dtype=torch.float32)
    ref = corr_lookup_reference(pyr, coords, 3)
    assert torch.equal(corr_lookup(pyr, coords, 3, impl="torch"), ref)
    assert torch.equal(corr_lookup(pyr, coords, 3, impl="auto"), ref)
    with pytest.raises(ValueError, match="impl 'cuda' needs CUDA tensors"):
        corr_lookup(pyr, coords, 3, impl="cuda")
    with pytest.raises(ValueError, match="unknown corr_lookup impl"):
        corr_lookup(pyr, coords, 3, impl="fast")
    with pytest.raises(build_mod.ExtensionUnavailable, match="CUDA-only"):
        build_mod.load_extension(torch.device("cpu"))
    if torch.version.cuda is None:
        with pytest.raises(build_mod.ExtensionUnavailable, match="no CUDA support"):
            build_mod.load_extension(torch.device("cuda", 0))


def test_build_cache_key_follows_sources(tmp_path, monkeypatch):
    first = build_mod.source_hash()
    assert first == build_mod.source_hash() and len(first) == 16
    for name in build_mod.SOURCES + build_mod.HEADERS:
        shutil.copy(CSRC / name, tmp_path / name)
    monkeypatch.setattr(build_mod, "CSRC", tmp_path)
    assert build_mod.source_hash() == first
    with open(tmp_path / "corr_lookup_core.h", "a") as fh:
        fh.write("\n// edited\n")
    assert build_mod.source_hash() != first


# ----------------------------------------------------------------------------------------------- model parity
def _recon_failures(corr_mode: str, corr_impl: str, device: str) -> list[str]:
    """The mtia fixture's recon section (tests/test_parity.py machinery) with another correlation path."""
    sys.path.insert(0, str(Path(__file__).parent))
    import test_parity as tp  # noqa: E402
    from parity_helpers import fixture_inputs, load_fixture, recipe_state_dict

    from mrfa.builders import build_model
    from mrfa.official import from_official
    from mrfa.official import official_to_ours

    paths = [p for p in tp.FIXTURES if p.stem == "vox256-mtia"]
    if not paths:
        pytest.skip("no vox256-mtia parity fixture")
    fx = load_fixture(paths[0])
    meta = fx["meta"]
    cfg = from_official(meta["config"], source=str(paths[0]))
    cfg.model.refinement.corr_mode, cfg.model.refinement.corr_impl = corr_mode, corr_impl
    model = build_model(cfg)
    state, _ = official_to_ours(recipe_state_dict(paths[0].parent, meta))
    model.load_state_dict(state, strict=False)
    model.train(meta["bn_mode"] == "train").to(device)
    x = {k: v.to(device) for k, v in fixture_inputs(fx).items()}
    used = [tp._kp(torch.utils._pytree.tree_map(lambda t: t.to(device) if torch.is_tensor(t) else t, k))
            for k in fx["recon"]["kp_used"]]
    trace: dict = {}
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 like the fixtures
    try:
        with torch.no_grad():
            with capture(trace):
                model(x["source"], x["driving"], kp_source=used[0], kp_driving=used[1])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return tp._check_section("recon", trace, fx, meta, skip=("recon.kp", "recon.detector"))


@pytest.mark.slow
def test_model_parity_onthefly():
    failures = _recon_failures("onthefly", "torch", "cpu")
    assert not failures, "\n".join(failures[:20])


# ----------------------------------------------------------------------------------------------- CUDA
cuda = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
TOLS = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3),
        torch.bfloat16: (1e-2, 1e-2)}


def _cuda_case(dtype, *, b=3, h=6, w=7, height=13, width=11, radius=3, seed=0, strided=False):
    pyr64 = _pyramid(b, h, w, height, width, dtype=torch.float64, device="cuda", seed=seed)
    levels = [lv.to(dtype) for lv in _flat(pyr64)]
    if strided:  # non-contiguous level 0 with the same values
        levels[0] = levels[0].transpose(-1, -2).contiguous().transpose(-1, -2)
    coords = _coords(b, h, w, width, height, margin=radius + 3.0, dtype=torch.float64, device="cuda", seed=seed)
    coords[0, :, 0, 0] = torch.tensor([-radius - 1.0, 0.0])
    coords[0, :, 0, 1] = torch.tensor([width - 1.0, height - 1.0])
    coords[0, :, 0, 2] = torch.tensor([1e7, -1e7])
    coords[0, :, 0, 3] = torch.tensor([float("nan"), 2.5])
    return levels, coords


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("strided", [False, True])
def test_cuda_kernel_equals_reference(dtype, strided):
    from mrfa.ops.corr_lookup.op import corr_lookup_backward_op, corr_lookup_op

    acc = torch.float64 if dtype == torch.float64 else torch.float32
    levels, coords = _cuda_case(dtype, strided=strided)
    ref_levels = [lv.double() for lv in levels]  # the reference on the same (rounded) values, in float64
    out = corr_lookup_op(levels, coords.to(acc), 3)
    ref = lookup_forward(ref_levels, coords, 3)
    assert out.dtype == acc and torch.isfinite(out).all()  # every element written, NaN coords -> zeros
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5 if acc == torch.float32 else 1e-12)
    grad = torch.randn(out.shape, device="cuda", dtype=torch.float64)
    got = corr_lookup_backward_op(grad.to(acc), levels, coords.to(acc), 3)
    expected = lookup_backward(grad, ref_levels, coords, 3)
    rtol, atol = TOLS[dtype]
    for e, g, like in zip(expected, got, levels + [coords.to(acc)]):
        assert g.dtype == like.dtype and g.shape == like.shape and torch.isfinite(g).all()
        torch.testing.assert_close(g.double(), e, rtol=rtol, atol=atol * max(1.0, float(e.abs().max())))
    # the stencil oracle itself against the grid_sample reference (NaN -> far away: both give zeros)
    pyr = [lv.view(3, 6, 7, *lv.shape[-2:]) for lv in ref_levels]
    ref_gs = corr_lookup_reference(pyr, torch.nan_to_num(coords, nan=-100.0), 3)
    torch.testing.assert_close(ref, ref_gs, rtol=0, atol=1e-10)


@pytest.mark.cuda
@cuda
def test_cuda_gradcheck_determinism_and_dispatch():
    from mrfa.ops.corr_lookup.op import corr_lookup_op

    levels = [lv.requires_grad_() for lv in _flat(_pyramid(2, 3, 4, 7, 9, device="cuda"))]
    coords = _coords(2, 3, 4, 9, 7, device="cuda").requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: corr_lookup_op([a, b], c, 2), (*levels, coords))
    result = torch.library.opcheck(corr_lookup_op, (levels, coords, 2))
    assert set(result.values()) == {"SUCCESS"}, result
    big, c32 = _cuda_case(torch.float32, b=4, h=32, w=32, height=32, width=32)
    big = [lv.requires_grad_() for lv in big]
    c32 = torch.nan_to_num(c32.float(), nan=0.0).requires_grad_()
    runs = []
    for _ in range(2):
        out = corr_lookup_op(big, c32, 3)
        runs.append(torch.autograd.grad(out, [*big, c32], torch.ones_like(out)))
    assert all(torch.equal(a, b) for a, b in zip(*runs))  # bitwise deterministic backward
    pyr = [lv.detach().view(4, 32, 32, *lv.shape[-2:]) for lv in big]
    torch.testing.assert_close(corr_lookup(pyr, c32.detach(), 3, impl="cuda"),
                               corr_lookup(pyr, c32.detach(), 3, impl="auto"), rtol=0, atol=0)
    # against the exact stencil on the same values (grid_sample rounds differently; its margin is thin)
    torch.testing.assert_close(corr_lookup(pyr, c32.detach(), 3, impl="cuda"),
                               lookup_forward([lv.detach() for lv in big], c32.detach(), 3), rtol=1e-6, atol=1e-6)


@pytest.mark.cuda
@cuda
def test_cuda_64bit_offsets():
    """B*Q*H*W > 2^31 elements (fp16 volume, ~4.3 GB): the last batch element must still be right."""
    from mrfa.ops.corr_lookup.op import corr_lookup_op

    b, n = 9, 128 * 128  # 9 samples x 16384 queries x 128 x 128 maps = 2.4e9 elements (4.8 GB in fp16)
    if torch.cuda.get_device_properties(0).total_memory < 16 * 2 ** 30:
        pytest.skip("needs >= 16 GiB of GPU memory")
    level = torch.zeros(b, n, 128, 128, dtype=torch.float16, device="cuda")
    assert level.numel() > 2 ** 31
    level[-1, -1, 100, 50] = 1.0
    coords = torch.zeros(b, 2, 128, 128, device="cuda")
    coords[-1, :, -1, -1] = torch.tensor([50.25, 100.0])
    out = corr_lookup_op([level], coords, 3)
    assert out[-1, 3 * 7 + 3, -1, -1].item() == pytest.approx(0.75)
    assert out[-1, 2 * 7 + 3, -1, -1].item() == pytest.approx(0.25)


@pytest.mark.cuda
@cuda
def test_cuda_model_parity():
    """impl cuda passes the fixture wherever the GPU run of the reference does (no new mismatch)."""
    baseline = _recon_failures("volume", "torch", "cuda")
    failures = _recon_failures("volume", "cuda", "cuda")
    new = {f.split(":")[0] for f in failures} - {f.split(":")[0] for f in baseline}
    assert not new, "\n".join(f for f in failures if f.split(":")[0] in new)
    assert not failures, f"GPU baseline (impl torch) mismatches too: {baseline[:5]}\n" + "\n".join(failures[:20])


@pytest.mark.cuda
@cuda
def test_cuda_model_parity_onthefly():
    failures = _recon_failures("onthefly", "auto", "cuda")
    assert not failures, "\n".join(failures[:20])
