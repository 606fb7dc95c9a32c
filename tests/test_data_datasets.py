"""Dataset layouts on small generated look-alikes: MagnaTagATune (annotations + Won and Pons splits),
GTZAN (filtered and random splits), MSD (pickled split files, safely read), labels CSV rules."""

import pickle

import numpy as np
import pytest
import soundfile as sf

from clmr.data import DatasetError, Store, preprocess
from clmr.data.datasets import scan
from clmr.data.datasets.msd import load_pickle

SR = 8000


def _audio(path, seconds=0.3, freq=440.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, format="WAV")


@pytest.fixture
def mtat(tmp_path):
    """12 clips, 60 tags: tag k is on for clips where (clip + k) % 3 == 0 plus tag0 everywhere."""
    root = tmp_path / "mtat"
    root.mkdir()
    names = [f"tag{k}" for k in range(60)]
    lines = ["\t".join(['"clip_id"', *[f'"{n}"' for n in names], '"mp3_path"']).replace('"', "")]
    paths = []
    for clip in range(12):
        path = f"{'0123456789abcdef'[clip % 16]}/artist-album-{clip:02d}-song-0-29.mp3"
        paths.append(path)
        on = [1 if (k == 0 or (clip + k) % 3 == 0) and k < 55 else 0 for k in range(60)]
        lines.append("\t".join([str(clip * 10), *map(str, on), path]))
        if clip != 11:  # clip 11 is listed but its file is missing
            _audio(root / path.replace(".mp3", ".wav"))
            (root / path.replace(".mp3", ".wav")).rename(root / path)  # wav bytes, .mp3 name: still decodes
    (root / "annotations_final.csv").write_text("\n".join(lines) + "\n")
    won = root / "split" / "mtat"
    won.mkdir(parents=True)
    tags = np.array(names[:50])
    binary = np.array([[1 if (k == 0 or (c + k) % 3 == 0) else 0 for k in range(50)] for c in range(12)])
    np.save(won / "tags.npy", tags)
    np.save(won / "binary.npy", binary)
    for which, clips in (("train", [0, 1, 2, 3, 4, 5]), ("valid", [6, 7]), ("test", [8, 11])):
        np.save(won / f"{which}.npy", np.array([f"{c}\t{paths[c]}" for c in clips]))
    pons = root / "index" / "mtt"
    pons.mkdir(parents=True)
    (pons / "index_mtt.tsv").write_text("".join(f"{c * 10}\t{paths[c]}\n" for c in range(12)))
    for name, clips in (
        ("train_gt_mtt.tsv", [0, 1, 2, 3]),
        ("val_gt_mtt.tsv", [4]),
        ("test_gt_mtt.tsv", [5, 6]),
    ):
        (pons / name).write_text("".join(f"{c * 10}\t{binary[c].tolist()}\n" for c in clips))
    return root, paths, binary


def test_mtat_won_split(mtat):
    root, paths, binary = mtat
    spec = scan("mtat", root, split="won")
    assert spec.task == "multilabel" and len(spec.vocab) == 50 and spec.split_name == "won"
    by_id = {e.track_id: e for e in spec.entries}
    assert sorted(by_id) == sorted(str(c * 10) for c in [0, 1, 2, 3, 4, 5, 6, 7, 8])
    assert by_id["30"].split == "train" and by_id["60"].split == "valid" and by_id["80"].split == "test"
    assert set(by_id["30"].labels) == {f"tag{k}" for k in range(50) if binary[3, k]}
    reasons = {s.path: s.reason for s in spec.skipped}
    assert reasons[paths[11]] == "missing" and reasons[paths[9]] == "not_in_split"


def test_mtat_pons_split_uses_top50_by_frequency(mtat):
    root, paths, binary = mtat
    spec = scan("mtat", root, split="pons")
    assert spec.vocab[0] == "tag0"  # on for every clip: the most frequent
    assert len(spec.vocab) == 50 and not {"tag55", "tag56"} & set(spec.vocab)  # never on
    assert {e.split for e in spec.entries} == {"train", "valid", "test"}
    assert len(spec.entries) == 7
    with pytest.raises(DatasetError, match="split"):
        scan("mtat", root, split="random")


def test_mtat_preprocess_end_to_end_defaults_to_the_pons_split(mtat, tmp_path):
    """The reference's `MAGNATAGATUNE` reads Pons et al.'s split unless told otherwise; so does clmr."""
    root, _, _ = mtat
    assert scan("mtat", root).split_name == "pons"
    store = preprocess(
        root, tmp_path / "store", dataset="mtat", sample_rate=SR, workers=0, min_length=1, progress=False
    )
    assert len(store) == 7 and store.meta["dataset"] == "mtat" and store.task == "multilabel"
    assert store.meta["split"] == "pons" and store.meta["splits"] == {"train": 4, "valid": 1, "test": 2}
    assert store.targets(store.split_indices("train")).shape == (4, 50)
    assert "not_in_split" in (tmp_path / "store" / "skipped.csv").read_text()
    won = preprocess(
        root,
        tmp_path / "won",
        dataset="mtat",
        split="won",
        sample_rate=SR,
        workers=0,
        min_length=1,
        progress=False,
    )
    assert len(won) == 9 and won.meta["split"] == "won"
    assert "missing" in (tmp_path / "won" / "skipped.csv").read_text()


