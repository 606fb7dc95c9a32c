"""`clmr embed` and `clmr similar`: one row per readable file in any format, a report of the others,
resume after a finished or killed run, metadata in the table, nearest neighbours."""

import csv
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from clmr.cli import main
from clmr.data.synthetic import draw_piece, render
from clmr.errors import ClmrError
from clmr.inference.catalogue import embed_catalogue
from clmr.inference.similar import Index
from clmr.inference.table import EmbeddingWriter, TableError, parts_dir, read_index
from clmr.models import CLMR, SampleCNN, save_model

SR = 8000


def write_piece(path, seed: int, seconds: float = 1.0, sample_rate: int = 16000) -> None:
    rng = np.random.default_rng([seed, 3])
    sf.write(path, render(draw_piece(rng), seconds, sample_rate, rng), sample_rate)


@pytest.fixture()
def ckpt(tiny_model_file):
    """The shared tiny model file (conftest), read-only."""
    return tiny_model_file


@pytest.fixture()
def music(tmp_path):
    root = tmp_path / "music"
    (root / "sub").mkdir(parents=True)
    for i, fmt in enumerate(["wav", "flac", "mp3", "ogg"]):
        write_piece(root / ("sub" if i % 2 else ".") / f"song{i}.{fmt}", i)
    (root / "broken.mp3").write_bytes(b"ID3 this is not audio")
    sf.write(root / "silent.flac", np.zeros(4000, np.float32), SR)
    sf.write(root / "empty.wav", np.zeros(0, np.float32), SR)
    (root / "notes.txt").write_text("not audio, ignored in folders")
    return root


def rows(table_path):
    table = pq.read_table(table_path)
    return {p: i for i, p in enumerate(table.column("path").to_pylist())}, table


def test_embed_folder_of_formats_reports_unreadable_and_records_metadata(tmp_path, ckpt, music):
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(ckpt), str(music), "--out", str(out), "--per-crop", "--quiet"]) == 0
    index, table = rows(out)
    assert sorted(p.rsplit("/", 1)[1] for p in index) == ["song0.wav", "song1.flac", "song2.mp3", "song3.ogg"]
    assert table.schema.field("embedding").type.list_size == 32
    assert all(
        n == len(c) > 0
        for n, c in zip(table["n_crops"].to_pylist(), table["crop_embeddings"].to_pylist(), strict=True)
    )
    assert all(0.9 < d < 1.2 for d in table["duration"].to_pylist())  # mp3 may carry encoder padding
    with open(tmp_path / "emb.errors.csv") as f:
        errors = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in csv.DictReader(f)}
    assert errors == {"broken.mp3": "unreadable", "silent.flac": "silent", "empty.wav": "empty"}
    meta = json.loads(table.schema.metadata[b"clmr"])
    assert meta["checkpoint"] == str(ckpt) and meta["config"]["sample_rate"] == SR
    assert meta["config"]["meta"] == {"note": "x"} and len(meta["checkpoint_sha256"]) == 64
    assert not parts_dir(out).exists()


def test_rerun_skips_finished_tracks_and_embeds_new_ones(tmp_path, ckpt, music):
    out = tmp_path / "emb.parquet"
    from clmr.models import load_model

    model = load_model(ckpt)
    first = embed_catalogue(model, ckpt, [str(music)], out, progress=False)
    assert (first.embedded, first.skipped, len(first.failed)) == (4, 0, 3)
    before = read_index(out)
    write_piece(music / "sub" / "new.wav", 9)
    second = embed_catalogue(model, ckpt, [str(music / "**" / "*.wav"), str(music)], out, progress=False)
    assert (second.embedded, second.skipped) == (1, 4)
    paths, vectors, _ = read_index(out)
    assert len(paths) == len(set(paths)) == 5
    np.testing.assert_array_equal(vectors[:4], before[1])


