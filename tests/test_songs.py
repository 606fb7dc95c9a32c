"""clmr.songs, the one song-level path: evaluation, inference and the HEAR API give the same song
embedding for the same audio; and clmr.devices, the one device resolver."""

import numpy as np
import pytest
import soundfile as sf
import torch

import clmr.devices
import clmr.hear as hear
from clmr.devices import DeviceError, resolve_device
from clmr.evaluate.features import extract
from clmr.evaluate.inputs import EvaluationError, check_device
from clmr.inference import embed_audio, embed_files
from clmr.songs import run_model, store_songs, track_crops

SR = 8000


def test_evaluation_inference_and_hear_give_the_same_song_embeddings(
    tmp_path, labelled_store, tiny_model_file
):
    store = labelled_store
    hear_model = hear.load_model(str(tiny_model_file), batch_size=5)
    model = hear_model.model
    tracks = np.arange(4)
    audio = [store.track(i) for i in tracks]
    assert all(len(x) > 2 * model.crop_length for x in audio)  # several crops and a remainder each
    paths = []
    for i, x in zip(tracks, audio, strict=True):
        paths.append(tmp_path / f"track{i}.wav")
        sf.write(paths[-1], x, SR, subtype="FLOAT")  # bit-exact copy of the stored samples

    evaluation = extract(model, store, tracks, batch_size=5)
    files = list(embed_files(model, paths, batch_size=5, per_crop=True))
    arrays = np.stack([embed_audio(model, x, SR, batch_size=5) for x in audio])
    length = min(map(len, audio))
    scene = hear.get_scene_embeddings(torch.from_numpy(np.stack([x[:length] for x in audio])), hear_model)
    cut = [store.track(i)[:length] for i in tracks]
    short = np.stack([embed_audio(model, x, hear_model.sample_rate, batch_size=5) for x in cut])  # 16 kHz

    for k, i in enumerate(tracks):
        crops = track_crops(store, int(i), model.crop_length)
        rows = evaluation.features[evaluation.offsets[k] : evaluation.offsets[k + 1]]
        assert len(rows) == len(crops) == files[k].n_crops == len(audio[k]) // model.crop_length
        np.testing.assert_array_equal(files[k].crops, rows)  # the same crops in the same batches
    means = evaluation.song_means().astype(np.float32)
    np.testing.assert_allclose(np.stack([f.mean for f in files]), means, rtol=0, atol=1e-6)
    np.testing.assert_allclose(arrays, means, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scene.numpy(), short, rtol=0, atol=1e-6)


def test_store_songs_stream_a_track_in_bounded_chunks(labelled_store):
    i, length = 0, 100
    source = dict(store_songs(labelled_store, [i], length, max_crops=3))[str(i)]()
    chunks = list(source)
    assert max(len(c) for c in chunks) == 3 and source.samples == labelled_store.length(i)
    np.testing.assert_array_equal(np.concatenate(chunks), track_crops(labelled_store, i, length))


def test_run_model_keeps_order_and_restores_the_training_mode(tiny_model, labelled_store):
    tiny_model.train()
    songs = store_songs(labelled_store, [3, 1, 2], tiny_model.crop_length)
    outputs = list(run_model(tiny_model, songs, batch_size=4, device="cpu"))
    assert [o.key for o in outputs] == ["3", "1", "2"] and tiny_model.training
    with pytest.raises(ValueError, match="batch size"):
        run_model(tiny_model, [], batch_size=0)  # refused when called, before any song is read


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device(None)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps") == clmr.devices.auto_device()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_explicit_devices_are_checked_and_none_means_the_models(monkeypatch, tiny_model):
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(None, tiny_model)
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name, message in [
        ("tpu", "unknown device name"),
        ("cuda", "no CUDA device"),
        ("cuda:1", "no CUDA device"),
        ("mps", "MPS is not available"),
        ("meta", "only cpu, cuda and mps"),
    ]:
        with pytest.raises(DeviceError, match=message):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match=r"2 CUDA device\(s\)"):
        resolve_device("cuda:2")


def test_evaluate_checks_devices_with_the_resolver_and_names_the_option(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert check_device("cpu") == check_device("auto") == torch.device("cpu")
    with pytest.raises(EvaluationError, match="--device 'cuda': no CUDA device"):
        check_device("cuda")
