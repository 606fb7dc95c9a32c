"""Inputs a new user may well give clmr, each ending in one line naming the file or option, never a
traceback: a table of another model's width, Latin-1 text files, a read-only output folder, sizes that
would not fit in memory."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import clmr.cli.info
from clmr.cli import main
from clmr.data.synthetic import GenerateError, generate
from clmr.files import OutputError, acquire_lock
from clmr.limits import MAX_PIECE_SAMPLES
from clmr.texts import read_lines, read_text


def _one_error_line(capsys, *names: str) -> str:
    """The command's stderr: exactly one line, naming each of `names`."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, err
    return err


@pytest.fixture()
def table(tmp_path, tiny_model_file, synthetic_music):
    """A 3-song parquet table of the tiny model (32-dimensional embeddings), written by `clmr embed`."""
    out = tmp_path / "songs.parquet"
    songs = [str(f) for f in synthetic_music.files[:3]]
    assert main(["embed", "--model", str(tiny_model_file), *songs, "--out", str(out), "--quiet"]) == 0
    return out


def _rewidth(vectors: np.ndarray, width: int) -> np.ndarray:
    return np.resize(vectors, (len(vectors), width)).astype(np.float32)


@pytest.mark.parametrize("width", [20, 64])  # 64: 3 x 64 values reshape into 6 rows of 32 without an error
def test_similar_refuses_a_table_whose_width_is_not_its_models(table, width, synthetic_music, capsys):
    t = pq.read_table(table)
    vectors = t.column("embedding").combine_chunks().flatten().to_numpy().reshape(len(t), -1)
    column = pa.FixedSizeListArray.from_arrays(pa.array(_rewidth(vectors, width).ravel()), width)
    narrow = table.with_name("other.parquet")
    pq.write_table(t.set_column(3, "embedding", column).replace_schema_metadata(t.schema.metadata), narrow)
    query = str(synthetic_music.files[0])
    assert main(["similar", query, "--index", str(narrow)]) == 2
    _one_error_line(capsys, "other.parquet", f"rows are {width} wide", "32-dimensional")
    # the same table as .npz
    npz = table.with_suffix(".npz")
    assert main(["similar", query, "--index", str(table)]) == 0  # the untouched table works
    capsys.readouterr()
    from clmr.inference.formats import write_table

    write_table(npz, t.schema, [t])
    arrays = dict(np.load(npz))
    arrays["embedding"] = _rewidth(arrays["embedding"], width)
    np.savez(npz, **arrays)
    assert main(["similar", query, "--index", str(npz)]) == 2
    _one_error_line(capsys, "songs.npz", f"shape (3, {width})", "32-dimensional")


LATIN1 = "guitar\nJosé's drums\n".encode("latin-1")


@pytest.mark.parametrize(
    "command",
    [
        ["tag", "--model", "MODEL", "SONG", "--tags", "FILE"],
        ["convert", "MODEL", "OUT", "--tags", "FILE"],
        ["pretrain", "--data", "STORE", "--out", "RUN", "--config", "FILE"],
        ["pretrain", "--data", "STORE", "--out", "RUN", "--config", "FILE", "--print-config"],
        ["preprocess", "MUSIC", "--out", "STORE", "--labels", "FILE"],
    ],
    ids=["tag", "convert", "pretrain", "print-config", "preprocess"],
)
def test_a_latin1_text_file_is_refused_naming_it(tmp_path, command, tiny_model_file, synthetic_music, capsys):
    text = tmp_path / "names.txt"
    text.write_bytes(b"# " + LATIN1 if "pretrain" in command else LATIN1)
    given = {
        "MODEL": str(tiny_model_file),
        "SONG": str(synthetic_music.files[0]),
        "FILE": str(text),
        "MUSIC": str(synthetic_music.root),
    }
    argv = [given.get(a, str(tmp_path / a) if a.isupper() else a) for a in command]
    assert main(argv) == 2
    _one_error_line(capsys, "names.txt", "not UTF-8 text (byte 0xe9 at offset", "line 2", "save the")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names.txt"]  # nothing written


def test_text_files_in_utf8_or_utf16_are_read_and_others_are_named(tmp_path):
    path = tmp_path / "tags.txt"
    for data in ("rock\r\nJosé\n\n".encode(), "\ufeffrock\nJosé\n".encode(), "rock\nJosé\n".encode("utf-16")):
        path.write_bytes(data)
        assert read_lines(path) == ["rock", "José"]
    with pytest.raises(ValueError, match=r"tags.txt: not UTF-16 text"):
        path.write_bytes("rock\n".encode("utf-16")[:-1])  # a BOM, then half a character
        read_text(path)
    with pytest.raises(ValueError, match=r"missing.txt: No such file .*\(the --tags file\)"):
        read_text(tmp_path / "missing.txt", what="--tags file")
    with pytest.raises(ValueError, match=rf"{tmp_path}: Is a directory"):
        read_text(tmp_path)


