"""clmr.hear: the HEAR API's attributes, shapes and timestamps (the checks hear-validator makes), the
one-pass timestamp grid against the per-hop definition, and models at rates HEAR does not accept."""

import numpy as np
import pytest
import torch

import clmr.hear as hear
from clmr.errors import ClmrError
from clmr.inference import embed_audio
from clmr.models import CLMR, SampleCNN

SR = 8000  # the tiny model's rate; HEAR gives it 16 kHz audio


@pytest.fixture(scope="module")
def model(tiny_model_file):
    return hear.load_model(str(tiny_model_file), hop_ms=25.0)


def white_noise(shape, seed=0):
    """hear-validator's test audio: uniform in [-1, 1)."""
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32))


def validate(model):
    """What `hearvalidator/validate.py:ValidateModel.validate_model` (hearvalidator 2021.0.2) checks of
    a torch model: accepted rate, int sizes, timestamp embeddings of 16 x 2 s and scene embeddings of
    8 x 3.74 s of white noise (dtype, shapes, timestamps evenly spaced within 1e-3 ms)."""
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate in [16000, 22050, 44100, 48000]
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    emb, ts = hear.get_timestamp_embeddings(white_noise((16, int(2.0 * model.sample_rate))), model)
    assert emb.dtype == torch.float32 and emb.shape[0] == 16
    assert emb.shape[:2] == ts.shape and emb.shape[2] == model.timestamp_embedding_size
    diff = torch.diff(ts)
    assert torch.all(torch.abs(diff - diff.float().mean()) < 1e-3) and diff.float().mean() <= 50.0
    scene = hear.get_scene_embeddings(white_noise((8, int(3.74 * model.sample_rate)), 1), model)
    assert scene.dtype == torch.float32 and scene.shape == (8, model.scene_embedding_size)


def per_hop(model, x):
    """The slow definition: the h of a crop centred on every timestamp, each encoded on its own
    (x at the model's rate, zero-padded by half a crop at both ends)."""
    length, hop = model.crop_length, model.hop
    padded = np.pad(x, ((0, 0), (length // 2, length)))
    starts = np.arange(1 + (x.shape[1] - 1) // hop) * hop
    crops = np.stack([padded[:, s : s + length] for s in starts], axis=1)  # (n, T, length)
    with torch.no_grad():
        h = model.model.embed(torch.from_numpy(crops.reshape(-1, length)))
    return h.reshape(x.shape[0], len(starts), -1).numpy()


def test_sample_rates_hear_accepts():
    assert [hear.hear_sample_rate(r) for r in (8000, 16000, 22050, 32000, 44100, 96000)] == [
        16000,
        16000,
        22050,
        44100,
        44100,
        48000,
    ]


def test_attributes(model):
    assert model.sample_rate == 16000 and model.model.sample_rate == SR  # resampled to 8 kHz inside
    assert model.scene_embedding_size == model.timestamp_embedding_size == 32
    assert isinstance(model, torch.nn.Module)


def test_an_8khz_model_passes_the_validator_checks(model):
    validate(model)


def test_a_22khz_model_passes_the_validator_checks():
    torch.manual_seed(0)
    narrow = hear.HearModel(CLMR(SampleCNN(width=1 / 16), sample_rate=22050))  # the reference crop
    assert narrow.sample_rate == 22050 and narrow.grid_steps == 35  # 35 x 1102 samples ~ 2/3 crop
    validate(narrow)


def test_scene_embeddings_are_song_embeddings(model):
    audio = white_noise((3, 2 * 16000))
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, 32) and scene.dtype == torch.float32
    for row, sound in zip(scene, audio, strict=True):  # embed_audio resamples 16 -> 8 kHz itself
        np.testing.assert_allclose(row.numpy(), embed_audio(model.model, sound.numpy(), 16000), atol=1e-5)
    assert hear.get_scene_embeddings(audio[:, :100].numpy(), model).shape == (3, 32)  # padded to one crop


def test_timestamp_embeddings_shapes_and_times(model):
    audio = white_noise((2, 16000), 1)  # 1 s, hop 25 ms -> timestamps 0, 25, ..., 975 ms
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape == (2, 40, 32) and ts.shape == (2, 40) and emb.dtype == ts.dtype == torch.float32
    np.testing.assert_allclose(ts[0].numpy(), np.arange(40) * 25.0)
    np.testing.assert_array_equal(ts[0].numpy(), ts[1].numpy())


@pytest.mark.parametrize("hop_ms", [10.0, 25.0])
def test_the_grid_agrees_with_the_per_hop_definition(tiny_model_file, hop_ms):
    fast = hear.load_model(str(tiny_model_file), hop_ms=hop_ms)
    exact = hear.HearModel(fast.model, hop_ms=hop_ms, grid_steps=1)
    steps = fast.grid_steps
    assert steps == int(2 / 3 * 729) // exact.hop and steps > 1  # 6 at 10 ms (80 samples), 2 at 25 ms
    audio = white_noise((2, 19280), 2)  # 9,640 samples at 8 kHz: the last timestamp is on the grid
    slow = per_hop(fast, fast.to_model_rate(audio))
    emb_exact, ts_exact = hear.get_timestamp_embeddings(audio, exact)
    emb, ts = hear.get_timestamp_embeddings(audio, fast)
    torch.testing.assert_close(ts, ts_exact)
    np.testing.assert_allclose(emb_exact.numpy(), slow, atol=1e-5)  # grid_steps=1: every crop encoded
    i = np.arange(slow.shape[1])
    assert (i[-1] % steps) == 0
    np.testing.assert_allclose(emb[:, ::steps].numpy(), slow[:, ::steps], atol=1e-5)  # on the grid
    # between grid points: the linear interpolation of the two neighbouring grid crops
    below, w = i // steps * steps, (i % steps / steps)[None, :, None]
    above = np.minimum(below + steps, i[-1])
    np.testing.assert_allclose(emb.numpy(), (1 - w) * slow[:, below] + w * slow[:, above], atol=1e-5)
    assert not np.allclose(emb.numpy(), slow, atol=1e-3)  # the interpolated frames are not the per-hop ones


def test_one_pass_encodes_one_crop_per_grid_point(model):
    """The cost: crops encoded for 10 s, against the scene embedding's (counted, not timed)."""
    seen = []
    hook = model.model.encoder.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    try:
        audio = white_noise((1, 10 * 16000), 3)
        hear.get_scene_embeddings(audio, model)
        scene_crops, seen[:] = sum(seen), []
        emb, _ = hear.get_timestamp_embeddings(audio, model)
        grid_crops = sum(seen)
    finally:
        hook.remove()
    assert scene_crops == 80000 // 729 and emb.shape[1] == 400
    assert grid_crops == 1 + -(-399 // model.grid_steps) and grid_crops <= 2 * scene_crops


def test_bad_settings_are_refused(model):
    with pytest.raises(ClmrError, match="batch size"):
        hear.HearModel(model.model, batch_size=0)
    with pytest.raises(ClmrError, match="hop_ms"):
        hear.HearModel(model.model, hop_ms=0)
    with pytest.raises(ClmrError, match="grid_steps"):
        hear.HearModel(model.model, grid_steps=0)
    with pytest.raises(ClmrError, match=r"\(n_sounds, n_samples\), got shape \(4,\)"):
        hear.get_scene_embeddings(np.zeros(4, np.float32), model)
    with pytest.raises(ClmrError, match="no samples"):
        hear.get_timestamp_embeddings(np.zeros((2, 0), np.float32), model)
