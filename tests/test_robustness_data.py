"""The data side under bad input and faults: odd folder entries, headers that lie, unsafe output folders,
two writers, stale resumes, unclean label text, disk full and files where folders belong. Each test
builds its bad input, checks the one-line message and that nothing was lost."""

import csv
import errno
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

import clmr.files as files
from clmr.audio import UnreadableAudioError, load
from clmr.data import Store, StoreError, preprocess
from clmr.data.datasets.base import DatasetError
from clmr.files import MANIFEST, clear_folder, folder_lock

# OutputError is looked up at each use: tests/test_files.py reloads clmr.files, which makes a new class
SR = 8000
KW = dict(sample_rate=SR, workers=0, min_length=1, progress=False)


def _tone(path, seconds=0.5, rate=SR, **kw):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.5 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate, **kw)


def _skipped(store_dir) -> dict[str, tuple[str, str]]:
    with open(store_dir / "skipped.csv", newline="", encoding="utf-8") as f:
        return {r["path"]: (r["reason"], r["detail"]) for r in csv.DictReader(f)}


def _source(tmp_path, names=("a.wav", "b.wav", "c.wav")):
    src = tmp_path / "src"
    src.mkdir()
    for name in names:
        _tone(src / name)
    return src


def test_odd_entries_are_listed_and_the_job_goes_on(tmp_path, monkeypatch):
    src = _source(tmp_path, ("good.wav",))
    os.mkfifo(src / "pipe.wav")  # reading it would block forever
    os.symlink(src / "nowhere.wav", src / "dangling.wav")
    with open(os.fsencode(src) + b"/caf\xe9.wav", "wb") as f:  # a latin-1 name: not valid UTF-8
        f.write((src / "good.wav").read_bytes())
    (src / "locked").mkdir()
    _tone(src / "locked" / "hidden.wav")
    (src / "[bold]x[").mkdir()  # rich markup in a path: "[bold]x[/].wav"
    (src / "[bold]x[" / "].wav").write_bytes((src / "good.wav").read_bytes())
    real_scandir = os.scandir

    def scandir(path="."):  # as for a folder without read permission (the tests may run as root)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    store = preprocess(src, tmp_path / "store", **{**KW, "progress": True})
    assert sorted(store.source_path(i) for i in range(len(store))) == ["[bold]x[/].wav", "good.wav"]
    skipped = _skipped(tmp_path / "store")
    assert skipped["pipe.wav"][0] == "unreadable" and "not a regular file" in skipped["pipe.wav"][1]
    assert skipped["caf\\xe9.wav"][0] == "bad_name" and "UTF-8" in skipped["caf\\xe9.wav"][1]
    assert skipped["locked"] == ("unreadable", "folder cannot be listed (Permission denied)")
    assert skipped["dangling.wav"] == ("unreadable", "cannot be opened (No such file or directory)")


def test_a_dataset_layout_with_a_non_utf8_name_goes_on(tmp_path):
    blues = tmp_path / "genres" / "blues"
    blues.mkdir(parents=True)
    _tone(blues / "blues.00000.au", format="AU", subtype="PCM_16")
    with open(os.fsencode(blues) + b"/blues.0000\xe9.au", "wb") as f:
        f.write((blues / "blues.00000.au").read_bytes())
    store = preprocess(tmp_path, tmp_path / "store", dataset="gtzan", split="random", **KW)
    assert len(store) == 1
    assert _skipped(tmp_path / "store")["genres/blues/blues.0000\\xe9.au"][0] == "bad_name"


def test_load_refuses_a_fifo_at_once(tmp_path):
    os.mkfifo(tmp_path / "pipe.flac")
    with pytest.raises(Exception, match="pipe.flac: not a regular file"):
        load(tmp_path / "pipe.flac")


def _flac_claiming(path, total: int) -> None:
    """A valid short FLAC whose STREAMINFO claims `total` samples (36 bits)."""
    _tone(path, 0.25, format="FLAC")
    b = bytearray(path.read_bytes())
    assert b[:4] == b"fLaC"
    b[21] = (b[21] & 0xF0) | (total >> 32) & 0x0F
    b[22:26] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    path.write_bytes(bytes(b))


