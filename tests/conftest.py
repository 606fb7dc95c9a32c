"""Shared fixtures: generated music and a labelled store at a tiny rate, and a tiny model and its file.

Session-scoped fixtures are built once per test run and must be treated as read-only; `tiny_model`
is a fresh copy for each test, so a test may move it or change its mode."""

from __future__ import annotations

import pytest
import torch

from clmr.data import Store, preprocess
from clmr.data.synthetic import generate
from clmr.models import CLMR, Projector, SampleCNN, load_model, save_model

SR = 8000
"""Sample rate of the shared music, store and model (a tiny rate keeps the tests fast)."""


def build_tiny_model(**kwargs) -> CLMR:
    """SampleCNN at width 1/16 and 5 blocks (crop 729 samples, h of 32), a 32-32-16 projector, seeded.
    Kaiming convs (`--model.init kaiming`): a random encoder whose embeddings tell pieces apart."""
    torch.manual_seed(0)
    return CLMR(
        SampleCNN(width=1 / 16, n_blocks=5).kaiming_init(), Projector(32, 32, 16), sample_rate=SR, **kwargs
    ).eval()


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """`build_tiny_model(meta={"note": "x"})` saved as a clmr .safetensors file."""
    return save_model(
        build_tiny_model(meta={"note": "x"}), tmp_path_factory.mktemp("model") / "model.safetensors"
    )


@pytest.fixture()
def tiny_model(tiny_model_file) -> CLMR:
    """The model in `tiny_model_file`, loaded afresh for each test (eval mode, CPU)."""
    return load_model(tiny_model_file).eval()


@pytest.fixture(scope="session")
def synthetic_music(tmp_path_factory):
    """12 generated two-second pieces at SR with tags and labels CSVs (`clmr.data.synthetic.generate`)."""
    return generate(tmp_path_factory.mktemp("music"), tracks=12, seconds=2.0, seed=1, sample_rate=SR)


@pytest.fixture(scope="session")
def labelled_store(tmp_path_factory, synthetic_music) -> Store:
    """`synthetic_music` preprocessed into a store with its tags (multi-label) and train/valid/test splits."""
    return preprocess(
        synthetic_music.root,
        tmp_path_factory.mktemp("store"),
        labels=synthetic_music.tags_csv,
        sample_rate=SR,
        workers=0,
        min_length=1,
        progress=False,
    )
