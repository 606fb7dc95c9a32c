"""Folder jobs survive bad entries: each is listed with its reason and the job goes on (1-sample file,
absurd header rate, FIFO, symlink loop, non-UTF-8 name, unreadable folder); decoder chatter goes to the
report, not the terminal; two `clmr embed` into one table lose no rows."""

import csv
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from clmr.cli import main
from clmr.data.synthetic import draw_piece, render
from clmr.inference.table import read_index
from clmr.models import CLMR, Head, SampleCNN, save_model

SR = 8000
ROOT = Path(__file__).resolve().parents[1]


def piece(seed: int, seconds: float = 1.0, rate: int = SR) -> np.ndarray:
    rng = np.random.default_rng([seed, 11])
    return render(draw_piece(rng), seconds, rate, rng)


READABLE = sorted(["good.wav", "good2.flac"] + (["hidden.wav"] if os.geteuid() == 0 else []))
"""The usable files of `bad_folder` (root reads the chmod-000 folder anyway)."""


def report(csv_path: Path) -> dict[str, tuple[str, str]]:
    with open(csv_path, newline="") as f:
        return {r["path"].rsplit("/", 1)[-1]: (r["reason"], r["detail"]) for r in csv.DictReader(f)}


@pytest.fixture()
def no_hang():
    """Fail instead of hanging forever (a FIFO read blocks until a writer comes)."""

    def hung(*_):
        raise TimeoutError("the job hung")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture()
def bad_folder(tmp_path):
    root = tmp_path / "music"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "good.wav", piece(0), SR)
    sf.write(root / "sub" / "good2.flac", piece(1), SR)
    sf.write(root / "one.wav", np.array([0.5], np.float32), 44100)  # < one sample at 8 kHz
    sf.write(root / "rate.wav", piece(2), SR)
    data = bytearray((root / "rate.wav").read_bytes())
    data[24:28] = struct.pack("<I", 1)  # the header now claims 1 Hz: hours of audio after resampling
    (root / "rate.wav").write_bytes(bytes(data))
    os.mkfifo(root / "pipe.wav")
    os.symlink("loop.wav", root / "loop.wav")
    sf.write(root / "cafe.wav", piece(3), SR)
    os.rename(os.fsencode(root / "cafe.wav"), os.fsencode(root) + b"/caf\xe9.wav")  # Latin-1: not UTF-8
    locked = root / "locked"
    locked.mkdir()
    sf.write(locked / "hidden.wav", piece(4), SR)
    locked.chmod(0)
    yield root
    locked.chmod(0o755)


def test_embed_lists_every_bad_entry_and_embeds_the_rest(tmp_path, tiny_model_file, bad_folder, no_hang):
    out = tmp_path / "e.parquet"
    for _ in range(2):  # the rerun goes past the same files too
        assert main(["embed", str(tiny_model_file), str(bad_folder), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.rsplit("/", 1)[1] for p in read_index(out)[0]) == READABLE
    found = report(tmp_path / "e.errors.csv")
    assert found["one.wav"][0] == "empty" and "less than one sample" in found["one.wav"][1]
    assert found["rate.wav"][0] == "unreadable" and "1 Hz" in found["rate.wav"][1]
    assert "not a regular file" in found["pipe.wav"][1]
    assert "symbolic link loop" in found["loop.wav"][1]
    assert "not valid UTF-8" in found["caf\\xe9.wav"][1]
    if "hidden.wav" not in READABLE:
        assert "folder not readable" in found["locked"][1]


def test_tag_and_similar_on_bad_entries_answer_in_one_line(tmp_path, bad_folder, capsys, no_hang):
    torch.manual_seed(0)
    tagger = CLMR(SampleCNN(width=1 / 16, n_blocks=5), head=Head("linear", 32, 3), sample_rate=SR)
    ckpt = save_model(tagger, tmp_path / "tagger.safetensors")
    assert main(["tag", str(ckpt), str(bad_folder), "--json"]) == 1
    captured = capsys.readouterr()
    assert sorted(Path(k).name for k in json.loads(captured.out)) == READABLE
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped ")]
    assert {"one.wav", "rate.wav", "pipe.wav", "loop.wav"} <= {
        line.split(":")[0].rsplit("/", 1)[-1] for line in skipped
    }
    assert "Traceback" not in captured.err
    out = tmp_path / "e.parquet"
    assert main(["embed", str(ckpt), str(bad_folder / "good.wav"), "--out", str(out), "--quiet"]) == 0
    for query in ("loop.wav", "pipe.wav", "one.wav", "rate.wav"):
        capsys.readouterr()
        assert main(["similar", str(bad_folder / query), "--index", str(out)]) == 2
        err = capsys.readouterr().err
        assert query in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def damaged_mp3(path: Path) -> None:
    sf.write(path, piece(5, 3.0, 16000), 16000)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 400] = b"\xff" * 400
    path.write_bytes(bytes(data))


def test_decoder_chatter_goes_to_the_report_not_the_terminal(tmp_path, tiny_model_file, capfd):
    root = tmp_path / "music"
    root.mkdir()
    damaged_mp3(root / "damaged.mp3")
    sf.write(root / "fine.wav", piece(6), SR)
    out = tmp_path / "e.parquet"
    assert main(["embed", str(tiny_model_file), str(root), "--out", str(out), "--quiet"]) == 0
    err = capfd.readouterr().err
    assert "MPEG" not in err and "libmpg123" not in err and "1 embedded with decoder warnings" in err
    found = report(tmp_path / "e.errors.csv")
    assert list(found) == ["damaged.mp3"] and found["damaged.mp3"][0] == "decoder-notes"
    assert "Illegal Audio-MPEG-Header" in found["damaged.mp3"][1]
    assert len(read_index(out)[0]) == 2


def test_two_embed_processes_into_one_table_keep_every_row(tmp_path, tiny_model_file):
    root = tmp_path / "music"
    root.mkdir()
    for i in range(24):
        sf.write(root / f"s{i:02d}.wav", piece(i, 0.2), SR)
    out = tmp_path / "e.parquet"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "clmr",
        "embed",
        str(tiny_model_file),
        str(root),
        "--out",
        str(out),
        "--quiet",
    ]
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    paths = read_index(out)[0]
    assert len(paths) == len(set(paths)) == 24


def test_an_unreadable_folder_is_listed_even_for_root(tmp_path, monkeypatch):
    """A folder scandir cannot open (chmod 000 for a normal user) is a listed problem, not dropped."""
    from clmr.inference.paths import find_audio

    (tmp_path / "locked").mkdir()
    sf.write(tmp_path / "ok.wav", piece(0), SR)
    real = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = find_audio([str(tmp_path)])
    assert [p.name for p in found.files] == ["ok.wav"]
    assert found.problems == [(str(tmp_path / "locked"), "folder cannot be listed (Permission denied)")]