def test_a_yaml_config_with_accents_in_utf8_works(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("# by José\nbatch_size: 4\n", encoding="utf-8")
    argv = ["pretrain", "--data", "s", "--out", "r", "--config", str(config), "--print-config"]
    assert main(argv) == 0
    assert "batch_size: 4" in capsys.readouterr().out


def _deny_lock_files(monkeypatch, err: int = errno.EACCES) -> None:
    """Creating any `*.lock` file fails with `err`, as in a read-only folder (also for root)."""
    real = os.open

    def fake(path, flags, *args, **kwargs):
        if os.fspath(path).endswith(".lock"):
            raise OSError(err, os.strerror(err), os.fspath(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake)


def test_embed_into_a_folder_where_no_lock_can_be_made_is_one_line(
    tmp_path, monkeypatch, tiny_model_file, synthetic_music, capsys
):
    _deny_lock_files(monkeypatch)
    out = tmp_path / "shared" / "songs.parquet"
    song = str(synthetic_music.files[0])
    assert main(["embed", "--model", str(tiny_model_file), song, "--out", str(out), "--quiet"]) == 2
    _one_error_line(capsys, f"{out.parent}: cannot create the lock file .songs.parquet.lock", "writable")
    assert not out.exists()


@pytest.mark.parametrize("err", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_acquire_lock_names_the_folder_and_the_reason(tmp_path, monkeypatch, err):
    _deny_lock_files(monkeypatch, err)
    with pytest.raises(
        OutputError, match=rf"{tmp_path}: cannot create the lock file .x.lock \({os.strerror(err)}"
    ):
        acquire_lock(tmp_path / ".x.lock", "store")


def test_embed_into_a_read_only_folder_for_real(tmp_path, unprivileged, tiny_model_file, synthetic_music):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        cmd = [sys.executable, "-m", "clmr", "embed", "--model", str(tiny_model_file)]
        cmd += [str(synthetic_music.files[0]), "--out", str(folder / "songs.parquet"), "--quiet"]
        run = subprocess.run([*unprivileged, *cmd], capture_output=True, text=True, timeout=120)
    finally:
        folder.chmod(0o755)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == (
        f"clmr embed: error: {folder}: cannot create the lock file .songs.parquet.lock (Permission denied); "
        "the --out folder must be a writable folder"
    )
    assert list(folder.iterdir()) == []


def test_an_os_error_naming_a_file_is_one_line_and_others_keep_their_traceback(monkeypatch, capsys):
    def denied(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/file")

    monkeypatch.setattr(clmr.cli.info, "run", denied)
    assert main(["info", "x"]) == 2
    assert _one_error_line(capsys) == "clmr info: error: /some/file: Permission denied"

    def bug(args):
        raise OSError("not about a file")

    monkeypatch.setattr(clmr.cli.info, "run", bug)
    with pytest.raises(OSError, match="not about a file"):
        main(["info", "x"])


@pytest.mark.parametrize(
    "options,match",
    [
        (["--seconds", "1e9"], r"seconds must be at most 761 at 22,050 Hz .* got 1e\+09"),
        (["--seconds", "1e30"], r"seconds must be at most 761"),
        (["--seconds", "3", "--sample-rate", "8000000"], r"sample_rate must be 1000 to 384,000 Hz"),
        (["--tracks", "100000000"], r"tracks must be at most 1,000,000"),
    ],
)
def test_generate_sizes_are_checked_before_anything_is_allocated(tmp_path, options, match, capsys):
    tracemalloc.start()
    try:
        assert main(["generate", str(tmp_path / "set"), *options]) == 2
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # the 5 GiB note arrays of --seconds 1e9 were allocated before a check
    assert _one_error_line(capsys).startswith("clmr generate: error: ")
    assert not (tmp_path / "set").exists()
    with pytest.raises(GenerateError, match=match):
        generate(tmp_path / "set", **_api(options))


def _api(options: list[str]) -> dict:
    names = {
        "--seconds": ("seconds", float),
        "--sample-rate": ("sample_rate", int),
        "--tracks": ("tracks", int),
    }
    kwargs = {"tracks": 1}
    for flag, value in zip(options[::2], options[1::2], strict=True):
        name, kind = names[flag]
        kwargs[name] = kind(float(value))
    return kwargs


def test_one_sample_past_the_longest_piece_is_refused(tmp_path):
    with pytest.raises(GenerateError, match="seconds must be at most"):
        generate(tmp_path / "a", 1, seconds=(MAX_PIECE_SAMPLES + 1) / 1000, sample_rate=1000)
    assert not (tmp_path / "a").exists()


def test_a_model_cache_where_no_lock_can_be_made_is_one_line(tmp_path, monkeypatch):
    from clmr.models.registry import RegistryError, model_file

    monkeypatch.setenv("CLMR_HOME", str(tmp_path / "cache"))
    _deny_lock_files(monkeypatch, errno.EROFS)
    with pytest.raises(
        RegistryError, match=r"cache: cannot create the lock file .clmr-mtat.lock \(Read-only"
    ):
        model_file("clmr-mtat", load=None, save=None)
