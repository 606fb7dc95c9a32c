"""Our checkpoint format and every reference layout; clear errors on bad files."""

import json
import pickle
import types
import zipfile
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
    # fc becomes a linear head: embed gives the features before fc, classify the reference logits
    assert sup.encoder.n_classes is None and sup.head.kind == "linear" and sup.head.n_classes == 7
    with torch.no_grad():
        assert sup.embed(x).shape == (3, sup.embedding_dim) == (3, 32)
        torch.testing.assert_close(sup.classify(x), supervised(x))


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
    with pytest.raises(CheckpointError, match=r"song.pt: not a checkpoint clmr can read \(not a torch zip"):
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


def test_pickled_objects_are_refused_not_executed(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(
        CheckpointError,
        match=r"evil.pt: not a checkpoint clmr can read \(it holds pickled Python objects such as builtins.print,",
    ) as err:
        load_model(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value)
    assert "executed!" not in capsys.readouterr().out
    torch.save({"x": Evil()}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)  # legacy format
    with pytest.raises(CheckpointError, match=r"old.pt: not a checkpoint clmr can read .*Python objects"):
        load_model(tmp_path / "old.pt")
    assert "executed!" not in capsys.readouterr().out


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


# --- regressions -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_store(make_store):
    """Ten generated 1 s pieces at 8 kHz with tags, preprocessed (for the `clmr pretrain` checkpoints)."""
    return make_store(10, 1.0, 0, min_length=729).path


@pytest.mark.parametrize("supervised", [False, True])
def test_pretrain_lightning_checkpoints_carry_the_clmr_config(tiny_store, tmp_path, supervised):
    from clmr.config import load_config
    from clmr.data import Store
    from clmr.train import pretrain

    overrides = {
        "model.width": 1 / 16,
        "model.n_blocks": 5,
        "batch_size": 4,
        "trainer.accelerator": "cpu",
        "trainer.devices": 1,
        "trainer.num_workers": 0,
        "trainer.max_epochs": 1,
        "augment.enabled": False,
        "supervised": supervised,
    }
    pretrain(tiny_store, tmp_path / "run", load_config("tiny", overrides=overrides), progress=False)
    exported = load_model(tmp_path / "run")
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = tmp_path / "run" / "checkpoints" / name
        assert "clmr_config" in torch.load(ckpt, map_location="cpu", weights_only=True)
        loaded = load_model(ckpt)
        assert loaded.sample_rate == 8000 and loaded.crop_length == 729
        assert loaded.config()["encoder"] == exported.config()["encoder"]
        x = torch.randn(2, 729)
        with torch.no_grad():
            torch.testing.assert_close(loaded.embed(x), exported.embed(x))
        if supervised:
            assert loaded.tags == Store(tiny_store).vocab and loaded.task == "multilabel"
            assert loaded.meta["objective"] == "supervised" and loaded.projector is None
            with torch.no_grad():
                torch.testing.assert_close(loaded.classify(x), exported.classify(x))
        else:
            assert loaded.meta["objective"] == "contrastive" and loaded.head is None
            assert loaded.meta["store"] == exported.meta["store"]
            torch.testing.assert_close(loaded.projector[2].weight, exported.projector[2].weight)


def test_reference_supervised_fc_becomes_a_head_and_zero_fc_is_dropped(tmp_path, model, x):
    supervised = SampleCNN(WIDTH, BLOCKS, n_classes=4).eval()
    state = {f"encoder.{k}": v for k, v in supervised.state_dict().items()}
    torch.save(state, tmp_path / "sup.pt")
    loaded = load_model(tmp_path / "sup.pt", tags=["a", "b", "c", "d"])
    assert loaded.embedding_dim == 32 and loaded.tags == ["a", "b", "c", "d"]
    with torch.no_grad():
        assert loaded.embed(x).shape == (3, 32)
        torch.testing.assert_close(loaded.classify(x), supervised(x))
    save_model(loaded, tmp_path / "sup.safetensors")  # and it stays so through our format
    again = load_model(tmp_path / "sup.safetensors")
    assert again.config()["encoder"]["n_classes"] is None and again.head.n_classes == 4
    # the reference's zero-filled fc carries no classifier: dropped
    state["encoder.fc.weight"] = torch.zeros(50, 32)
    state["encoder.fc.bias"] = torch.zeros(50)
    torch.save(state, tmp_path / "zero.pt")
    zero = load_model(tmp_path / "zero.pt")
    assert zero.head is None and zero.embed(x).shape == (3, 32)


def test_our_older_file_with_a_supervised_encoder_loads_with_a_head(tmp_path, x):
    from safetensors.torch import save_file

    supervised = SampleCNN(WIDTH, BLOCKS, n_classes=3).eval()
    config = CLMR(SampleCNN(WIDTH, BLOCKS), sample_rate=8000).config()
    config["encoder"]["n_classes"] = 3
    tensors = {f"encoder.{k}": v.contiguous() for k, v in supervised.state_dict().items()}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"clmr": json.dumps(config)})
    loaded = load_model(tmp_path / "old.safetensors")
    with torch.no_grad():
        assert loaded.embed(x).shape == (3, 32)
        torch.testing.assert_close(loaded.classify(x), supervised(x))


