"""`clmr export`: ONNX (onnxruntime) and TorchScript files match PyTorch within 1e-4 at any batch size
and carry the model's config."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from clmr.cli import main
from clmr.inference.export import ExportError, export_model
from clmr.models import CLMR, Head, Projector, SampleCNN, save_model

TAGS = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def model() -> CLMR:
    torch.manual_seed(0)
    return CLMR(
        SampleCNN(width=1 / 16, n_blocks=5),
        Projector(32, 32, 16),
        Head("mlp", 32, 4, hidden=16),
        sample_rate=8000,
        tags=TAGS,
        task="multilabel",
    ).eval()


def reference(model, x):
    with torch.no_grad():
        h = model.embed(torch.from_numpy(x))
        return h.numpy(), model.head(h).numpy()


def test_onnx_export_matches_pytorch_at_any_batch_size(tmp_path, model):
    path = tmp_path / "model.onnx"
    report = export_model(model, path, "onnx")
    assert report.outputs == ["embedding", "logits"] and report.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((5, model.crop_length)).astype(np.float32)
    for got, want in zip(session.run(None, {"audio": x}), reference(model, x), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    config = json.loads(meta["clmr"])
    assert config["tags"] == TAGS and config["sample_rate"] == 8000 and config["crop_length"] == 729


def test_torchscript_export_matches_pytorch(tmp_path, model):
    path = tmp_path / "model.pt"
    report = export_model(model, path, "torchscript", with_head=False)
    assert report.outputs == ["embedding"] and report.max_abs_diff < 1e-4
    extra = {"clmr.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    x = np.random.default_rng(2).standard_normal((7, model.crop_length)).astype(np.float32)
    with torch.no_grad():
        got = loaded(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, reference(model, x)[0], atol=1e-4)
    assert json.loads(extra["clmr.json"])["sample_rate"] == 8000


def test_export_command_reports_the_difference(tmp_path, model, capsys):
    ckpt = save_model(model, tmp_path / "m.safetensors")
    out = tmp_path / "m.ts"
    assert main(["export", str(ckpt), "--format", "torchscript", "--out", str(out), "--head", str(ckpt)]) == 0
    printed = capsys.readouterr().out
    assert "max |difference|" in printed and "OK" in printed and out.exists()
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(model, tmp_path / "x", "tflite")
    headless = CLMR(SampleCNN(width=1 / 16, n_blocks=5))
    with pytest.raises(ExportError, match="no head"):
        export_model(headless, tmp_path / "x.onnx", with_head=True)


def test_a_failed_export_leaves_no_file(tmp_path, model, monkeypatch):
    import clmr.inference.export as export

    path = tmp_path / "model.pt"
    path.write_bytes(b"an earlier good export")

    def broken(module, example, target, config):
        target.write_bytes(b"half")  # interrupted half-way
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export, "_export_torchscript", broken)
    with pytest.raises(ExportError, match="exporter crashed"):
        export_model(model, path, "torchscript")
    assert path.read_bytes() == b"an earlier good export"  # not replaced by a broken file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary left
    with pytest.raises(ExportError, match="is a folder"):
        export_model(model, tmp_path, "onnx")
