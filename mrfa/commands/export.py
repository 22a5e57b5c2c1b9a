"""``mrfa export``: a checkpoint as standard ONNX graphs + manifest, for the onnxruntime backend and deployment
without PyTorch (the graphs and their contract: :mod:`mrfa.inference.export`).

Example::

    mrfa export --checkpoint vox.pth.tar --output vox-onnx/
    mrfa animate --checkpoint vox-onnx/ --backend onnxruntime --source me.jpg --driving clip.mp4 --output out.mp4
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--checkpoint", required=True, help="mrfa snapshot / training state / official checkpoint")
    parser.add_argument("--config", default=None, help="YAML config (only for official checkpoints of non-default size)")
    parser.add_argument("--output", required=True, help="folder for encoder.onnx, keypoints.onnx, renderer.onnx, "
                                                        "manifest.json")
    parser.add_argument("--format", choices=("onnx",), default="onnx")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                        help="fp16: the convolution blocks in fp16 (for GPU execution providers), coordinates, "
                             "keypoint detector and warps in fp32; inputs and outputs stay fp32")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --output")
    return parser


def run(args: argparse.Namespace) -> int:
    from mrfa.checkpoint import load_checkpoint
    from mrfa.config import load_config
    from mrfa.inference.engine import export_runtime_status
    from mrfa.inference.export import export_onnx
    from mrfa.media.writer import check_output

    missing = export_runtime_status("onnxruntime")
    if missing is not None:
        raise ValueError(missing)
    check_output(args.output, inputs=[args.checkpoint, args.config], overwrite=args.overwrite,
                 layout=("encoder.onnx", "keypoints.onnx", "renderer.onnx", "manifest.json"))
    model = load_checkpoint(args.checkpoint, config=load_config(args.config) if args.config else None)
    out = export_onnx(model, args.output, checkpoint=args.checkpoint, overwrite=args.overwrite,
                      precision=args.precision)
    print(f"mrfa export: wrote {out} (encoder.onnx, keypoints.onnx, renderer.onnx, manifest.json)")
    return 0