def test_head_trained_on_another_encoder_is_refused(tmp_path, model, x):
    other = _trained_like_model(seed=1)
    save_model(model, tmp_path / "base.safetensors")
    save_model(other, tmp_path / "other.safetensors")
    head_model = CLMR(
        model.encoder,
        head=Head("linear", 32, 2),
        sample_rate=8000,
        tags=["x", "y"],
        meta={"checkpoint": "base.safetensors", "checkpoint_sha256": "0" * 64},
    )
    save_model(head_model, tmp_path / "head.safetensors")
    assert load_model(tmp_path / "base.safetensors", head=tmp_path / "head.safetensors").tags == ["x", "y"]
    with pytest.raises(
        CheckpointError, match=r"head.safetensors: .*different encoder.*other.safetensors"
    ) as err:
        load_model(tmp_path / "other.safetensors", head=tmp_path / "head.safetensors")
    assert "on its own" in str(err.value)
    # a fine-tuned model (its encoder changed) used as a head on its base
    tuned = CLMR(other.encoder, head=Head("linear", 32, 2), sample_rate=8000, meta={"finetuned_from": "base"})
    save_model(tuned, tmp_path / "tuned.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"tuned.safetensors: .*whole fine-tuned model: load .*tuned.safetensors on its own",
    ):
        load_model(tmp_path / "base.safetensors", head=tmp_path / "tuned.safetensors")
    # a reference fine-tuning file that holds its frozen encoder is checked the same way
    ref = {f"encoder.{k}": v for k, v in other.encoder.state_dict().items()}
    ref.update({f"model.{k}": v for k, v in Head("linear", 32, 2).state_dict().items()})
    torch.save(ref, tmp_path / "ref_head.pt")
    with pytest.raises(CheckpointError, match="ref_head.pt: .*different encoder"):
        load_model(tmp_path / "base.safetensors", head=tmp_path / "ref_head.pt")


@pytest.mark.parametrize(
    ("width", "n_blocks"), [(0.1, 5), (0.3, 5), (0.05, 5), (0.25, 7), (1.0, 9), (0.07, 9)]
)
def test_width_is_inferred_from_every_block(tmp_path, width, n_blocks):
    encoder = SampleCNN(width, n_blocks).eval()
    torch.save({f"encoder.{k}": v for k, v in encoder.state_dict().items()}, tmp_path / "w.pt")
    loaded = load_model(tmp_path / "w.pt")
    assert loaded.encoder.width == pytest.approx(width) and loaded.encoder.n_blocks == n_blocks
    x = torch.randn(2, encoder.input_length)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), encoder(x))


