"""The inference engine: every fast path runs, stays within its stated tolerance of the fp32 reference, and every
choice the machine cannot serve is refused with one sentence."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

import mrfa
from mrfa.cli import main as mrfa_main
from mrfa.inference import engine as E
from mrfa.inference.engine import EngineOptions, check_engine, prepare_model

ROOT = Path(__file__).resolve().parents[1]

CPU = torch.device("cpu")


def _model(**overrides: object) -> mrfa.MRFA:
    torch.manual_seed(0)
    cfg = mrfa.load_config("configs/tiny.yaml", [f"{k}={v}" for k, v in overrides.items()])
    return mrfa.build_model(cfg).eval()


def _inputs(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(2, 3, size, size, generator=g), torch.rand(2, 3, size, size, generator=g)


def _predict(options: EngineOptions, **cfg: object) -> torch.Tensor:
    model = prepare_model(_model(**cfg), options, CPU)
    src, drv = _inputs()
    with torch.inference_mode():
        return model(src, drv).prediction.float()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def test_channels_last_matches_the_reference() -> None:
    ref = _predict(EngineOptions())
    assert (_predict(EngineOptions(channels_last=True)) - ref).abs().max() < 1e-4


@pytest.mark.skipif(not E.cpu_supports_bf16(), reason="this CPU has no AVX512-BF16 / AMX (bf16 is refused here)")
@pytest.mark.parametrize("prior", ["mtia", "fomm", "tpsm"])
def test_bf16_stays_within_tolerance(prior: str) -> None:
    cfg = {"model.prior": prior} if prior != "tpsm" else {"model.prior": "tpsm", "model.num_kp": 4, "model.tps.num_tps": 4}
    ref = _predict(EngineOptions(), **cfg)
    fast = _predict(EngineOptions(precision="bf16"), **cfg)
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    assert _psnr(fast, ref) > 35.0 and (fast - ref).abs().max() < 0.1  # stated tolerance (random tiny model)


def test_refine_levels() -> None:
    model = _model()
    levels = len(model.generator.channels)
    ref = _predict(EngineOptions())
    assert torch.equal(_predict(EngineOptions(refine_levels=levels)), ref)  # all levels: the official forward
    coarse = _predict(EngineOptions(refine_levels=levels - 1))
    assert not torch.equal(coarse, ref) and torch.isfinite(coarse).all()


def test_refine_levels_prior_only_is_harmless() -> None:
    assert torch.isfinite(_predict(EngineOptions(refine_levels=2), **{"model.refinement.prior_only": True})).all()


@pytest.mark.parametrize("options, words", [
    (EngineOptions(precision="fp16"), "needs a GPU"),
    (EngineOptions(backend="onnxruntime", precision="bf16"), "torch backend only"),
    (EngineOptions(backend="onnxruntime", refine_levels=3), "torch backend only"),
    (EngineOptions(refine_levels=0), "--refine-levels"),
])
def test_refusals(options: EngineOptions, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_engine(options, CPU)


@pytest.mark.parametrize("backend, extra", [("onnxruntime", "onnx"), ("openvino", "openvino")])
def test_export_runtime_missing_is_one_sentence(monkeypatch, backend: str, extra: str) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == backend else real_find_spec(name, *a))
    with pytest.raises(ValueError, match=rf"the {backend} backend needs .*pip install '\.\[{extra}\]'"):
        check_engine(EngineOptions(backend=backend), CPU)


def test_openvino_refuses_a_gpu_and_torch_flags() -> None:
    pytest.importorskip("openvino")
    with pytest.raises(ValueError, match="runs on the CPU"):
        check_engine(EngineOptions(backend="openvino"), torch.device("cuda"))
    with pytest.raises(ValueError, match="torch backend only; the openvino backend"):
        check_engine(EngineOptions(backend="openvino", channels_last=True), CPU)


def test_bf16_refused_without_native_support(monkeypatch) -> None:
    monkeypatch.setattr(E, "cpu_supports_bf16", lambda: False)
    with pytest.raises(ValueError, match="AVX512-BF16 or AMX"):
        check_engine(EngineOptions(precision="bf16"), CPU)


def test_cli_refuses_fp16_on_cpu_before_reading_anything(tmp_path, capsys) -> None:
    code = mrfa_main(["animate", "--checkpoint", str(tmp_path / "missing.pt"), "--source", "configs/tiny.yaml",
                      "--driving", str(tmp_path / "d.mp4"), "--output", str(tmp_path / "o.mp4"), "--device", "cpu",
                      "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("mrfa animate: error:") and "needs a GPU" in err[-1]


def test_speed_presets_resolve_per_machine(monkeypatch) -> None:
    import mrfa.inference.engine as E

    cpu = torch.device("cpu")
    monkeypatch.setattr(E, "cpu_supports_bf16", lambda: False)
    assert E.speed_preset("exact", cpu)[0] == E.EngineOptions(keep_memory=True)
    assert E.speed_preset("fast", cpu)[0] == E.EngineOptions(keep_memory=True)  # emulated bf16: slower than fp32
    assert E.speed_preset("fastest", cpu)[0] == E.EngineOptions(refine_levels=-1, keep_memory=True)
    monkeypatch.setattr(E, "cpu_supports_bf16", lambda: True)
    fast, said = E.speed_preset("fast", cpu)
    assert fast == E.EngineOptions(precision="bf16", channels_last=True, keep_memory=True) and "72 dB" in said
    assert E.speed_preset("fastest", cpu)[0].refine_levels == -1
    with pytest.raises(ValueError, match="unknown --speed"):
        E.speed_preset("ludicrous", cpu)


def test_negative_refine_levels_count_from_the_finest() -> None:
    import mrfa
    from mrfa.inference.engine import EngineOptions, prepare_model, refinement_levels

    model = mrfa.build_model(mrfa.load_config(ROOT / "configs" / "tiny.yaml")).eval()
    levels = refinement_levels(model)
    prepare_model(model, EngineOptions(refine_levels=-1), torch.device("cpu"))
    assert model.refiner.refine_levels == levels - 1


def test_speed_and_expert_flags_are_not_mixed(tmp_path, capsys) -> None:
    from mrfa.cli import main

    code = main(["animate", "--checkpoint", "x.pt", "--source", "s.png", "--driving", "d.mp4", "--output",
                 str(tmp_path / "o.mp4"), "--speed", "fast", "--precision", "bf16"])
    assert code == 1 and "give --speed or the expert engine flags" in capsys.readouterr().err


def test_keep_memory_changes_no_value() -> None:
    """Keeping freed memory in the process is an allocator setting: outputs are bit-identical."""
    import mrfa
    from mrfa.inference.engine import EngineOptions, prepare_model
    from mrfa.utils.memory import keep_freed_memory

    torch.manual_seed(0)
    model = mrfa.build_model(mrfa.load_config(ROOT / "configs" / "tiny.yaml")).eval()
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        before = model(x, y).prediction
        prepare_model(model, EngineOptions(keep_memory=True), torch.device("cpu"))
        after = model(x, y).prediction
    assert torch.equal(before, after)
    if sys.platform.startswith("linux"):
        import platform

        if platform.libc_ver()[0] == "glibc":
            assert keep_freed_memory()


def test_fewer_casts_give_identical_values() -> None:
    """Skipping the exit cast of blocks whose consumers cast back (or promote) changes no value."""
    import mrfa
    from mrfa.inference.engine import apply_reduced_precision

    outs = []
    x, y = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    for fewer in (False, True):
        torch.manual_seed(0)
        model = mrfa.build_model(mrfa.load_config(ROOT / "configs" / "tiny.yaml")).eval()
        apply_reduced_precision(model, "bf16", correlation=True, fewer_casts=fewer)
        with torch.inference_mode():
            outs.append(model(x, y))
    assert outs[0].prediction.dtype == torch.float32
    assert torch.equal(outs[0].prediction, outs[1].prediction)
    assert all(f.dtype == torch.float32 for f in outs[1].flows)  # coordinates stay fp32


def test_reduced_precision_correlation_is_close_and_fp32() -> None:
    from mrfa.ops.correlation import corr_volume

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 64, 8, 8, generator=g), torch.randn(2, 64, 8, 8, generator=g)
    ref, low = corr_volume(q, k), corr_volume(q, k, torch.bfloat16)
    assert low.dtype == torch.float32 and low.shape == ref.shape
    assert 0 < float((low - ref).abs().max()) < 0.05 * float(ref.abs().max())
