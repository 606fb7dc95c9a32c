"""SampleCNN, projector, heads and the CLMR module."""

import pytest
import torch

import clmr.errors
from clmr import CLMR, SampleCNN
from clmr.models import Head, Projector


def test_reference_samplecnn_shape_and_parameter_count():
    model = SampleCNN()
    assert model.input_length == 59049
    assert sum(p.numel() for p in model.parameters()) == 2_368_512  # DESIGN: 2.37 M
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 59049)).shape == (2, 512)
        assert model(torch.randn(2, 1, 59049)).shape == (2, 512)


def test_reference_key_names():
    keys = set(SampleCNN().state_dict())
    assert "sequential.0.0.weight" in keys and "sequential.10.1.running_var" in keys
    assert "sequential.9.0.weight" in keys and not any(k.startswith("fc.") for k in keys)
    assert SampleCNN().state_dict()["sequential.9.0.weight"].shape == (512, 256, 3)
    supervised = SampleCNN(n_classes=50).state_dict()
    assert supervised["fc.weight"].shape == (50, 512)


@pytest.mark.parametrize(("width", "n_blocks"), [(0.25, 7), (1 / 16, 5), (0.5, 3)])
def test_tiny_variants_build_for_shorter_inputs(width, n_blocks):
    model = SampleCNN(width=width, n_blocks=n_blocks).eval()
    assert model.input_length == 3 ** (n_blocks + 1)
    with torch.no_grad():
        out = model(torch.randn(3, model.input_length))
    assert out.shape == (3, round(512 * width))


def test_wrong_input_length_is_a_clear_error():
    model = SampleCNN(width=1 / 16, n_blocks=5)
    with pytest.raises(ValueError, match="729"):
        model(torch.randn(2, 1000))


def test_pytorch_default_init_and_the_kaiming_option():
    torch.manual_seed(0)
    conv = SampleCNN().sequential[5][0]
    fan_in = conv.in_channels * conv.kernel_size[0]
    for bound in ((1 / fan_in) ** 0.5, (6 / fan_in) ** 0.5):  # PyTorch's (the reference's), kaiming-uniform
        assert 0.9 * bound < conv.weight.abs().max() <= bound
        conv = SampleCNN().kaiming_init().sequential[5][0]


def test_projector_and_heads():
    proj = Projector()
    assert [k for k in proj.state_dict()] == ["0.weight", "2.weight"]
    assert proj(torch.randn(4, 512)).shape == (4, 64)
    assert set(Head("linear", 512, 50).state_dict()) == {"model.0.weight", "model.0.bias"}
    assert set(Head("mlp", 512, 50).state_dict()) == {
        "model.0.weight",
        "model.0.bias",
        "model.2.weight",
        "model.2.bias",
    }
    assert "model.3.weight" in Head("marble", 512, 10).state_dict()
    with pytest.raises(ValueError, match="kind must be one of linear, mlp, marble"):
        Head("transformer", 512, 10)


def test_clmr_module_embed_project_classify():
    encoder = SampleCNN(width=1 / 16, n_blocks=5)
    model = CLMR(
        encoder, Projector(32, 32, 16), Head("linear", 32, 3), sample_rate=8000, tags=["a", "b", "c"]
    ).eval()
    x = torch.randn(2, model.crop_length)
    h = model.embed(x)
    assert h.shape == (2, 32)
    assert model.project(h).shape == (2, 16)
    assert model.classify(x).shape == (2, 3)
    rebuilt = CLMR.from_config(model.config())
    assert rebuilt.config() == model.config()
    with pytest.raises(ValueError, match="tag names"):
        CLMR(encoder, head=Head("linear", 32, 3), tags=["only-one"])


def test_light_modules_do_not_import_torch():
    """Preprocessing workers and `clmr download` import clmr.audio / clmr.data without torch."""
    import subprocess
    import sys

    code = "import sys, clmr, clmr.audio, clmr.data; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_top_level_names_load_on_demand():
    import clmr

    assert clmr.SampleCNN is SampleCNN and callable(clmr.load_model) and callable(clmr.losses.nt_xent)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        clmr.nope  # noqa: B018


def test_clmr_splits_a_supervised_encoder_into_features_and_a_linear_head():
    supervised = SampleCNN(width=1 / 16, n_blocks=5, n_classes=6).eval()
    model = CLMR(supervised, sample_rate=8000).eval()
    x = torch.randn(2, model.crop_length)
    with torch.no_grad():
        assert model.embed(x).shape == (2, model.embedding_dim) == (2, 32)
        torch.testing.assert_close(model.classify(x), supervised(x))
    assert model.config()["encoder"]["n_classes"] is None and model.config()["head"]["n_classes"] == 6
    with pytest.raises(ValueError, match=r"sample_rate must be a whole number in 1\.\.384,000"):
        CLMR(SampleCNN(width=1 / 16, n_blocks=5), sample_rate=0)


