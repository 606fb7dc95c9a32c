"""Export a model's encoder (and head, with --head) to ONNX or TorchScript with a dynamic batch size,
then verify the exported file against PyTorch on random input and report the largest difference.

Input `audio` (batch, crop_length) float32 at the model's sample rate; outputs `embedding` and, with a
head, `logits`. The model's config (sample rate, crop length, tags) is stored in the file."""

from __future__ import annotations

import argparse

# Options whose default is None explain it in their help text; "%(default).0s" renders as nothing
# and keeps the default-adding help formatter from appending "(default: None)".


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="clmr .safetensors file, run directory, or reference .pt/.ckpt")
    parser.add_argument(
        "--format",
        choices=("onnx", "torchscript"),
        default="onnx",
        help="onnx (needs onnx, onnxscript and onnxruntime: the clmr[export] extra) or torchscript",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="file to write (.onnx or .pt); written under a temporary name, renamed once verified",
    )
    parser.add_argument(
        "--head",
        help="also export this head (a fine-tuned or probe head file); a checkpoint's own head is "
        "exported without it",
    )


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `clmr --help` imports every command module, and these pull in torch
    from clmr.inference.export import TOLERANCE, export_model
    from clmr.models import load_model

    model = load_model(args.checkpoint, head=args.head)
    report = export_model(model, args.out, args.format, with_head=args.head is not None or None)
    ok = report.max_abs_diff <= TOLERANCE
    print(
        f"{report.path}: {report.format}, outputs {', '.join(report.outputs)}, dynamic batch "
        f"(verified on batches {', '.join(map(str, report.batch_sizes))}); max |difference| vs PyTorch "
        f"{report.max_abs_diff:.2e} " + ("OK" if ok else f"FAILED (above {TOLERANCE:g})")
    )
    return 0 if ok else 1
