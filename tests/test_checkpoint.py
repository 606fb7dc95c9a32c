"""Our checkpoint format and every reference layout; clear errors on bad files."""

import json
from collections import OrderedDict

import pytest
import torch

import clmr
from clmr.cli import main as cli
from clmr.models import CLMR, CheckpointError, Head, Projector, SampleCNN, load_model, save_model

WIDTH, BLOCKS = 1 / 16, 5


def _trained_like_model(seed=0):
    """A tiny model with non-default weights and BatchNorm statistics."""
    torch.manual_seed(seed)
    model = CLMR(SampleCNN(WIDTH, BLOCKS), Projector(32, 32, 16), sample_rate=8000)
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    model.train()
    with torch.no_grad():
        model.embed(torch.randn(8, model.crop_length))  # moves running statistics
    return model.eval()


@pytest.fixture
def model():
    return _trained_like_model()


@pytest.fixture
def x():
    torch.manual_seed(123)
    return torch.randn(3, 3 ** (BLOCKS + 1))


def _same(a, b, x):
    with torch.no_grad():
        torch.testing.assert_close(a.eval().embed(x), b.eval().embed(x))


def test_our_format_roundtrip_with_metadata(tmp_path, model, x):
    model.tags, model.meta = None, {"store": "demo"}
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = clmr.load_model(path)
    _same(model, loaded, x)
    assert loaded.sample_rate == 8000 and loaded.meta == {"store": "demo"}
    torch.testing.assert_close(loaded.projector[0].weight, model.projector[0].weight)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_run_directory_loads_its_model(tmp_path, model, x):
    save_model(model, tmp_path / "model.safetensors")
    _same(model, load_model(tmp_path), x)
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(CheckpointError, match="not a clmr run directory"):
        load_model(tmp_path / "empty-run")


def test_reference_plain_pt_state_dict(tmp_path, model, x):
    state = OrderedDict({f"encoder.{k}": v for k, v in model.encoder.state_dict().items()})
    state.update({f"projector.{k}": v for k, v in model.projector.state_dict().items()})
    torch.save(state, tmp_path / "clmr_checkpoint.pt")
    loaded = load_model(tmp_path / "clmr_checkpoint.pt", sample_rate=8000)
    _same(model, loaded, x)
    torch.testing.assert_close(loaded.projector[2].weight, model.projector[2].weight)


def test_reference_lightning_ckpt_with_hyperparameters(tmp_path, model, x):
    import argparse

    state = {f"model.encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    state.update({f"model.projector.{k}": v for k, v in model.projector.state_dict().items()})
    ckpt = {
        "pytorch-lightning_version": "1.0.8",
        "epoch": 9999,
        "state_dict": state,
        "hyper_parameters": argparse.Namespace(batch_size=96, temperature=0.5),
    }
    torch.save(ckpt, tmp_path / "epoch=9999.ckpt")
    _same(model, load_model(tmp_path / "epoch=9999.ckpt"), x)


def test_bare_encoder_dict_and_supervised_encoder(tmp_path, model, x):
    torch.save(model.encoder.state_dict(), tmp_path / "encoder.pt")
    loaded = load_model(tmp_path / "encoder.pt")
    assert loaded.projector is None
    _same(model, loaded, x)
    supervised = SampleCNN(WIDTH, BLOCKS, n_classes=7).eval()
    torch.save(supervised.state_dict(), tmp_path / "supervised.pt")
    sup = load_model(tmp_path / "supervised.pt")
    assert sup.encoder.n_classes == 7
    with torch.no_grad():
        torch.testing.assert_close(sup.encoder(x), supervised(x))


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("lightning", [False, True])
def test_reference_finetuned_heads(tmp_path, model, x, kind, lightning):
    torch.save({f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}, tmp_path / "enc.pt")
    head = Head(kind, 32, 5).eval()
    state = dict(head.state_dict())  # model.0.weight ...
    if lightning:
        state = {
            "pytorch-lightning_version": "1.0.8",
            "state_dict": {f"model.{k}": v for k, v in state.items()},
        }
    torch.save(state, tmp_path / "head.pt")
    tags = ["a", "b", "c", "d", "e"]
    loaded = load_model(tmp_path / "enc.pt", head=tmp_path / "head.pt", tags=tags)
    assert loaded.head.kind == kind and loaded.tags == tags
    with torch.no_grad():
        torch.testing.assert_close(loaded.classify(x), head(model.embed(x)))


def test_our_head_file_brings_its_tags(tmp_path, model, x):
    with_head = CLMR(
        model.encoder, head=Head("linear", 32, 2), sample_rate=8000, tags=["rock", "jazz"], task="multiclass"
    )
    save_model(with_head, tmp_path / "head.safetensors")
    save_model(model, tmp_path / "enc.safetensors")
    loaded = load_model(tmp_path / "enc.safetensors", head=tmp_path / "head.safetensors")
    assert loaded.tags == ["rock", "jazz"] and loaded.task == "multiclass"


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "song.pt"
    bad.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=r"song.pt: not a PyTorch checkpoint \(neither a torch zip"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "missing.pt")


def test_truncated_files(tmp_path, model):
    torch.save({f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}, tmp_path / "full.pt")
    save_model(model, tmp_path / "full.safetensors")
    for name in ("full.pt", "full.safetensors"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut-{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=f"cut-{name}"):
            load_model(cut)


def test_missing_and_misshaped_keys_name_the_first_bad_key(tmp_path, model):
    state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    del state["encoder.sequential.3.1.running_mean"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(
        CheckpointError, match=r"missing.pt: missing key 'encoder.sequential.3.1.running_mean'"
    ):
        load_model(tmp_path / "missing.pt")
    state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    state["encoder.sequential.2.0.weight"] = torch.zeros(8, 8, 5)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"'encoder.sequential.2.0.weight' has shape \(8, 8, 5\)"):
        load_model(tmp_path / "shape.pt")
    torch.save({"optimizer": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="sequential.0.0.weight"):
        load_model(tmp_path / "other.pt")


def test_pickled_objects_are_refused_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: holds pickled Python objects such as print ") as err:
        load_model(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(err.value)


def test_cli_convert_and_info(tmp_path, model, x, capsys):
    state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    state.update({f"projector.{k}": v for k, v in model.projector.state_dict().items()})
    torch.save(state, tmp_path / "ref.pt")
    assert (
        cli(
            ["convert", str(tmp_path / "ref.pt"), str(tmp_path / "ours.safetensors"), "--sample-rate", "8000"]
        )
        == 0
    )
    _same(model, load_model(tmp_path / "ours.safetensors"), x)
    assert cli(["convert", str(tmp_path / "ref.pt"), str(tmp_path / "ours.safetensors")]) == 2  # exists
    capsys.readouterr()
    assert cli(["info", str(tmp_path / "ours.safetensors"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sample_rate"] == 8000 and info["encoder"]["n_blocks"] == BLOCKS
    assert info["parameters"]["encoder"] == sum(p.numel() for p in model.encoder.parameters())
    assert cli(["info", str(tmp_path / "ours.safetensors")]) == 0
    assert "8000 Hz" in capsys.readouterr().out
    (tmp_path / "junk.ckpt").write_text("junk")
    assert cli(["info", str(tmp_path / "junk.ckpt")]) == 2
    assert "junk.ckpt" in capsys.readouterr().err
