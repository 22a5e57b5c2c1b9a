"""ONNX export and the onnxruntime / OpenVINO backends: every variant round-trips (the runtime equals torch within
1e-4 on float predictions), the CLI animates through the exported graphs, and refusals are one sentence."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import mrfa
from mrfa.cli import main as mrfa_main
from mrfa.inference.animate import Animator
from mrfa.inference.engine import EngineOptions
from mrfa.media.video import write_video

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install '.[onnx]'; make test does)")
from mrfa.inference.export import OnnxModel, export_onnx  # noqa: E402

TPS = ["model.prior=tpsm", "model.num_kp=4", "model.tps.num_tps=4"]
VARIANTS = {  # the default MTIA model round-trips in test_cli_export_and_animate_with_onnxruntime
    "tpsm": (TPS, ()),
    "background": (["model.background=true"], (pytest.mark.slow,)),
    "fomm": (["model.prior=fomm"], (pytest.mark.slow,)),
    "prior-only": (["model.refinement.prior_only=true"], (pytest.mark.slow,)),
}


def _model(sets: list[str]) -> mrfa.MRFA:
    torch.manual_seed(0)
    cfg = mrfa.load_config("configs/tiny.yaml", sets)
    model = mrfa.build_model(cfg).eval()
    model.config = cfg
    return model


@pytest.mark.parametrize("variant", [pytest.param(k, marks=v[1]) for k, v in VARIANTS.items()])
def test_round_trip(variant: str, tmp_path: Path) -> None:
    model = _model(VARIANTS[variant][0])
    _check_round_trip(model, export_onnx(model, tmp_path / "export"))


def _check_round_trip(model: mrfa.MRFA, folder: Path, runtime: str = "onnxruntime") -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["image_size"] == 64 and set(manifest["graphs"]) == {"encoder.onnx", "keypoints.onnx",
                                                                        "renderer.onnx"}
    g = torch.Generator().manual_seed(1)
    src = (torch.rand(64, 64, 3, generator=g) * 255).byte().numpy()
    drv = (torch.rand(5, 64, 64, 3, generator=g) * 255).byte().numpy()
    eager = Animator(model, device="cpu", batch_size=2)
    onnx = Animator(OnnxModel(folder, runtime=runtime), device="cpu", batch_size=3, engine=EngineOptions(backend=runtime))
    for kw in ({}, {"relative": False}, {"adapt_scale": True, "best_frame": 2}):
        a = np.stack([f.prediction for f in eager.frames(src, drv, **kw)]).astype(int)
        b = np.stack([f.prediction for f in onnx.frames(src, drv, **kw)]).astype(int)
        assert np.abs(a - b).max() <= 1, kw  # uint8: float predictions agree within 1e-4 (below)
    ra = np.stack([p for p, _ in eager.reconstruct_frames(drv)])
    rb = np.stack([p for p, _ in onnx.reconstruct_frames(drv)])
    assert np.abs(ra - rb).max() < 1e-4


def test_cli_export_and_animate_with_onnxruntime(tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "tiny.pt"
    model = _model([])
    mrfa.save_snapshot(ckpt, model, model.config)
    g = torch.Generator().manual_seed(2)
    src, drv = tmp_path / "s.png", tmp_path / "d.mp4"
    import imageio.v3 as iio

    iio.imwrite(src, (torch.rand(64, 64, 3, generator=g) * 255).byte().numpy())
    write_video(drv, (torch.rand(6, 64, 64, 3, generator=g) * 255).byte().numpy(), fps=5)
    assert mrfa_main(["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "onnx")]) == 0
    assert "warning" not in capsys.readouterr().err  # a successful export says only what it wrote
    _check_round_trip(model, tmp_path / "onnx")
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["checkpoint_sha256"] and "driving" in [i["name"] for i in manifest["graphs"]["renderer.onnx"]["inputs"]]
    assert mrfa_main(["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "onnx")]) == 1  # exists
    base = ["animate", "--source", str(src), "--driving", str(drv), "--device", "cpu", "--quiet"]
    assert mrfa_main([*base, "--checkpoint", str(ckpt), "--output", str(tmp_path / "torch")]) == 0
    assert mrfa_main([*base, "--checkpoint", str(tmp_path / "onnx"), "--backend", "onnxruntime", "--output",
                      str(tmp_path / "ort")]) == 0
    _check_damaged_exports(tmp_path / "onnx", base, tmp_path, capsys)
    a = np.stack([iio.imread(p) for p in sorted((tmp_path / "torch").glob("*.png"))]).astype(int)
    b = np.stack([iio.imread(p) for p in sorted((tmp_path / "ort").glob("*.png"))]).astype(int)
    assert a.shape == b.shape == (6, 64, 64, 3) and np.abs(a - b).max() <= 1
    capsys.readouterr()
    assert mrfa_main([*base, "--checkpoint", str(ckpt), "--backend", "onnxruntime", "--output",
                      str(tmp_path / "x.mp4")]) == 1
    assert "mrfa export" in capsys.readouterr().err  # a checkpoint file: says how to export it
    assert mrfa_main([*base, "--checkpoint", str(tmp_path / "onnx"), "--backend", "onnxruntime",
                      "--precision", "bf16", "--output", str(tmp_path / "y.mp4")]) == 1
    assert "torch backend only" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "y.mp4").exists()


def test_fp16_export_keeps_coordinates_fp32_and_stays_close(tmp_path: Path) -> None:
    """`mrfa export --precision fp16`: the torch engine's reduced-precision blocks in fp16 (for GPU execution
    providers), fp32 inputs / outputs; checked here with onnxruntime's CPU fp16 kernels against fp32 eager."""
    import onnx

    from mrfa.inference.engine import BF16_BLOCKS
    from mrfa.inference.export import OnnxModel, export_onnx

    model = _model([])
    folder = export_onnx(model, tmp_path / "fp16", precision="fp16")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["precision"] == "fp16" and manifest["reduced_precision_blocks"] == list(BF16_BLOCKS)
    renderer = onnx.load(folder / "renderer.onnx")
    kinds = {i.data_type for i in renderer.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT in kinds  # mixed, not wholesale
    io = [*renderer.graph.input, *renderer.graph.output]
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in io)
    keypoints = onnx.load(folder / "keypoints.onnx")  # the keypoint detector stays fp32
    assert all(i.data_type != onnx.TensorProto.FLOAT16 for i in keypoints.graph.initializer)
    g = torch.Generator().manual_seed(1)
    src, drv = torch.rand(1, 3, 64, 64, generator=g), torch.rand(3, 3, 64, 64, generator=g)
    with torch.no_grad():
        ref = model.reconstruct_encoded(model.encode_source(src), drv).prediction
    ort = OnnxModel(folder)
    pred = ort.reconstruct_encoded(ort.encode_source(src), drv).prediction
    diff = (pred - ref).abs()
    psnr = 10 * np.log10(1.0 / float((diff ** 2).mean()))
    assert float(diff.max()) < 5e-3 and psnr > 60, (float(diff.max()), psnr)  # measured: 2.8e-4, 81 dB
    with pytest.raises(ValueError, match="unknown export precision 'int8'"):
        export_onnx(model, tmp_path / "int8", precision="int8")