def test_killed_run_keeps_finished_parts(tmp_path, ckpt, music):
    from clmr.inference import embed_files
    from clmr.inference.catalogue import checkpoint_metadata
    from clmr.models import load_model

    model = load_model(ckpt)
    out = tmp_path / "emb.parquet"
    done = [music / "song0.wav", music / "sub" / "song1.flac"]
    writer = EmbeddingWriter(out, checkpoint_metadata(model, ckpt), model.embedding_dim, flush_rows=1)
    for result in embed_files(model, [str(p.resolve()) for p in done]):
        writer.add(result)  # each row is flushed to its own part; then the "kill": no close()
    writer.lock.release()  # the kernel drops a killed process's lock
    (parts_dir(out) / ".part-000009.parquet.tmp").write_bytes(b"half-written")
    assert not out.exists() and len(list(parts_dir(out).glob("part-*.parquet"))) == 2
    summary = embed_catalogue(model, ckpt, [str(music)], out, progress=False)
    assert (summary.embedded, summary.skipped) == (2, 2)
    assert len(read_index(out)[0]) == 4 and not parts_dir(out).exists()


def test_a_table_is_not_extended_with_another_model(tmp_path, ckpt, music):
    out = tmp_path / "emb.parquet"
    main(["embed", str(ckpt), str(music / "song0.wav"), "--out", str(out), "--quiet"])
    torch.manual_seed(1)
    other = save_model(
        CLMR(SampleCNN(width=1 / 16, n_blocks=5), sample_rate=SR), tmp_path / "other.safetensors"
    )
    from clmr.models import load_model

    with pytest.raises(TableError, match="checkpoint_sha256"):
        embed_catalogue(load_model(other), other, [str(music)], out, progress=False)
    assert (
        main(["embed", str(other), str(music), "--out", str(out), "--quiet"]) == 2
    )  # CLI: message, no traceback