def test_mtat_bad_files(tmp_path):
    (tmp_path / "annotations_final.csv").write_text("id\tx\tpath\n")
    with pytest.raises(DatasetError, match="clip_id"):
        scan("mtat", tmp_path)
    (tmp_path / "annotations_final.csv").write_text("clip_id\tx\tmp3_path\n2\t1\ta.mp3\n")
    with pytest.raises(DatasetError, match="tags.npy"):
        scan("mtat", tmp_path, split="won")


@pytest.fixture
def gtzan(tmp_path):
    root = tmp_path / "gtzan"
    genres = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
    for g in genres:
        for n in range(3):
            _audio(root / "genres" / g / f"{g}.{n:05d}.wav")
    (root / "train_filtered.txt").write_text("".join(f"{g}/{g}.00000.au\n" for g in genres))
    (root / "valid_filtered.txt").write_text("".join(f"{g}/{g}.00001.au\n" for g in genres[:5]))
    (root / "test_filtered.txt").write_text("rock/rock.00002.au\nblues/blues.00099.au\n")
    return root


def test_gtzan_filtered_and_random(gtzan):
    spec = scan("gtzan", gtzan)
    assert spec.task == "multiclass" and len(spec.vocab) == 10
    assert len(spec.entries) == 16 and {e.split for e in spec.entries} == {"train", "valid", "test"}
    jazz = next(e for e in spec.entries if e.track_id == "jazz.00000")
    assert jazz.labels == ("jazz",) and jazz.path == "genres/jazz/jazz.00000.wav"
    reasons = [s.reason for s in spec.skipped]
    assert reasons.count("missing") == 1 and reasons.count("not_in_split") == 14
    full = scan("gtzan", gtzan, split="random")
    assert len(full.entries) == 30 and not full.skipped
    _audio(gtzan / "genres" / "rock" / "rock.00001.au")  # the same clip in two formats
    again = scan("gtzan", gtzan, split="random")
    assert len(again.entries) == 30 and [(s.path, s.reason) for s in again.skipped] == [
        ("genres/rock/rock.00001.wav", "duplicate")
    ]


def _pickle2(obj, path):
    path.write_bytes(pickle.dumps(obj, protocol=2))


def test_msd_split_files(tmp_path):
    root = tmp_path / "msd"
    split = root / "split" / "msd"
    split.mkdir(parents=True)
    tags = [f"t{k}" for k in range(50)]
    (split / "50tagList.txt").write_text("\n".join(tags) + "\n")
    ids = [f"TR{n:016d}" for n in range(4)]
    _pickle2([ids[0].encode(), ids[1]], split / "filtered_list_train.cP")
    _pickle2([ids[2], ids[3]], split / "filtered_list_test.cP")
    vectors = {i: np.eye(50, dtype=np.int64)[[n]].T for n, i in enumerate(ids)}  # (50, 1) like the originals
    _pickle2(vectors, split / "msd_id_to_tag_vector.cP")
    _pickle2({ids[1]: "1/2/1234567.clip.mp3"}, split / "msd_id_to_7d.cP")
    _audio(root / "audio" / f"{ids[0]}.mp3")
    _audio(root / "audio" / "1" / "2" / "1234567.clip.mp3")
    _audio(root / "audio" / f"{ids[2]}.wav")
    _audio(root / "audio" / "my-own-song.wav")  # not an MSD track: listed, not passed over
    _audio(root / "audio" / f"{ids[2]}.flac")  # a second file named after the same track
    spec = scan("msd", root)
    assert {e.track_id for e in spec.entries} == set(ids[:3])
    assert [e.path for e in spec.entries] == sorted(e.path for e in spec.entries)
    by_id = {e.track_id: e for e in spec.entries}
    assert by_id[ids[1]].labels == ("t1",) and by_id[ids[1]].split == "train"
    assert by_id[ids[2]].split == "test"
    assert {s.path: s.reason for s in spec.skipped} == {
        ids[3]: "missing",
        "audio/my-own-song.wav": "not_in_split",
        f"audio/{ids[2]}.wav": "duplicate",  # sorted: the .flac comes first and is used
    }


def test_msd_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.cP"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DatasetError, match="refusing"):
        load_pickle(path)