def _check_damaged_exports(good: Path, base: list[str], tmp_path: Path, capsys) -> None:
    """A damaged export is one sentence, never a traceback: missing graph, random bytes, a graph of another
    export, a wrong image size, a manifest without a key or cut short."""
    import shutil

    def damaged(name: str, change) -> Path:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        change(folder)
        return folder

    def edit_manifest(update):
        def change(folder: Path) -> None:
            manifest = json.loads((folder / "manifest.json").read_text())
            update(manifest)
            (folder / "manifest.json").write_text(json.dumps(manifest))
        return change

    cases = {
        "missing": (lambda f: (f / "renderer.onnx").unlink(), "renderer.onnx is missing"),
        "random": (lambda f: (f / "encoder.onnx").write_bytes(os.urandom(2048)), "does not match the SHA-256"),
        "swapped": (lambda f: shutil.copyfile(f / "keypoints.onnx", f / "encoder.onnx"), "does not match the SHA-256"),
        "size": (edit_manifest(lambda m: m.update(image_size=128)), "does not match the encoder graph"),
        "no_key": (edit_manifest(lambda m: m.pop("encoding")), "lacks encoding"),
        "truncated": (lambda f: (f / "manifest.json").write_text((f / "manifest.json").read_text()[:100]),
                      "not valid JSON"),
    }
    for name, (change, words) in cases.items():
        folder = damaged(name, change)
        code = mrfa_main([*base, "--checkpoint", str(folder), "--backend", "onnxruntime", "--output",
                          str(tmp_path / f"out-{name}.mp4")])
        err = capsys.readouterr().err
        assert code == 1 and words in err and "Traceback" not in err, (name, err[-500:])


def test_openvino_runs_the_export_like_torch(tmp_path: Path, capsys) -> None:
    """OpenVINO (fp32 inference precision, also on bf16 CPUs) equals torch within 1e-4; a --speed preset on an
    export folder picks it."""
    pytest.importorskip("openvino", reason="openvino not installed (pip install '.[openvino]'; make test does)")
    model = _model([])
    ckpt = tmp_path / "tiny.pt"
    mrfa.save_snapshot(ckpt, model, model.config)
    assert mrfa_main(["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "onnx")]) == 0
    _check_round_trip(model, tmp_path / "onnx", runtime="openvino")
    g = torch.Generator().manual_seed(3)
    import imageio.v3 as iio

    src, drv = tmp_path / "s.png", tmp_path / "d.mp4"
    iio.imwrite(src, (torch.rand(64, 64, 3, generator=g) * 255).byte().numpy())
    write_video(drv, (torch.rand(4, 64, 64, 3, generator=g) * 255).byte().numpy(), fps=5)
    capsys.readouterr()
    assert mrfa_main(["animate", "--source", str(src), "--driving", str(drv), "--device", "cpu", "--quiet",
                      "--checkpoint", str(tmp_path / "onnx"), "--speed", "fast", "--output", str(tmp_path / "o")]) == 0
    assert "the exported graphs with openvino" in capsys.readouterr().err
    assert len(list((tmp_path / "o").glob("*.png"))) == 4