def test_lightning_1x_checkpoint_with_callback_classes_and_attribute_dict(tmp_path, model, x):
    """Lightning 1.0-1.4 pickles callback classes as keys of "callbacks" and an AttributeDict."""

    def stand_in(module, name, base=object):
        cls = type(name, (base,), {})
        cls.__module__, cls.__qualname__ = module, name
        return cls

    checkpoint_cls = stand_in("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
    early_cls = stand_in("pytorch_lightning.callbacks.early_stopping", "EarlyStopping")
    custom_cls = stand_in(
        "pytorch_lightning.callbacks.gradient_accumulation_scheduler", "GradientAccumulationScheduler"
    )
    attribute_dict = stand_in("pytorch_lightning.utilities.parsing", "AttributeDict", dict)
    state = {f"model.encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    state.update({f"model.projector.{k}": v for k, v in model.projector.state_dict().items()})
    hparams = attribute_dict()
    hparams.update(batch_size=48, temperature=0.5)
    ckpt = {
        "pytorch-lightning_version": "1.2.10",
        "epoch": 10,
        "state_dict": state,
        "callbacks": {
            checkpoint_cls: {"best_model_score": torch.tensor(1.5), "best_model_path": "x.ckpt"},
            early_cls: {"wait_count": 0, "patience": 3},
            custom_cls: {},
        },
        "hyper_parameters": hparams,
    }

    stand_ins = (checkpoint_cls, early_cls, custom_cls, attribute_dict)

    class Pickler(pickle._Pickler):  # writes the stand-ins under their Lightning names, unimported
        def save_global(self, obj, name=None):
            if obj not in stand_ins:
                return super().save_global(obj, name)
            self.write(pickle.GLOBAL + f"{obj.__module__}\n{obj.__qualname__}\n".encode())
            self.memoize(obj)

    torch.save(
        ckpt, tmp_path / "pl1.ckpt", pickle_module=types.SimpleNamespace(Pickler=Pickler, __name__="pickle")
    )
    with zipfile.ZipFile(tmp_path / "pl1.ckpt") as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"pytorch_lightning.callbacks.model_checkpoint" in data
    assert b"pytorch_lightning.utilities.parsing" in data
    _same(model, load_model(tmp_path / "pl1.ckpt"), x)


def test_empty_and_truncated_old_format_files(tmp_path, model, capsys):
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"e.pt: not a checkpoint clmr can read \(an empty file\)"):
        load_model(tmp_path / "e.pt")
    assert cli(["info", str(tmp_path / "e.pt")]) == 2
    assert "empty file" in capsys.readouterr().err
    state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    torch.save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "old.pt").read_bytes()
    for cut in (3, len(data) // 2, len(data) - 5):
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"cut.pt: .*truncated"):
            load_model(tmp_path / "cut.pt")


def test_projector_input_must_match_the_encoder(tmp_path, model):
    state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    state["projector.0.weight"] = torch.zeros(128, 99)
    state["projector.2.weight"] = torch.zeros(64, 128)
    torch.save(state, tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match=r"p.pt: key 'projector.0.weight' has shape \(128, 99\).*32-d"):
        load_model(tmp_path / "p.pt")
    state["projector.0.weight"] = torch.zeros(128, 32)
    del state["projector.2.weight"]
    torch.save(state, tmp_path / "p2.pt")
    with pytest.raises(CheckpointError, match=r"p2.pt: missing key 'projector.2.weight'"):
        load_model(tmp_path / "p2.pt")


@pytest.mark.parametrize("rate", [0, -1, 384_001, 2**70])
def test_sample_rate_must_be_positive_and_sane(tmp_path, model, capsys, rate):
    """2^70 Hz once reached soxr (a segfault); every way in refuses it before any file is read or written."""
    state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    torch.save(state, tmp_path / "ref.pt")
    with pytest.raises(SystemExit):
        cli(["convert", str(tmp_path / "ref.pt"), str(tmp_path / "o"), "--sample-rate", str(rate)])
    assert "positive number of Hz up to 384,000" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()
    with pytest.raises(clmr.errors.ClmrError, match=r"sample rate .* must be a whole number in 1..384,000"):
        load_model(tmp_path / "ref.pt", sample_rate=rate)
    with pytest.raises(ValueError, match="sample_rate must be a whole number in 1..384,000"):
        CLMR(model.encoder, sample_rate=rate)
    config = model.config()
    config["sample_rate"] = rate
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={"clmr": json.dumps(config)})
    with pytest.raises(CheckpointError, match="bad.safetensors: its clmr config's sample_rate must be"):
        load_model(tmp_path / "bad.safetensors")