def test_labels_csv_rules(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav", "extra.wav"):
        _audio(tmp_path / name)
    single = tmp_path / "single.csv"
    single.write_text("path,label\na.wav,x\nb.wav,y\nc.wav,\nmissing.wav,x\n")
    spec = scan("folder", tmp_path, labels=single)
    assert spec.task == "multiclass" and spec.vocab == ["x", "y"]
    reasons = {s.path: s.reason for s in spec.skipped}
    assert reasons == {"c.wav": "unlabelled", "missing.wav": "missing", "extra.wav": "unlabelled"}
    multi = tmp_path / "multi.csv"
    multi.write_text("path,label,split\na.wav,x;y,train\nb.wav,y,val\nc.wav,,test\n")
    spec = scan("folder", tmp_path, labels=multi)
    assert spec.task == "multilabel"  # a cell holds ';'
    assert {e.path: e.split for e in spec.entries} == {"a.wav": "train", "b.wav": "valid", "c.wav": "test"}
    assert scan("folder", tmp_path, labels=single, task="multilabel").task == "multilabel"
    tags = tmp_path / "tags.csv"
    tags.write_text("path,tags\na.wav,x\n")
    assert scan("folder", tmp_path, labels=tags).task == "multilabel"  # the column name decides
    with pytest.raises(DatasetError, match="single-label"):
        scan("folder", tmp_path, labels=multi, task="multiclass")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,split\na.wav,x,holdout\n")
    with pytest.raises(DatasetError, match="line 2.*holdout"):
        scan("folder", tmp_path, labels=bad)
    no_split = scan("folder", tmp_path, labels=single)
    assert {e.split for e in no_split.entries} <= {"train", "valid", "test"}  # hash split
    store = preprocess(
        tmp_path,
        tmp_path / "s",
        labels=single,
        split="none",
        sample_rate=SR,
        workers=0,
        min_length=1,
        progress=False,
    )
    assert isinstance(store, Store) and len(store.split_indices("train")) == 0 and len(store) == 2


def test_unextracted_archives_get_a_hint(mtat, tmp_path):
    root, paths, _ = mtat
    for path in paths[:11]:
        (root / path).unlink()
    (root / "mp3.zip.001").write_bytes(b"part")
    with pytest.raises(DatasetError, match="clmr download mtat"):
        scan("mtat", root)
    gtzan = tmp_path / "gtzan-archive"
    gtzan.mkdir()
    (gtzan / "genres.tar.gz").write_bytes(b"archive")
    with pytest.raises(DatasetError, match="clmr download gtzan"):
        scan("gtzan", gtzan)


def test_symlink_loops_and_repeated_links_list_each_file_once(tmp_path):
    """`loop/a/up -> ..` used to list a/x.wav 41 times (once per level until the path got too long)."""
    from clmr.data.datasets.base import scan_files

    root = tmp_path / "loop"
    _audio(root / "a" / "x.wav")
    _audio(root / "b" / "y.wav")
    (root / "a" / "up").symlink_to("..")
    (root / "c").symlink_to("b")  # a second name for b
    (root / "outside").symlink_to(tmp_path / "elsewhere")
    _audio(tmp_path / "elsewhere" / "z.wav")  # a link out of the root is followed, once
    assert scan_files(root) == (["a/x.wav", "b/y.wav", "outside/z.wav"], [])
    spec = scan("folder", root)
    assert [e.path for e in spec.entries] == ["a/x.wav", "b/y.wav", "outside/z.wav"]


def test_vocab_holds_only_labels_of_stored_tracks(tmp_path):
    """A label only on missing, unsupported, unlabelled-in-folder or undecodable files is no class of
    the store (a class with zero tracks)."""
    root = tmp_path / "music"
    for name in ("a.wav", "b.wav", "c.wav"):
        _audio(root / name)
    (root / "broken.wav").write_bytes(b"RIFF not really audio")
    (root / "song.m4a").write_bytes(b"AAC")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "path,label\na.wav,rock\nb.wav,jazz\nc.wav,rock\ngone.wav,polka\nsong.m4a,blues\nbroken.wav,metal\n"
    )
    spec = scan("folder", root, labels=csv_path)
    assert spec.vocab == ["jazz", "metal", "rock"]  # not polka (missing) nor blues (unsupported)
    store = preprocess(
        root, tmp_path / "s", labels=csv_path, sample_rate=SR, workers=0, min_length=1, progress=False
    )
    assert store.vocab == ["jazz", "rock"]  # metal's only file does not decode
    assert store.meta["skipped"] == {"missing": 1, "unreadable": 1, "unsupported": 1}
    assert sorted(store.labels(i)[0] for i in range(len(store))) == ["jazz", "rock", "rock"]
    tags = tmp_path / "tags.csv"
    tags.write_text("path,tags\na.wav,x;y\nb.wav,y\nbroken.wav,z;y\ngone.wav,w\n")
    multi = preprocess(
        root, tmp_path / "m", labels=tags, sample_rate=SR, workers=0, min_length=1, progress=False
    )
    assert multi.vocab == ["x", "y"] and multi.targets([0]).shape == (1, 2)
