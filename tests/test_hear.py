"""clmr.hear: the HEAR API's attributes, shapes and timestamps, consistent with clmr's song embedding."""

import numpy as np
import pytest
import torch

import clmr.hear as hear
from clmr.inference import embed_audio

SR = 8000


@pytest.fixture(scope="module")
def model(tiny_model_file):
    return hear.load_model(str(tiny_model_file), hop_ms=25.0)


def test_attributes(model):
    assert model.sample_rate == SR
    assert model.scene_embedding_size == model.timestamp_embedding_size == 32
    assert isinstance(model, torch.nn.Module)


def test_scene_embeddings_are_song_embeddings(model):
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 2 * SR)).astype(np.float32))
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, 32) and scene.dtype == torch.float32
    for row, sound in zip(scene, audio, strict=True):
        np.testing.assert_allclose(row.numpy(), embed_audio(model.model, sound.numpy(), SR), atol=1e-5)
    assert hear.get_scene_embeddings(audio[:, :100].numpy(), model).shape == (3, 32)  # padded to one crop


def test_timestamp_embeddings_shapes_and_times(model):
    n_samples = SR  # 1 s, hop 25 ms -> timestamps 0, 25, ..., 975 ms
    audio = torch.from_numpy(np.random.default_rng(1).standard_normal((2, n_samples)).astype(np.float32))
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape == (2, 40, 32) and ts.shape == (2, 40)
    np.testing.assert_allclose(ts[0].numpy(), np.arange(40) * 25.0)
    # The frame at t ms is the crop centred on sample t * SR / 1000 (zero-padded at the edges).
    centre, half = 20 * 200, model.crop_length // 2
    with torch.no_grad():
        direct = model.model.embed(audio[:1, centre - half : centre + half + 1])
    np.testing.assert_allclose(emb[0, 20].numpy(), direct[0].numpy(), atol=1e-5)


def test_bad_settings_are_refused(model):
    from clmr.errors import ClmrError

    with pytest.raises(ClmrError, match="batch size"):
        hear.HearModel(model.model, batch_size=0)
    with pytest.raises(ClmrError, match="hop_ms"):
        hear.HearModel(model.model, hop_ms=0)
    with pytest.raises(ClmrError, match=r"\(n_sounds, n_samples\), got shape \(4,\)"):
        hear.get_scene_embeddings(np.zeros(4, np.float32), model)