@pytest.mark.filterwarnings("ignore")  # torch.jit.trace deprecation and tracer warnings
def test_other_kinds_of_files_are_one_line_errors(tmp_path, model):
    encoder = SampleCNN(WIDTH, BLOCKS).eval()
    torch.jit.save(torch.jit.trace(encoder, torch.randn(1, encoder.input_length)), str(tmp_path / "model.pt"))
    (tmp_path / "t.parquet").write_bytes(b"PAR1" + b"\0" * 100 + b"PAR1")
    (tmp_path / "c.json").write_text(json.dumps({"format": "clmr", "weights": [1, 2, 3]}))
    (tmp_path / "m.bin").write_bytes(b"\x08\x08\x12\x07pytorch\x1a\x052.3.0" + b"\0" * 50)  # ONNX-like
    (tmp_path / "x.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"not json" * 4)
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    for name in ("model.pt", "t.parquet", "c.json", "m.bin", "x.safetensors", "list.pt"):
        with pytest.raises(CheckpointError, match=rf"{name}: not a checkpoint clmr can read \(") as err:
            load_model(tmp_path / name)
        assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_model(tmp_path / "model.pt")


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_named_and_never_run(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    torch.save({"x": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt: .*holds pickled Python objects such as \w+\.system"):
        load_model(path)
    torch.save(SampleCNN(WIDTH, BLOCKS).state_dict(), tmp_path / "base.pt")
    with pytest.raises(CheckpointError, match="evil.pt: .*pickled Python objects"):  # as a head file too
        load_model(tmp_path / "base.pt", head=path)
    assert not marker.exists()


# --- release 1.0 (clmr_checkpoint_1550.pt, finetuner_checkpoint_20.pt) -------------------------


class _SampleCNN59049(torch.nn.Module):
    """Release 1.0's encoder as the reference's modules/sample_cnn_59049.py (tag 1.0) builds it: blocks
    conv1..conv11 (`.0` conv, `.1` batchnorm), `fc` replaced by Identity (no keys); `channels` are
    conv1..conv10's outputs (the reference's, or a tiny variant with fewer blocks)."""

    def __init__(self, channels=(128, 128, 128, 256, 256, 256, 256, 256, 256, 512)):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Sequential(
            nn.Conv1d(1, channels[0], 3, stride=3, padding=0), nn.BatchNorm1d(channels[0]), nn.ReLU()
        )
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True), start=2):
            block = [
                nn.Conv1d(c_in, c_out, 3, stride=1, padding=1),
                nn.BatchNorm1d(c_out),
                nn.ReLU(),
                nn.MaxPool1d(3, stride=3),
            ]
            setattr(self, f"conv{i}", nn.Sequential(*block))
        last, self.n = channels[-1], len(channels) + 1
        setattr(
            self,
            f"conv{self.n}",
            nn.Sequential(nn.Conv1d(last, last, 3, stride=1, padding=1), nn.BatchNorm1d(last), nn.ReLU()),
        )

    def forward(self, x):
        out = x.unsqueeze(1)
        for i in range(1, self.n + 1):
            out = getattr(self, f"conv{i}")(out)
        return out.reshape(x.shape[0], -1)


def _release_1_0(channels, projection_dim=128, seed=0):
    """The 1.0 SimCLR module (modules/simclr.py: `encoder`, `projector` of 2 layers) with random weights and
    batchnorm statistics, as main.py saved it (`model.state_dict()`, pre-1.6 torch file)."""
    torch.manual_seed(seed)
    simclr = torch.nn.Module()
    simclr.encoder = _SampleCNN59049(channels)
    dim = channels[-1]
    simclr.projector = torch.nn.Sequential(
        torch.nn.Linear(dim, dim, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(dim, projection_dim, bias=False),
    )
    for name, tensor in simclr.state_dict().items():
        if name.endswith("running_var"):
            tensor.uniform_(0.5, 2.0)
        elif tensor.is_floating_point():
            tensor.normal_(0, 0.1)
    return simclr.eval()


TINY_1_0 = (8, 8, 8, 16, 16, 32)  # conv1..conv6 outputs of a width-1/16, 5-block variant (conv7: 32)
FULL_1_0 = (128, 128, 128, 256, 256, 256, 256, 256, 256, 512)  # the released model's


def _save_release_1_0(tmp_path, channels):
    """clmr_checkpoint_1550.pt and finetuner_checkpoint_20.pt (1.0-l linear_evaluation.py: a Sequential
    holding one Linear) in their exact layouts; returns the reference modules."""
    ref = _release_1_0(channels)
    keys = list(ref.state_dict())
    assert keys[0] == "encoder.conv1.0.weight" and f"encoder.conv{len(channels) + 1}.1.running_var" in keys
    assert keys[-2:] == ["projector.0.weight", "projector.2.weight"]
    torch.save(ref.state_dict(), tmp_path / "clmr_checkpoint_1550.pt", _use_new_zipfile_serialization=False)
    finetuner = torch.nn.Sequential(torch.nn.Linear(channels[-1], 50)).eval()
    assert list(finetuner.state_dict()) == ["0.weight", "0.bias"]
    torch.save(
        finetuner.state_dict(), tmp_path / "finetuner_checkpoint_20.pt", _use_new_zipfile_serialization=False
    )
    return ref, finetuner


@pytest.mark.parametrize("channels", [TINY_1_0, FULL_1_0])
def test_release_1_0_checkpoint_and_finetuner_load(tmp_path, channels):
    ref, finetuner = _save_release_1_0(tmp_path, channels)
    loaded = load_model(tmp_path / "clmr_checkpoint_1550.pt")
    assert loaded.encoder.n_blocks == len(channels) - 1
    assert loaded.encoder.width == (1.0 if channels == FULL_1_0 else WIDTH)
    assert loaded.projector.dims == (channels[-1], channels[-1], 128) and loaded.sample_rate == 22050
    torch.manual_seed(1)
    x = torch.randn(1, 3 ** len(channels))
    tags = [f"tag{i}" for i in range(50)]
    tagger = load_model(
        tmp_path / "clmr_checkpoint_1550.pt", head=tmp_path / "finetuner_checkpoint_20.pt", tags=tags
    )
    with torch.no_grad():
        h = ref.encoder(x)
        torch.testing.assert_close(loaded.embed(x), h)
        torch.testing.assert_close(loaded.project(h), ref.projector(h))
        torch.testing.assert_close(tagger.head(h), finetuner(h))
    assert tagger.tags == tags


def test_release_1_0_convert_and_info(tmp_path, capsys):
    ref, finetuner = _save_release_1_0(tmp_path, TINY_1_0)
    out = tmp_path / "clmr_1.0.safetensors"
    src, head = tmp_path / "clmr_checkpoint_1550.pt", tmp_path / "finetuner_checkpoint_20.pt"
    assert cli(["convert", str(src), str(out), "--head", str(head)]) == 0
    converted = load_model(out)
    assert converted.meta["converted_from"] == "clmr_checkpoint_1550.pt"
    x = torch.randn(2, converted.crop_length)
    with torch.no_grad():
        torch.testing.assert_close(converted.classify(x), finetuner(ref.encoder(x)))
    capsys.readouterr()
    assert cli(["info", str(src), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["projector"] == [32, 32, 128]


def test_release_1_0_errors_name_the_key_as_the_file_spells_it(tmp_path):
    state = _release_1_0(TINY_1_0).state_dict()
    del state["encoder.conv4.1.running_mean"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing.pt: missing key 'encoder.conv4.1.running_mean'"):
        load_model(tmp_path / "missing.pt")
    state = _release_1_0(TINY_1_0).state_dict()
    state["encoder.conv3.0.weight"] = torch.zeros(8, 8, 5)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"'encoder.conv3.0.weight' has shape \(8, 8, 5\)"):
        load_model(tmp_path / "shape.pt")


def test_non_finite_weights_are_refused_naming_the_key(tmp_path, model):
    state = {f"encoder.{k}": v.clone() for k, v in model.encoder.state_dict().items()}
    state["encoder.sequential.2.0.weight"][0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(
        CheckpointError, match=r"nan.pt: key 'encoder.sequential.2.0.weight' holds NaN or infinite"
    ):
        load_model(tmp_path / "nan.pt")
    model.projector[2].weight.data[0, 0] = float("inf")
    save_model(model, tmp_path / "inf.safetensors")
    with pytest.raises(
        CheckpointError, match=r"inf.safetensors: key 'projector.2.weight' holds NaN or infinite"
    ):
        load_model(tmp_path / "inf.safetensors")


def test_training_checkpoint_contract_weights_under_model(tmp_path, model, x):
    """A `clmr pretrain` checkpoint: `clmr_config` (JSON of CLMR.config()) and the weights under "model"
    (`encoder.*`, `projector.*`; the online probe `probe.*` and other entries are not part of the model)."""
    weights = {k: v for k, v in model.state_dict().items()}
    weights.update({"probe.weight": torch.zeros(3, 32), "probe.bias": torch.zeros(3)})
    config = json.dumps(model.config())
    torch.save({"clmr_config": config, "model": weights, "optimizer": {"lr": 3e-4}}, tmp_path / "step.pt")
    loaded = load_model(tmp_path / "step.pt")
    assert loaded.sample_rate == 8000 and loaded.config() == model.config()
    _same(model, loaded, x)
    torch.save({"clmr_config": "{not json", "model": weights}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad.pt: its 'clmr_config' is not valid JSON"):
        load_model(tmp_path / "bad.pt")


def test_the_allow_list_is_fixed(tmp_path, model):
    """A Lightning 1.x checkpoint that names a callback class outside the allow-list (a user's own) is
    refused, naming it; nothing is imported or built."""
    cls = type("PlotSpectogramCallback", (), {})
    cls.__module__ = "clmr.modules.callbacks"

    class Pickler(pickle._Pickler):
        def save_global(self, obj, name=None):
            if obj is not cls:
                return super().save_global(obj, name)
            self.write(pickle.GLOBAL + b"clmr.modules.callbacks\nPlotSpectogramCallback\n")
            self.memoize(obj)

    state = {f"model.encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    ckpt = {"pytorch-lightning_version": "1.2.10", "state_dict": state, "callbacks": {cls: {"n": 1}}}
    pickler = types.SimpleNamespace(Pickler=Pickler, __name__="pickle")
    torch.save(ckpt, tmp_path / "pl.ckpt", pickle_module=pickler)
    with pytest.raises(
        CheckpointError, match=r"pl.ckpt: .*such as clmr.modules.callbacks.PlotSpectogramCallback"
    ):
        load_model(tmp_path / "pl.ckpt")
    # and what it allows builds nothing that runs code: dict, argparse.Namespace, empty stand-in classes
    import argparse

    from clmr.models.reference import ALLOWED_GLOBALS

    for entry in ALLOWED_GLOBALS:
        obj, name = entry if isinstance(entry, tuple) else (entry, f"{entry.__module__}.{entry.__qualname__}")
        assert name.startswith(("pytorch_lightning.", "lightning.", "lightning_fabric.", "argparse."))
        stand_in = all(not callable(v) for c in obj.__mro__[:-1] for v in vars(c).values())
        assert obj in (dict, argparse.Namespace) or stand_in, name


def _with_config(tmp_path, model, name, edit=None, tensors=None, raw=None):
    """`model` saved as our format with its JSON config edited by `edit` (or replaced by `raw` text)."""
    from safetensors.torch import save_file

    config = model.config()
    if edit is not None:
        edit(config)
    tensors = tensors if tensors is not None else {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / name
    save_file(tensors, str(path), metadata={"clmr": raw if raw is not None else json.dumps(config)})
    return path


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["encoder"].update(width=float("inf")), r"encoder.width must be a finite number"),
        (lambda c: c["encoder"].update(width=1000), r"encoder.width must be a finite number in \(0, 8\]"),
        (lambda c: c["encoder"].update(width="wide"), r"encoder.width must be"),
        (lambda c: c["encoder"].update(n_blocks=40), r"encoder.n_blocks must be a whole number in 1..9"),
        (lambda c: c["encoder"].pop("n_blocks"), r"encoder.n_blocks is missing"),
        (lambda c: c["encoder"].update(n_classes=-5), r"encoder.n_classes must be a whole number"),
        (lambda c: c.update(encoder=[1, 2]), r"encoder must be a JSON object, got \[1, 2\]"),
        (lambda c: c.pop("encoder"), r"encoder is missing"),
        (
            lambda c: c.update(projector=[32, 2**40, 16]),
            r"projector.hidden must be a whole number in 1..8,192",
        ),
        (lambda c: c.update(projector=[32, 16]), r"projector must be null or 3 sizes"),
        (lambda c: c.update(projector="big"), r"projector must be null or 3 sizes"),
        (
            lambda c: c.update(head={"kind": "linear", "in_dim": 32, "n_classes": -1}),
            r"head.n_classes must be",
        ),
        (lambda c: c.update(head={"kind": "linear", "n_classes": 2}), r"head.in_dim is missing"),
        (lambda c: c.update(head=7), r"head must be a JSON object or null"),
        (lambda c: c.update(sample_rate=2**70), r"sample_rate must be a whole number in 1..384,000"),
        (lambda c: c.update(sample_rate=float("nan")), r"sample_rate must be a whole number"),
        (lambda c: c.pop("sample_rate"), r"sample_rate is missing"),
        (lambda c: c.update(tags=[1, 2]), r"tags must be a list of strings"),
        (lambda c: c.update(task={"a": 1}), r"task must be one of"),
        (lambda c: c.update(meta="x"), r"meta must be a JSON object"),
        (lambda c: c.update(crop_length=59049), r"crop_length is 59049, expected 729"),
        (lambda c: c.update(embedding_dim=512.0), r"embedding_dim is 512.0, expected 32"),
        (lambda c: c.update(version=2), r"version is 2, expected 1"),
        (lambda c: c.update(format="other"), r"format is 'other', expected 'clmr'"),
    ],
)
def test_every_config_number_is_checked_naming_the_file_and_key(tmp_path, model, edit, match):
    path = _with_config(tmp_path, model, "bad.safetensors", edit)
    with pytest.raises(CheckpointError, match=rf"^{tmp_path}/bad.safetensors: its clmr config's {match}"):
        load_model(path)


def test_tags_must_fit_the_head(tmp_path, model):
    with_head = CLMR(
        model.encoder, model.projector, Head("linear", 32, 3), sample_rate=8000, tags=list("abc")
    )
    path = _with_config(tmp_path, with_head, "tags.safetensors", lambda c: c.update(tags=["a"]))
    with pytest.raises(
        CheckpointError, match=r"tags.safetensors: its clmr config's tags has 1 tag names for a head"
    ):
        load_model(path)


def test_deeply_nested_or_huge_config_json_is_refused_before_parsing(tmp_path, model):
    """json.loads recursion on 100,000 nested arrays raises RecursionError (or worse): refused by a scan."""
    deep = json.dumps(model.config())[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = _with_config(tmp_path, model, "deep.safetensors", raw=deep)
    with pytest.raises(
        CheckpointError, match=r"deep.safetensors: its 'clmr' metadata is nested deeper than 16"
    ):
        load_model(path)
    nested_in_strings = model.config()
    nested_in_strings["meta"] = {"note": "[" * 1000 + "{" * 1000}  # brackets inside strings do not nest
    ok = _with_config(tmp_path, model, "ok.safetensors", raw=json.dumps(nested_in_strings))
    assert load_model(ok).meta["note"].startswith("[[[")
    huge = model.config()
    huge["meta"] = {"blob": "x" * (9 << 20)}
    path = _with_config(tmp_path, model, "huge.safetensors", raw=json.dumps(huge))
    with pytest.raises(
        CheckpointError,
        match=r"huge.safetensors: its 'clmr' metadata is 9,437,\d+ characters, more than 8,388,608",
    ):
        load_model(path)
    weights = {k: v for k, v in model.state_dict().items()}
    torch.save({"clmr_config": deep, "model": weights}, tmp_path / "deep.pt")
    with pytest.raises(CheckpointError, match=r"deep.pt: its 'clmr_config' is nested deeper"):
        load_model(tmp_path / "deep.pt")


@pytest.mark.parametrize(
    ("key", "dtype", "match"),
    [
        ("encoder.sequential.1.0.weight", torch.int32, "has dtype int32, expected floating point"),
        ("projector.0.weight", torch.bool, "has dtype bool, expected floating point"),
        ("encoder.sequential.0.1.running_var", torch.uint8, "has dtype uint8, expected floating point"),
        (
            "encoder.sequential.0.1.num_batches_tracked",
            torch.float32,
            "has dtype float32, expected an integer",
        ),
    ],
)
def test_weights_of_the_wrong_dtype_are_refused_naming_the_key(tmp_path, model, key, dtype, match):
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors[key] = tensors[key].to(dtype)
    path = _with_config(tmp_path, model, "dtype.safetensors", tensors=tensors)
    with pytest.raises(CheckpointError, match=rf"dtype.safetensors: key '{key}' {match}"):
        load_model(path)
    torch.save(tensors, tmp_path / "dtype.pt")  # a reference-layout file is held to the same rule
    with pytest.raises(CheckpointError, match=rf"dtype.pt: key '{key}' {match}"):
        load_model(tmp_path / "dtype.pt")


def test_half_precision_weights_load_as_float32(tmp_path, model, x):
    tensors = {
        k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()
    }
    loaded = load_model(_with_config(tmp_path, model, "half.safetensors", tensors=tensors))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), model.half().float().embed(x))


def test_reference_files_with_out_of_range_sizes_name_the_file(tmp_path, model):
    """Reference files record no config: the sizes read from their tensors meet the same bounds."""
    torch.save({"model.0.weight": torch.zeros(2, 8193), "model.0.bias": torch.zeros(2)}, tmp_path / "wide.pt")
    with pytest.raises(
        CheckpointError, match=r"wide.pt: its head's in_dim must be a whole number in 1..8,192"
    ):
        load_model(save_model(model, tmp_path / "base.safetensors"), head=tmp_path / "wide.pt")
    state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    state.update({"projector.0.weight": torch.zeros(8193, 32), "projector.2.weight": torch.zeros(4, 8193)})
    torch.save(state, tmp_path / "proj.pt")
    with pytest.raises(CheckpointError, match=r"proj.pt: its projector's hidden must be a whole number"):
        load_model(tmp_path / "proj.pt")


def test_tags_given_to_load_model_are_strings_one_per_output(tmp_path, model):
    with_head = CLMR(model.encoder, model.projector, Head("linear", 32, 3), sample_rate=8000)
    path = save_model(with_head, tmp_path / "head.safetensors")
    assert load_model(path, tags=["a", "b", "c"]).tags == ["a", "b", "c"]
    with pytest.raises(clmr.errors.ClmrError, match=r"^tags has 2 tag names for a head with 3 outputs"):
        load_model(path, tags=["a", "b"])
    with pytest.raises(clmr.errors.ClmrError, match=r"^tags must be a list of strings, got \['a', 2, 'c'\]"):
        load_model(path, tags=["a", 2, "c"])