def test_memory_follows_the_data_not_the_header(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _flac_claiming(src / "liar.flac", (1 << 36) - 1)  # 2^36 samples: 256 GiB as float32
    _tone(src / "liar.wav", 0.25, subtype="PCM_16")
    b = bytearray((src / "liar.wav").read_bytes())
    data = b.find(b"data")
    b[data + 4 : data + 8] = (0x7FFFFFF0).to_bytes(4, "little")  # the header claims 2 GiB of samples
    (src / "liar.wav").write_bytes(bytes(b))
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableAudioError, match="liar.flac"):  # libsndfile cannot seek its lie
            load(src / "liar.flac", SR)
        x = load(src / "liar.wav", SR)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(x) == SR // 4 and peak < 32 << 20
    store = preprocess(src, tmp_path / "store", **KW)  # stored as what it holds, with a note
    assert len(store) == 1 and store.length(0) == len(x)
    skipped = _skipped(tmp_path / "store")
    assert skipped["liar.flac"][0] == "unreadable"
    assert skipped["liar.wav"][0] == "truncated" and skipped["liar.wav"][1].startswith("stored shortened")


def _sparse_wav(path, frames: int, rate: int = SR) -> None:
    """A 16-bit mono WAV header for `frames` samples, the data a hole (sparse: zeros when read)."""
    size = 2 * frames
    fmt = (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    fmt += rate.to_bytes(4, "little") + (2 * rate).to_bytes(4, "little") + (2).to_bytes(2, "little")
    fmt += (16).to_bytes(2, "little")
    with open(path, "wb") as f:
        f.write(b"RIFF" + (36 + size).to_bytes(4, "little") + b"WAVEfmt " + fmt + b"data")
        f.write(size.to_bytes(4, "little"))
        f.truncate(44 + size)


def test_a_sparse_silent_file_costs_one_block(tmp_path):
    from clmr.data.preprocessing import decode

    path = tmp_path / "sparse.wav"
    _sparse_wav(path, 30 * 60 * SR)  # half an hour of holes: 29 MB of int16 if it were kept
    tracemalloc.start()
    try:
        status, pcm, detail = decode(str(path), SR, 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (status, pcm) == ("silent", None) and "silent" in detail
    assert peak < 8 << 20


@pytest.mark.parametrize(
    "ext,fmt", [("wav", "WAV"), ("aiff", "AIFF"), ("au", "AU"), ("mp3", "MP3"), ("opus", "OGG")]
)
def test_a_truncated_file_is_stored_with_a_note(tmp_path, ext, fmt):
    src = tmp_path / "src"
    src.mkdir()
    rate = 48000 if ext == "opus" else SR
    subtype = {"mp3": "MPEG_LAYER_III", "opus": "OPUS"}.get(ext)
    _tone(src / f"whole.{ext}", 3.0, rate, format=fmt, subtype=subtype)
    _tone(src / f"cut.{ext}", 3.0, rate, format=fmt, subtype=subtype)
    data = (src / f"cut.{ext}").read_bytes()
    (src / f"cut.{ext}").write_bytes(data[: len(data) // 2])
    store = preprocess(src, tmp_path / "store", **KW)
    assert len(store) == 2
    skipped = _skipped(tmp_path / "store")
    assert list(skipped) == [f"cut.{ext}"] and skipped[f"cut.{ext}"][0] == "truncated"
    meta = store.meta
    assert meta["notes"] == {"truncated": 1} and meta["skipped"] == {}


@pytest.mark.parametrize(
    "options,match",
    [
        (["--shard-mb", "inf"], "--shard-mb"),
        (["--shard-mb", "nan"], "--shard-mb"),
        (["--shard-mb", "1e30"], "--shard-mb"),
        (["--sample-rate", "1000000000"], "sample_rate must be at most"),
        (["--workers", "100000"], "workers must be at most"),
    ],
)
def test_preprocess_flags_are_range_checked_before_anything_is_written(tmp_path, options, match, capsys):
    from clmr.cli import main

    src = _source(tmp_path, ("a.wav",))
    out = tmp_path / "out"
    assert main(["preprocess", str(src), "--out", str(out), "--quiet", *options]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_download_flags_are_range_checked(tmp_path, capsys):
    from clmr.cli import main

    assert main(["download", "gtzan", "--root", str(tmp_path / "r"), "--retries", "1000000000"]) == 2
    assert "--retries" in capsys.readouterr().err and not (tmp_path / "r").exists()
    (tmp_path / "blocker").write_text("a file")
    assert main(["download", "gtzan", "--root", str(tmp_path / "blocker")]) == 2
    err = capsys.readouterr().err
    assert "blocker: exists and is not a folder" in err and len(err.strip().splitlines()) == 1
    assert main(["download", "gtzan", "--root", str(tmp_path / "blocker" / "sub")]) == 2
    err = capsys.readouterr().err
    assert "blocker" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_foreign_folder_is_refused_and_left_as_it_was(tmp_path):
    src = _source(tmp_path)
    out = tmp_path / "mine"
    (out / "shards").mkdir(parents=True)
    (out / "drafts").mkdir()
    (out / "shards" / "00007.npy").write_bytes(b"user data")
    (out / "drafts" / "keep.tmp").write_bytes(b"user draft")
    for overwrite in (False, True):
        with pytest.raises(files.OutputError, match="did not make"):
            preprocess(src, out, overwrite=overwrite, **KW)
    assert (out / "shards" / "00007.npy").read_bytes() == b"user data"
    assert (out / "drafts" / "keep.tmp").read_bytes() == b"user draft"
    assert sorted(p.name for p in out.rglob("*")) == ["00007.npy", "drafts", "keep.tmp", "shards"]


def test_overwrite_removes_only_what_clmr_wrote(tmp_path):
    src = _source(tmp_path)
    out = tmp_path / "store"
    preprocess(src, out, **KW)
    (out / "notes.txt").write_text("mine")
    (out / "shards" / "keep.tmp").write_text("also mine")
    store = preprocess(src, out, overwrite=True, shard_bytes=SR, **KW)  # other params: a full rebuild
    assert len(store) == 3 and store.meta["shards"] == 3
    assert (out / "notes.txt").read_text() == "mine" and (
        out / "shards" / "keep.tmp"
    ).read_text() == "also mine"
    # a user's file where clmr would write next is never overwritten
    (out / "index.parquet").unlink()
    (out / "meta.json").unlink()
    json.loads((out / MANIFEST).read_text())  # still clmr's
    assert clear_folder(out) == ["notes.txt", "shards/keep.tmp"]
    (out / "shards" / "00000.npy").write_bytes(b"user")
    with pytest.raises(files.OutputError, match="00000.npy: a file clmr did not write"):
        preprocess(src, out, **KW)
    assert (out / "shards" / "00000.npy").read_bytes() == b"user"


def test_a_manifest_naming_files_outside_its_folder_is_not_trusted(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    out = tmp_path / "store"
    out.mkdir()
    for names in (["../precious.txt"], [str(outside)], "meta.json"):
        (out / MANIFEST).write_text(json.dumps({"written": names}))
        with pytest.raises(files.OutputError, match="not a clmr file manifest"):
            clear_folder(out)
    assert outside.read_text() == "keep"


def test_a_store_made_before_manifests_is_adopted(tmp_path):
    src = _source(tmp_path)
    out = tmp_path / "store"
    preprocess(src, out, **KW)
    (out / MANIFEST).unlink()
    (out / ".clmr.lock").unlink()
    assert len(preprocess(src, out, **KW)) == 3  # reused as it is
    (out / "extra.txt").write_text("user")
    assert len(preprocess(src, out, overwrite=True, **KW)) == 3
    assert (out / "extra.txt").read_text() == "user"
    meta = json.loads((out / "meta.json").read_text())
    del meta["params"]["sources"]  # as an older clmr wrote it
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="older clmr"):
        preprocess(src, out, **KW)


def test_a_second_writer_is_refused_clearly(tmp_path):
    src = _source(tmp_path)
    out = tmp_path / "store"
    preprocess(src, out, **KW)
    with folder_lock(out, "store"):
        with pytest.raises(files.OutputError, match="another clmr process is writing"):
            preprocess(src, out, overwrite=True, **KW)
    assert len(Store(out)) == 3  # untouched by the refused run


class _Stop(Exception):
    pass


def _interrupted_preprocess(src, out, at_shard: int) -> None:
    """Preprocess `src` into `out` and stop it (as a crash would) once shard `at_shard` is written."""

    def stop(shard):
        if shard == at_shard:
            raise _Stop

    with pytest.raises(_Stop):
        preprocess(src, out, shard_bytes=SR, on_shard=stop, **KW)


def test_a_resume_after_the_sources_changed_is_refused(tmp_path):
    src = _source(tmp_path, ("a.wav", "b.wav", "c.wav", "d.wav"))
    out = tmp_path / "store"
    _interrupted_preprocess(src, out, at_shard=1)
    _tone(src / "a.wav", 0.75)  # a stored file changes
    with pytest.raises(StoreError, match="source files that changed"):
        preprocess(src, out, shard_bytes=SR, **KW)
    store = preprocess(src, out, shard_bytes=SR, overwrite=True, **KW)
    assert store.length(0) == int(0.75 * SR)
    _tone(src / "d.wav", 0.25)  # a finished store is not reused either
    with pytest.raises(StoreError, match="source files that changed"):
        preprocess(src, out, shard_bytes=SR, **KW)


@pytest.mark.parametrize(
    "content,match",
    [
        ("path,label\ncafé.wav,rock\n".encode("latin-1"), r"labels.csv: not UTF-8 text \(byte 0xe9"),
        (b"path,label,path\na.wav,rock,b.wav\n", "labels.csv: column 'path' appears more than once"),
        (b"path,label\na.wav," + b"x" * 200_000 + b"\n", "labels.csv, near line 2: not a readable CSV"),
    ],
)
def test_unclean_labels_files_are_refused_naming_them(tmp_path, content, match):
    src = _source(tmp_path, ("a.wav",))
    (tmp_path / "labels.csv").write_bytes(content)
    with pytest.raises(DatasetError, match=match):
        preprocess(src, tmp_path / "store", labels=tmp_path / "labels.csv", **KW)
    assert not (tmp_path / "store").exists()


def test_a_utf16_labels_file_is_read(tmp_path):
    src = _source(tmp_path, ("a.wav", "b.wav"))
    (tmp_path / "labels.csv").write_bytes("path,label\na.wav,rock\nb.wav,[bold]jazz[/]\n".encode("utf-16"))
    store = preprocess(src, tmp_path / "store", labels=tmp_path / "labels.csv", **KW)
    assert store.vocab == ["[bold]jazz[/]", "rock"]


def test_disk_full_names_the_file_leaves_no_partial_output_and_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    import clmr.data.preprocessing as pre

    src = _source(tmp_path, ("a.wav", "b.wav", "c.wav", "d.wav"))
    clean = preprocess(src, tmp_path / "clean", shard_bytes=SR, **KW)
    out = tmp_path / "store"
    real_write = pre.np.lib.format.write_array_header_1_0
    calls = []

    def full(f, header):  # the disk fills while the third shard is written
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(f, header)

    monkeypatch.setattr(pre.np.lib.format, "write_array_header_1_0", full)
    with pytest.raises(StoreError, match=r"shards/00002.npy: No space left on device.*rerun"):
        preprocess(src, out, shard_bytes=SR, **KW)
    assert not [p for p in out.rglob("*") if p.name.startswith(".0")]  # no temp file left
    monkeypatch.setattr(pre.np.lib.format, "write_array_header_1_0", real_write)
    written = []
    store = preprocess(src, out, shard_bytes=SR, on_shard=written.append, **KW)
    assert written == [2, 3] and len(store) == len(clean)
    for i in range(len(store)):
        np.testing.assert_array_equal(store.pcm(i), clean.pcm(i))


def test_a_file_where_a_folder_belongs_is_one_line(tmp_path, capsys):
    from clmr.cli import main

    src = _source(tmp_path, ("a.wav",))
    (tmp_path / "blocker").write_text("a file")
    assert main(["preprocess", str(src), "--out", str(tmp_path / "blocker" / "store"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "blocker" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "blocker").read_text() == "a file"


def test_a_damaged_store_is_one_line(tmp_path):
    src = _source(tmp_path, ("a.wav",))
    out = tmp_path / "store"
    preprocess(src, out, **KW)
    index = (out / "index.parquet").read_bytes()
    (out / "index.parquet").write_bytes(index[: len(index) // 2])
    with pytest.raises(StoreError, match="index.parquet: unreadable"):
        Store(out)
    for content in ("{not json", "[1, 2]"):
        (out / "meta.json").write_text(content)
        with pytest.raises(StoreError, match="meta.json: "):
            Store(out)


def test_damaged_resume_state_is_redone_or_named(tmp_path):
    src = _source(tmp_path, ("a.wav", "b.wav", "c.wav", "d.wav"))
    clean = preprocess(src, tmp_path / "clean", shard_bytes=SR, **KW)
    out = tmp_path / "store"
    _interrupted_preprocess(src, out, at_shard=2)
    (out / ".partial" / "00001.json").write_text("{torn")  # a damaged journal: its shard is redone
    written = []
    store = preprocess(src, out, shard_bytes=SR, on_shard=written.append, **KW)
    assert written == [1, 2, 3] and len(store) == len(clean)
    _interrupted_preprocess(src, tmp_path / "again", at_shard=2)
    (tmp_path / "again" / ".partial" / "params.json").write_text("[1")
    with pytest.raises(StoreError, match="params.json: unreadable"):
        preprocess(src, tmp_path / "again", shard_bytes=SR, **KW)


def test_a_read_only_folder_is_one_line_and_a_rerun_after_the_fix_works(tmp_path, unprivileged):
    src = _source(tmp_path, ("a.wav",))
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    cmd = [
        *unprivileged,
        sys.executable,
        "-m",
        "clmr",
        "preprocess",
        str(src),
        "--out",
        str(parent / "store"),
    ]
    try:  # a real process (for root: one without CAP_DAC_OVERRIDE, which ignores the folder's mode)
        run = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, timeout=120)
    finally:
        parent.chmod(0o755)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == f"clmr preprocess: error: {parent / 'store'}: Permission denied"
    assert list(parent.iterdir()) == []
    from clmr.cli import main

    assert main(["preprocess", str(src), "--out", str(parent / "store"), "--quiet", "--min-length", "1"]) == 0
