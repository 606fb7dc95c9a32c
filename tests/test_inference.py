"""clmr.inference: protocol crops, streamed files equal in-memory audio, batching across tracks, a
trained tiny model separates pieces, tagging, and the top-level Python API (`clmr.embed_file(model, ...)`)."""

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import clmr.audio
from clmr.audio import read_blocks
from clmr.data.synthetic import draw_piece, render
from clmr.inference import embed_audio, embed_file, embed_files, tag_file
from clmr.losses import nt_xent
from clmr.models import CLMR, Head, Projector, SampleCNN
from clmr.songs.crops import SongCrops, song_crops

SR = 8000


def piece(seed: int, seconds: float, sample_rate: int = SR) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    return render(draw_piece(rng), seconds, sample_rate, rng)


def tiny(head: Head | None = None, **kwargs) -> CLMR:
    torch.manual_seed(0)
    return CLMR(
        SampleCNN(width=1 / 16, n_blocks=5), Projector(32, 32, 16), head, sample_rate=SR, **kwargs
    ).eval()


@pytest.fixture(scope="module")
def trained() -> CLMR:
    """The tiny model after 40 NT-Xent steps on two random crops of each of 16 generated pieces."""
    model = tiny().train()
    songs = torch.from_numpy(np.stack([piece(100 + i, 3.0) for i in range(16)]))
    length, rng = model.crop_length, np.random.default_rng(0)
    offsets = torch.arange(length)
    rows = torch.arange(len(songs))[:, None]
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(40):
        starts = [torch.from_numpy(rng.integers(0, songs.shape[1] - length, len(songs))) for _ in range(2)]
        x_i, x_j = (songs[rows, s[:, None] + offsets] for s in starts)
        loss = nt_xent(model.project(model.embed(x_i)), model.project(model.embed(x_j)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_crops_follow_the_evaluation_protocol():
    length = 729
    x = np.arange(3 * length + 100, dtype=np.float32)
    crops = song_crops(x, length)
    assert crops.shape == (3, length) and np.array_equal(crops.ravel(), x[: 3 * length])  # remainder dropped
    short = song_crops(x[:100], length)
    assert short.shape == (1, length) and np.array_equal(short[0, :100], x[:100]) and not short[0, 100:].any()
    assert np.array_equal(song_crops(x[:0], length), np.zeros((1, length), np.float32))
    assert np.array_equal(song_crops(x[: 2 * length], length), x[: 2 * length].reshape(2, length))
    # A stream of odd-sized blocks gives the same crops, in chunks of at most max_crops.
    stream = SongCrops(iter(np.array_split(x, 7)), length, max_crops=2)
    chunks = list(stream)
    assert max(len(c) for c in chunks) <= 2
    assert np.array_equal(np.concatenate(chunks), crops) and stream.samples == len(x)
    one_block = SongCrops([x], length, max_crops=2)
    assert [len(c) for c in one_block] == [2, 1] and one_block.samples == len(x)
    assert np.array_equal(np.concatenate(list(SongCrops(iter([x[:40], x[40:100]]), length))), short)


def test_streamed_file_equals_loading_it_whole(tmp_path):
    # 10 s at 16 kHz: several decode blocks, resampled to the model's 8 kHz on the way.
    path = tmp_path / "long.flac"
    sf.write(path, piece(1, 10.0, 16000), 16000)
    blocks = list(read_blocks(path, SR, block_samples=10000))
    assert len(blocks) > 3
    whole = clmr.audio.load(path, SR)
    assert abs(sum(map(len, blocks)) - len(whole)) <= 1
    n = min(sum(map(len, blocks)), len(whole))
    np.testing.assert_allclose(np.concatenate(blocks)[:n], whole[:n], atol=1e-5)
    model = tiny()
    np.testing.assert_allclose(embed_file(model, path), embed_audio(model, whole, SR), atol=1e-4)


def test_embed_audio_resamples_to_the_model_rate():
    model = tiny()
    x16 = piece(2, 2.0, 16000)
    x8 = soxr.resample(x16, 16000, SR, quality="HQ")
    np.testing.assert_allclose(embed_audio(model, x16, 16000), embed_audio(model, x8, SR), atol=1e-5)
    per_crop = embed_audio(model, x8, SR, per_crop=True)
    assert per_crop.shape == (len(x8) // model.crop_length, model.embedding_dim)
    np.testing.assert_allclose(per_crop.mean(axis=0), embed_audio(model, x8, SR), atol=1e-5)


def test_batching_across_tracks_equals_one_track_at_a_time(tmp_path):
    model = tiny()
    paths = []
    for i, seconds in enumerate([0.05, 1.3, 0.6, 2.1]):  # the first is shorter than one crop
        paths.append(tmp_path / f"t{i}.wav")
        sf.write(paths[-1], piece(10 + i, seconds), SR)
    outs = list(embed_files(model, paths, batch_size=7, per_crop=True))
    assert [o.key for o in outs] == [str(p) for p in paths]
    for out, path in zip(outs, paths, strict=True):
        alone = embed_file(model, path, batch_size=1)
        np.testing.assert_allclose(out.mean, alone, atol=1e-5)
        assert out.n_crops == max(1, out.samples // model.crop_length) == len(out.crops)
    assert outs[0].n_crops == 1


def test_trained_model_puts_crops_of_one_piece_closer_than_crops_of_others(trained):
    crops = [embed_audio(trained, piece(500 + i, 2.0), SR, per_crop=True) for i in range(5)]
    owner = np.repeat(np.arange(5), [len(c) for c in crops])
    e = np.concatenate(crops)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    same = (owner[:, None] == owner[None]) & ~np.eye(len(e), dtype=bool)
    other = owner[:, None] != owner[None]
    assert sim[same].mean() > sim[other].mean() + 0.05


def test_tag_file_means_crop_probabilities(tmp_path):
    path = tmp_path / "song.wav"
    x = piece(3, 1.5)
    sf.write(path, x, SR, subtype="FLOAT")
    crops = torch.from_numpy(song_crops(x, 729))
    tags = [f"tag{i}" for i in range(6)]
    for task in ("multilabel", "multiclass"):
        model = tiny(Head("mlp", 32, 6, hidden=16), tags=tags, task=task)
        with torch.no_grad():
            logits = model.classify(crops)
        expected = (logits.softmax(-1) if task == "multiclass" else logits.sigmoid()).mean(0).numpy()
        top = tag_file(model, path, top=4)
        assert [name for name, _ in top] == [tags[i] for i in np.argsort(-expected)[:4]]
        np.testing.assert_allclose([p for _, p in top], np.sort(expected)[::-1][:4], atol=1e-5)
        assert tag_file(model, path, top=2) == top[:2]
    with pytest.raises(ValueError, match="no classification head"):
        tag_file(tiny(), path)


def test_the_top_level_api_is_the_song_level_path(tmp_path):
    """`clmr.embed_file(model, path)` and friends are `clmr.songs`'s functions; the model class offers
    only crop-level work (`embed`, `classify`), so `clmr.models` needs nothing above it."""
    import clmr.songs

    for name in ("embed_audio", "embed_file", "embed_files", "tag_file", "tag_files", "top_tags"):
        assert getattr(clmr, name) is getattr(clmr.songs, name) and name in clmr.__all__
        assert not hasattr(CLMR, name)
    path = tmp_path / "song.wav"
    sf.write(path, piece(3, 1.0), SR)
    model = tiny(Head("linear", 32, 3), tags=["a", "b", "c"])
    assert clmr.embed_file(model, path).shape == (model.embedding_dim,)
    assert sorted(tag for tag, _ in clmr.tag_file(model, path, top=3)) == ["a", "b", "c"]


def test_unusable_files_raise_typed_errors(tmp_path):
    model = tiny()
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(2000, np.float32), SR)
    with pytest.raises(clmr.audio.SilentAudioError, match="silent.wav"):
        embed_file(model, silent)
    with pytest.raises(clmr.audio.UnreadableAudioError, match="no such file"):
        embed_file(model, tmp_path / "missing.wav")


def test_threaded_decoding_gives_the_same_rows_and_reraises(tmp_path):
    from clmr.songs.apply import crop_fn
    from clmr.songs.batch import prefetch, run_songs
    from clmr.songs.crops import file_songs

    model = tiny()
    paths = [tmp_path / f"t{i}.wav" for i in range(3)]
    for i, path in enumerate(paths):
        sf.write(path, piece(20 + i, 0.7 + 0.4 * i), SR)
    paths.insert(1, tmp_path / "missing.wav")
    fn = crop_fn(model, torch.device("cpu"))
    runs = [
        list(run_songs(fn, file_songs(paths, SR, 729, 4), sample_rate=SR, batch_size=5, threaded=threaded))
        for threaded in (False, True)
    ]
    assert [o.ok for o in runs[1]] == [True, False, True, True]
    for inline, threaded in zip(*runs, strict=True):
        assert inline.key == threaded.key and inline.n_crops == threaded.n_crops
        if inline.ok:
            np.testing.assert_array_equal(inline.mean, threaded.mean)

    def broken():
        yield 1
        raise RuntimeError("decoder bug")

    with pytest.raises(RuntimeError, match="decoder bug"):
        list(prefetch(broken()))


def test_bad_arguments_raise_clear_errors(tmp_path):
    from clmr.errors import ClmrError

    model = tiny()
    x = piece(4, 1.0)
    path = tmp_path / "song.wav"
    sf.write(path, x, SR)
    for bad in (0, -3, 2.5):
        with pytest.raises(ClmrError, match="batch size"):
            embed_files(model, [path], batch_size=bad)  # -3 used to loop forever
    with pytest.raises(ClmrError, match="unknown device name"):
        embed_file(model, path, device="tpu")
    with pytest.raises(ClmrError, match="sample_rate"):
        embed_audio(model, x, 0)
    with pytest.raises(clmr.audio.UnreadableAudioError, match="NaN"):
        embed_audio(model, np.where(np.arange(len(x)) == 5, np.nan, x), SR)
    with pytest.raises(clmr.audio.EmptyAudioError):
        embed_audio(model, np.zeros(0, np.float32), SR)
    with pytest.raises(ClmrError, match="top"):
        tag_file(tiny(Head("linear", 32, 3)), path, top=0)


def test_info_json_is_standard_json_even_with_undefined_metrics(tmp_path, capsys):
    import json

    from clmr.cli import main
    from clmr.models import save_model

    model = tiny(tags=["a", "b"], task="multilabel", meta={"metrics": {"auc": float("nan")}, "store": "s/"})
    model.head = Head("linear", 32, 2)
    path = save_model(model, tmp_path / "m.safetensors")
    capsys.readouterr()
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert info["meta"]["metrics"] == {"auc": None} and info["tags"] == ["a", "b"]
    assert info["sample_rate"] == SR and info["crop_length"] == model.crop_length


def test_tag_command_prints_a_table_or_json_per_song(tmp_path, capsys):
    import json

    from clmr.cli import main
    from clmr.models import save_model

    tags = [f"tag{i}" for i in range(5)]
    model = tiny(Head("linear", 32, 5), tags=tags, task="multilabel")
    ckpt = save_model(model, tmp_path / "m.safetensors")
    songs = []
    for i in range(2):
        songs.append(tmp_path / f"song{i}.wav")
        sf.write(songs[-1], piece(40 + i, 1.2), SR)
    capsys.readouterr()
    assert main(["tag", str(ckpt), *map(str, songs), "--top", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == [str(s) for s in songs]
    for song in songs:
        expected = tag_file(model, song, top=3)
        assert [r["tag"] for r in printed[str(song)]] == [t for t, _ in expected]
        assert [r["probability"] for r in printed[str(song)]] == pytest.approx([p for _, p in expected])
    assert main(["tag", str(ckpt), str(songs[0]), str(tmp_path / "missing.wav"), "--top", "2"]) == 1
    out, err = capsys.readouterr()
    assert str(songs[0]) in out and tag_file(model, songs[0], top=1)[0][0] in out
    assert "missing.wav" in err and "no such file" in err
    headless = save_model(tiny(), tmp_path / "headless.safetensors")
    assert main(["tag", str(headless), str(songs[0])]) == 2
    assert "no classification head" in capsys.readouterr().err


def test_embed_audio_takes_channels_first_or_last_and_refuses_ambiguous_shapes(tmp_path):
    """soundfile reads (T, C): a stereo array in that layout must give the mono mix's embedding, not
    the mean over time of each frame pair."""
    from clmr.errors import ClmrError

    model = tiny()
    left, right = piece(5, 2.0), piece(6, 2.0)
    mono = embed_audio(model, (left + right) / 2, SR)
    stereo_last = np.stack([left, right], axis=1)  # (T, 2), as soundfile reads a stereo file
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo_last, SR, subtype="FLOAT")
    read, rate = sf.read(path, dtype="float32")
    assert read.shape == (len(left), 2)
    np.testing.assert_allclose(embed_audio(model, read, rate), mono, atol=1e-5)
    np.testing.assert_allclose(embed_audio(model, stereo_last.T, SR), mono, atol=1e-5)  # (C, T)
    np.testing.assert_allclose(embed_audio(model, torch.from_numpy(stereo_last), SR), mono, atol=1e-5)
    np.testing.assert_allclose(embed_audio(model, left[:, None], SR), embed_audio(model, left, SR), atol=1e-5)
    for shape in ((4, 6), (16, 4000), (4000, 16), (3, 2, 100)):
        with pytest.raises(ClmrError, match="shape"):
            embed_audio(model, np.ones(shape, np.float32), SR)
