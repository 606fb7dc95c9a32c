"""`clmr embed --workers N`: files decoded in worker processes give the same table, in the same order,
as decoding in the main process (a corrupt file skipped and listed); an interrupted job resumes; a
worker that dies costs only the file it was reading; the worker module does not import torch."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from clmr.audio import UnreadableAudioError
from clmr.cli import main
from clmr.data.synthetic import draw_piece, render
from clmr.inference import catalogue
from clmr.inference.catalogue import embed_catalogue
from clmr.models import load_model
from clmr.songs.crops import file_songs
from clmr.songs.workers import DecodePool

SR = 8000
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def folder(tmp_path):
    """Seven pieces of 0.3 to 4 s at 16 kHz (resampled to the model's 8 kHz; the longest spans several
    chunks of crops) and a corrupt wav in the middle."""
    root = tmp_path / "music"
    root.mkdir()
    for i, seconds in enumerate([0.3, 4.0, 1.0, 2.5, 0.6, 3.0, 1.5]):
        rng = np.random.default_rng([i, 5])
        sf.write(root / f"s{i}.wav", render(draw_piece(rng), seconds, 16000, rng), 16000)
    (root / "s3b.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    return root


def table(out: Path) -> dict:
    """Every column of a table as Python values, and its errors.csv."""
    return {**pq.read_table(out).to_pydict(), "errors": out.with_name("e.errors.csv").read_text()}


def no_decode_workers() -> bool:
    """No decode worker process of this test run is left alive (waits a little for their exit)."""
    deadline = time.monotonic() + 10
    while any(p.name == "clmr-decode" for p in mp.active_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(p.name == "clmr-decode" for p in mp.active_children())


def test_workers_give_the_same_table_in_the_same_order(tmp_path, tiny_model_file, folder):
    model = load_model(tiny_model_file)
    tables = []
    for workers in (0, 2):
        out = tmp_path / str(workers) / "e.parquet"
        summary = embed_catalogue(
            model, tiny_model_file, [str(folder)], out, per_crop=True, progress=False, workers=workers
        )
        assert (summary.embedded, [Path(f[0]).name for f in summary.failed]) == (7, ["s3b.wav"])
        tables.append(table(out))
    assert tables[0] == tables[1]  # paths, durations, crop counts, embeddings bit for bit, errors
    assert [Path(p).name for p in tables[0]["path"]] == [f"s{i}.wav" for i in range(7)]
    assert "s3b.wav,unreadable," in tables[0]["errors"]
    assert no_decode_workers()


def test_an_interrupted_job_with_workers_resumes(tmp_path, tiny_model_file, folder, monkeypatch):
    model = load_model(tiny_model_file)
    reference = tmp_path / "ref" / "e.parquet"
    embed_catalogue(model, tiny_model_file, [str(folder)], reference, progress=False, workers=0)
    add = catalogue.EmbeddingWriter.add

    def interrupted(writer, output):
        if len(writer.done) == 3:
            raise KeyboardInterrupt
        add(writer, output)

    out = tmp_path / "e.parquet"
    monkeypatch.setattr(catalogue.EmbeddingWriter, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embed_catalogue(model, tiny_model_file, [str(folder)], out, progress=False, workers=2)
    assert no_decode_workers()  # the pool stopped with the job
    assert len(pq.read_table(out)) == 3
    monkeypatch.setattr(catalogue.EmbeddingWriter, "add", add)
    summary = embed_catalogue(model, tiny_model_file, [str(folder)], out, progress=False, workers=2)
    assert (summary.skipped, summary.embedded) == (3, 4)
    assert pq.read_table(out).to_pydict() == pq.read_table(reference).to_pydict()


def test_a_worker_that_dies_costs_only_the_file_it_was_reading(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate([0.5, 300.0, 0.5, 0.7]):  # file 1: 19 chunks, more than a worker buffers
        paths.append(str(tmp_path / f"f{i}.wav"))
        sf.write(paths[-1], 0.3 * rng.standard_normal(int(seconds * SR)).astype(np.float32), SR)
    params = (SR, 1000, 128, None)  # sample rate, crop length, crops per chunk, hop
    pool = DecodePool(paths, 2, params, size=2)
    try:
        deadline = time.monotonic() + 60
        while not pool.workers[1].box.full():  # worker 1 is stuck sending file 1
            assert time.monotonic() < deadline, "worker 1 never filled its queue"
            time.sleep(0.01)
        os.kill(pool.workers[1].process.pid, signal.SIGKILL)
        got = []
        for i in range(4):
            crops = pool.crops(i)
            try:
                got.append(np.concatenate(list(crops)))
            except UnreadableAudioError as err:
                got.append(err)
    finally:
        pool.close()
    assert isinstance(got[1], UnreadableAudioError) and "killed by signal 9" in got[1].detail
    assert got[1].path == paths[1]
    for i in (0, 2, 3):  # file 3 came from the worker started in place of the dead one
        key, open_crops = next(file_songs([paths[i]], *params))
        np.testing.assert_array_equal(got[i], np.concatenate(list(open_crops())))
    assert no_decode_workers()


def test_bad_workers_option_fails_before_anything_is_written(tmp_path, tiny_model_file, folder, capsys):
    out = tmp_path / "e.parquet"
    for workers, message in (("-1", "workers must be a whole number >= 0"), ("100000", "at most 256")):
        argv = ["embed", str(tiny_model_file), str(folder), "--out", str(out), "--workers", workers]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not out.exists()


def test_the_worker_module_does_not_import_torch():
    code = "import sys, clmr.songs.workers; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0


def test_workers_that_cannot_start_stop_the_job_in_one_line(tmp_path):
    song = tmp_path / "a.wav"
    sf.write(song, 0.3 * np.ones(SR, np.float32), SR)
    script = tmp_path / "unguarded.py"  # no `if __name__ == "__main__":`: each worker reruns it and fails
    script.write_text(
        "from clmr.songs.workers import decoded_songs\n"
        f"for key, open_crops in decoded_songs([{str(song)!r}] * 2, {SR}, 1000, workers=1):\n"
        "    list(open_crops())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "ClmrError: a decode worker process failed to start (exit status 1" in run.stderr
    assert "__name__ == '__main__'" in run.stderr