@pytest.mark.parametrize("width", [0.05, 0.1, 0.3, 1 / 16, 0.25, 1.0, 2.0])
@pytest.mark.parametrize("n_blocks", [3, 5, 9])
def test_infer_width_agrees_with_every_block(width, n_blocks):
    from clmr.models.samplecnn import _block_channels, infer_width

    channels = _block_channels(width, n_blocks)
    found = infer_width(channels, n_blocks)
    assert found is not None and _block_channels(found, n_blocks) == channels
    assert infer_width([8, 8, 8, 16, 99, 32], 5) is None  # no width gives these


@pytest.mark.parametrize(("width", "n_blocks"), [(1 / 16, 5), (0.25, 3), (1.0, 9)])
def test_encoder_shape_reads_width_and_depth_from_the_conv_weights(width, n_blocks, tmp_path):
    from clmr.models import CheckpointError
    from clmr.models.reference import encoder_shape

    state = SampleCNN(width=width, n_blocks=n_blocks).state_dict()
    assert encoder_shape(state, tmp_path, str) == (width, n_blocks)
    last = f"sequential.{n_blocks + 1}.0.weight"
    bad = dict(state, **{last: torch.zeros(3, 3, 3)})
    with pytest.raises(CheckpointError, match=rf"key '{last}' has 3 output channels"):
        encoder_shape(bad, tmp_path, str)
    gap = {k: v for k, v in state.items() if not k.startswith("sequential.1.")}
    with pytest.raises(CheckpointError, match="not a SampleCNN layout"):
        encoder_shape(gap, tmp_path, str)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: SampleCNN(width=float("inf")), r"^width must be a finite number in \(0, 8\], got inf"),
        (lambda: SampleCNN(width=float("nan")), r"^width must be a finite number"),
        (lambda: SampleCNN(width=1000), r"^width must be a finite number in \(0, 8\], got 1000"),
        (lambda: SampleCNN(width=0), r"^width must be"),
        (lambda: SampleCNN(width="1"), r"^width must be a finite number"),
        (lambda: SampleCNN(n_blocks=10), r"^n_blocks must be a whole number in 1..9, got 10"),
        (lambda: SampleCNN(n_blocks=3.0), r"^n_blocks must be a whole number"),
        (lambda: SampleCNN(n_blocks=True), r"^n_blocks must be a whole number"),
        (lambda: SampleCNN(n_classes=-3), r"^n_classes must be a whole number in 1..100,000, got -3"),
        (lambda: SampleCNN(n_classes=10**12), r"^n_classes must be a whole number in 1..100,000"),
        (lambda: SampleCNN(dropout=1.5), r"^dropout must be a finite number in \[0, 1\]"),
        (lambda: Projector(512, 10**9, 64), r"^hidden must be a whole number in 1..8,192, got 1000000000"),
        (lambda: Projector(512, 512, -1), r"^out_dim must be"),
        (lambda: Head("linear", 512, 0), r"^n_classes must be a whole number in 1..100,000, got 0"),
        (lambda: Head("mlp", 512, 5, hidden=2**40), r"^hidden must be"),
        (lambda: Head(["linear"], 512, 5), r"^kind must be one of"),
        (
            lambda: CLMR(SampleCNN(1 / 16, 5), sample_rate=2**70),
            r"^sample_rate must be a whole number in 1..384,000",
        ),
        (lambda: CLMR(SampleCNN(1 / 16, 5), sample_rate=22050.5), r"^sample_rate must be a whole number"),
        (
            lambda: CLMR(SampleCNN(1 / 16, 5), Projector(512, 8, 4)),
            r"^projector.in_dim is 512, but the encoder gives 32",
        ),
        (lambda: CLMR(SampleCNN(1 / 16, 5), head=Head("linear", 33, 2)), r"^head.in_dim is 33"),
        (lambda: CLMR(SampleCNN(1 / 16, 5), tags=["a", 3]), r"^tags must be a list of strings"),
        (lambda: CLMR(SampleCNN(1 / 16, 5), tags="abc"), r"^tags must be a list of strings"),
        (lambda: CLMR(SampleCNN(1 / 16, 5), task=["multilabel"]), r"^task must be one of"),
        (lambda: CLMR(SampleCNN(1 / 16, 5), meta=[1]), r"^meta must be a JSON object"),
    ],
)
def test_model_numbers_are_checked_before_anything_is_allocated(build, match):
    """What `--model.*` flags and a file's config reach: type, finite, range, named in one line."""
    with pytest.raises(clmr.errors.ClmrError, match=match):
        build()


def test_refused_widths_are_checked_before_building_and_the_widest_allowed_stays_sane(monkeypatch):
    """The bound holds before allocation (nn.Conv1d is never reached), and the widest encoder it allows
    (width 8: 4,096 channels) is about 150 M parameters (counted on the meta device, nothing allocated)."""
    import clmr.models.samplecnn as samplecnn

    with torch.device("meta"):
        widest = SampleCNN(width=8.0)
    assert widest.out_dim == 4096 and sum(p.numel() for p in widest.parameters()) < 160_000_000
    monkeypatch.setattr(samplecnn.nn, "Conv1d", None)  # building anything would fail with TypeError
    with pytest.raises(clmr.errors.ClmrError, match="width"):
        SampleCNN(width=8.01)