def test_similar_returns_the_query_first(tmp_path, ckpt, music, capsys):
    out = tmp_path / "emb.parquet"
    main(["embed", str(ckpt), str(music), "--out", str(out), "--quiet"])
    index = Index.load(out)
    for path in index.paths:
        hits = index.query(path, k=3)
        assert hits[0][0] == path and hits[0][1] == pytest.approx(1.0, abs=1e-5)
        assert len(hits) == 3 and hits[0][1] >= hits[1][1] >= hits[2][1]
    # A file outside the index is embedded on the fly with the index's checkpoint.
    copy = tmp_path / "copy.flac"
    shutil.copy(music / "sub" / "song1.flac", copy)
    capsys.readouterr()
    assert main(["similar", "--index", str(out), str(copy), "--k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["path"] == str((music / "sub" / "song1.flac").resolve())
    assert hits[0]["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_bad_options_fail_with_a_message_before_anything_is_written(tmp_path, ckpt, music, capsys):
    out = tmp_path / "emb.parquet"
    song = str(music / "song0.wav")
    for argv, message in (
        (["embed", str(ckpt), str(music), "--out", str(out), "--batch-size", "0"], "batch size"),
        (["embed", str(ckpt), str(music), "--out", str(out), "--device", "tpu"], "unknown device"),
        (["embed", str(ckpt), str(music), "--out", str(tmp_path)], "is a folder"),
        (["embed", str(ckpt), str(tmp_path / "nothing-here"), "--out", str(out)], "no such file or folder: "),
        (["embed", str(ckpt), str(music), "--out", str(tmp_path / "emb.txt")], "unknown table format '.txt'"),
        (
            ["embed", str(ckpt), str(music), "--out", str(tmp_path / "e.csv"), "--per-crop"],
            "one row per song",
        ),
        (["embed", str(ckpt), str(music), "--out", str(out), "--hop", "0"], "hop must be a positive"),
        (["embed", str(ckpt), str(music), "--out", str(out), "--hop", "nan"], "hop must be a positive"),
        (["tag", str(ckpt), song, "--top", "0"], "top must be"),
        (["similar", "--index", str(out), song, "--k", "0"], "k must be"),
    ):
        capsys.readouterr()
        assert main([*argv, "--quiet"] if argv[0] == "embed" else argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
        assert not out.exists() and not parts_dir(out).exists()
        assert not list(tmp_path.glob("e*.*")), list(tmp_path.glob("e*.*"))
    if not torch.cuda.is_available():
        capsys.readouterr()
        assert main(["embed", str(ckpt), song, "--out", str(out), "--device", "cuda", "--quiet"]) == 2
        assert "no CUDA device" in capsys.readouterr().err and not out.exists()


def test_undecodable_formats_in_folders_are_reported(tmp_path, ckpt, music):
    (music / "sub" / "song.m4a").write_bytes(b"AAC audio libsndfile cannot decode")
    (music / "sub" / "._song.mp3").write_bytes(b"macOS resource fork: hidden, not audio")
    from clmr.models import load_model

    out = tmp_path / "emb.parquet"
    summary = embed_catalogue(load_model(ckpt), ckpt, [str(music)], out, progress=False)
    assert summary.embedded == 4
    reasons = {path.rsplit("/", 1)[1]: reason for path, reason, _ in summary.failed}
    assert reasons["song.m4a"] == "unsupported"
    assert "._song.mp3" not in reasons  # hidden files are left out, as preprocess leaves them
    only = tmp_path / "only"
    only.mkdir()
    (only / "a.m4a").write_bytes(b"x")
    with pytest.raises(ClmrError, match="a.m4a.*convert"):
        embed_catalogue(load_model(ckpt), ckpt, [str(only)], tmp_path / "x.parquet", progress=False)
    with pytest.raises(ClmrError, match="a.m4a.*convert"):  # named, not found in a folder
        embed_catalogue(load_model(ckpt), ckpt, [str(only / "a.m4a")], tmp_path / "y.parquet", progress=False)


def test_similar_embeds_a_query_at_the_rate_the_index_was_made_at(tmp_path, music, capsys):
    """A reference checkpoint holds no sample rate: `embed --sample-rate` records it in the table,
    and `similar` must embed a query file at that rate too, not at the 22,050 Hz default."""
    torch.manual_seed(0)
    encoder = SampleCNN(width=1 / 16, n_blocks=5)
    reference = tmp_path / "reference.pt"
    torch.save({f"encoder.{k}": v for k, v in encoder.state_dict().items()}, reference)
    out = tmp_path / "emb.parquet"
    assert (
        main(["embed", str(reference), str(music), "--out", str(out), "--sample-rate", str(SR), "--quiet"])
        == 0
    )
    copy = tmp_path / "copy.wav"
    shutil.copy(music / "song0.wav", copy)
    capsys.readouterr()
    assert main(["similar", "--index", str(out), str(copy), "--k", "1", "--json"]) == 0
    (hit,) = json.loads(capsys.readouterr().out)
    assert hit["path"] == str((music / "song0.wav").resolve())
    assert hit["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_progress_in_a_log_is_plain_lines(tmp_path, ckpt, music, capsys):
    from clmr.models import load_model

    embed_catalogue(load_model(ckpt), ckpt, [str(music)], tmp_path / "emb.parquet", progress=True)
    err = capsys.readouterr().err
    assert "embedding: 7/7 tracks" in err and "x real-time" in err and "\x1b[" not in err


def test_sample_rate_applies_only_to_checkpoints_without_a_recorded_rate(tmp_path, ckpt, music, capsys):
    """`embed --sample-rate` sets a reference checkpoint's rate; a clmr checkpoint records its own and a
    different one is refused (same rate: accepted). A table is never extended at another rate."""
    from clmr.models import load_model

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(ckpt, run_dir / "model.safetensors")
    assert load_model(ckpt, sample_rate=SR).sample_rate == SR
    for recorded in (ckpt, run_dir):  # a run directory: its model file
        with pytest.raises(ClmrError, match="trained at 8000 Hz"):
            load_model(recorded, sample_rate=16000)
    out = tmp_path / "emb.parquet"
    song = str(music / "song0.wav")
    capsys.readouterr()
    assert main(["embed", str(ckpt), song, "--out", str(out), "--sample-rate", "16000", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--sample-rate" in err and "Traceback" not in err and not out.exists()

    torch.manual_seed(0)
    reference = tmp_path / "reference.pt"
    encoder = SampleCNN(width=1 / 16, n_blocks=5)
    torch.save({f"encoder.{k}": v for k, v in encoder.state_dict().items()}, reference)
    assert load_model(reference).sample_rate == 22050
    assert load_model(reference, sample_rate=SR).sample_rate == SR
    assert main(["embed", str(reference), song, "--out", str(out), "--sample-rate", str(SR), "--quiet"]) == 0
    capsys.readouterr()
    more = str(music / "sub" / "song1.flac")
    assert main(["embed", str(reference), more, "--out", str(out), "--sample-rate", "16000", "--quiet"]) == 2
    assert "different sample_rate (8000, now 16000)" in capsys.readouterr().err
    assert len(read_index(out)[0]) == 1


def test_embed_keeps_the_paths_the_user_gave_and_drops_second_names(tmp_path, ckpt, music):
    """Rows name files as the user did (a symlinked folder or file is not replaced by its target);
    resolving only finds a file named twice, in one run or across runs, and a query by either name."""
    (tmp_path / "library").symlink_to(music, target_is_directory=True)
    (tmp_path / "favourite.wav").symlink_to(music / "song0.wav")
    from clmr.models import load_model

    model = load_model(ckpt)
    out = tmp_path / "emb.parquet"
    inputs = [
        str(tmp_path / "library" / "sub"),
        str(tmp_path / "favourite.wav"),
        str(music / "sub" / "song1.flac"),
    ]
    summary = embed_catalogue(model, ckpt, inputs, out, progress=False)
    paths = read_index(out)[0]
    assert paths == [
        str(tmp_path / "library" / "sub" / "song1.flac"),
        str(tmp_path / "library" / "sub" / "song3.ogg"),
        str(tmp_path / "favourite.wav"),
    ]
    assert summary.embedded == 3  # sub/song1.flac was named twice: once under the link, once as itself
    again = embed_catalogue(model, ckpt, [str(music / "song0.wav"), str(music / "sub")], out, progress=False)
    assert (again.embedded, again.skipped) == (0, 3)  # the same files under their targets' names
    index = Index.load(out)
    assert index.position(music / "song0.wav") == 2 and index.position(tmp_path / "favourite.wav") == 2


def test_similar_table_shows_file_names_relative_to_the_shared_folder(tmp_path, ckpt, monkeypatch, capsys):
    deep = tmp_path / "music" / "soundtracks" / "usr" / "share" / "games" / "a-game-with-a-long-name"
    (deep / "x").mkdir(parents=True)
    (deep / "y").mkdir()
    names = ["x/track07.ogg", "x/track08.ogg", "y/track09_of_a_title_too_long_for_any_terminal_at_all.wav"]
    for i, name in enumerate(names):
        write_piece(deep / name, i)
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(ckpt), str(deep), "--out", str(out), "--quiet"]) == 0
    monkeypatch.setenv("COLUMNS", "50")
    capsys.readouterr()
    assert main(["similar", "--index", str(out), str(deep / names[0]), "--k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"in {deep}"  # the folder the neighbours share, whole
    table = lines[2:]
    assert all(len(line) <= 50 for line in table), table
    text = "\n".join(table)
    assert "x/track07.ogg" in text and "x/track08.ogg" in text  # short enough: relative, whole
    assert "track09_of_a_t" in text and "terminal_at_all.wav" not in text and "ll.wav" in text


@pytest.mark.parametrize(
    ("text", "width", "shown"),
    [
        ("/music/soundtracks/usr/share/games/x/track07.ogg", 20, "…/x/track07.ogg"),
        ("/music/x/track07.ogg", 20, "/music/x/track07.ogg"),
        ("/music/x/track07.ogg", 14, "…/track07.ogg"),
        ("/music/x/track07_long_name.ogg", 12, "track0…e.ogg"),
    ],
)
def test_paths_are_shortened_from_the_left_keeping_the_file_name(text, width, shown):
    from clmr.inference.display import shorten_left

    assert shorten_left(text, width) == shown and len(shown) <= width


def test_shown_paths_are_relative_to_the_common_folder():
    from clmr.inference.display import shown_paths

    assert shown_paths(["/m/a/x/1.ogg", "/m/a/y/2.ogg"], 40) == ("/m/a", ["x/1.ogg", "y/2.ogg"])
    assert shown_paths(["/m/a/1.ogg"], 40) == ("/m/a", ["1.ogg"])
    assert shown_paths(["/m/1.ogg", "rel/2.ogg"], 40) == ("", ["/m/1.ogg", "rel/2.ogg"])
    assert shown_paths([], 40) == ("", [])


def test_user_paths_fold_dotdot_only_where_it_names_the_same_file(tmp_path, monkeypatch):
    from clmr.inference.paths import absolute, resolved

    tmp_path = tmp_path.resolve()  # the working folder below is reported resolved
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "real" / "song.wav").write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "real" / "deep", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert absolute("real/deep/../song.wav") == tmp_path / "real" / "song.wav"  # folded: same file
    through_link = absolute("link/../song.wav")  # link/.. is real/, not tmp_path: kept as named
    assert through_link == tmp_path / "link" / ".." / "song.wav"
    assert resolved(through_link) == tmp_path / "real" / "song.wav"
    assert absolute("link/x.wav") == tmp_path / "link" / "x.wav"  # a symlinked folder is not resolved
