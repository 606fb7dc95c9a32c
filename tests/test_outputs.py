"""Embedding outputs: formats by suffix (.parquet/.npz/.csv), --hop and per-crop start times through the
one crop path, centred similarity that separates songs, always-valid JSON, damaged tables as one line."""

import csv
import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from clmr.cli import main
from clmr.data.synthetic import draw_piece, render
from clmr.inference.similar import Index, normalise
from clmr.inference.table import read_index
from clmr.models import CLMR, Head, SampleCNN, save_model
from clmr.songs.crops import SongCrops

SR = 8000
CROP = 729  # the tiny model's crop length


def piece(seed: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng([seed, 5])
    return render(draw_piece(rng), seconds, SR, rng)


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "songs"
    root.mkdir()
    for i in range(3):
        sf.write(root / f"s{i}.wav", piece(i), SR)
    return root


@pytest.mark.parametrize("hop", [None, 1, 250, 729, 1000])
def test_song_crops_start_every_hop_samples_across_blocks(hop):
    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    cuts = [0, 3, 700, 701, 2300, 4990, 5000]
    blocks = [x[a:b] for a, b in itertools.pairwise(cuts)]
    crops = SongCrops(blocks, CROP, max_crops=3, hop=hop)
    got = np.concatenate(list(crops))
    step = hop or CROP
    want = np.stack([x[s : s + CROP] for s in range(0, len(x) - CROP + 1, step)])
    np.testing.assert_array_equal(got, want)
    assert crops.samples == len(x)


def test_npz_and_csv_hold_the_parquet_rows_and_per_crop_start_times(tmp_path, tiny_model_file, folder):
    base = ["embed", str(tiny_model_file), str(folder), "--quiet"]
    assert main([*base, "--out", str(tmp_path / "e.parquet")]) == 0
    paths, vectors, _ = read_index(tmp_path / "e.parquet")
    assert main([*base, "--out", str(tmp_path / "e.csv")]) == 0
    with open(tmp_path / "e.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "duration", "n_crops", *(f"e{i}" for i in range(32))]
    assert [r[0] for r in rows[1:]] == paths
    np.testing.assert_allclose(np.array([r[3:] for r in rows[1:]], np.float32), vectors, rtol=1e-6)
    assert main([*base, "--out", str(tmp_path / "e.npz"), "--per-crop", "--hop", "0.05"]) == 0
    with np.load(tmp_path / "e.npz", allow_pickle=False) as z:
        assert z["path"].tolist() == paths and z["embedding"].shape == (3, 32)
        assert json.loads(str(z["metadata"]))["crop_hop_s"] == 0.05
        n = (SR - CROP) // 400 + 1  # one-second songs, a crop every 400 samples
        assert z["n_crops"].tolist() == [n] * 3 and z["crop_embedding"].shape == (3 * n, 32)
        np.testing.assert_allclose(z["crop_start_s"], np.tile(np.arange(n) * 0.05, 3))
        np.testing.assert_array_equal(z["crop_track"], np.repeat(np.arange(3), n))
        np.testing.assert_allclose(
            z["embedding"][1], z["crop_embedding"][z["crop_track"] == 1].mean(0), rtol=1e-5, atol=1e-6
        )
    table = pq.read_table(tmp_path / "e.parquet")
    assert "crop_start_s" not in table.column_names
    assert main([*base, "--out", str(tmp_path / "p.parquet"), "--per-crop"]) == 0
    starts = pq.read_table(tmp_path / "p.parquet").column("crop_start_s").to_pylist()
    assert starts == [list(np.arange(SR // CROP) * CROP / SR)] * 3  # default hop: the crop length


def test_csv_and_npz_tables_resume_and_refuse_another_hop(tmp_path, tiny_model_file, folder, capsys):
    for out in (tmp_path / "e.csv", tmp_path / "e.npz"):
        base = ["embed", str(tiny_model_file), "--out", str(out), "--quiet"]
        assert main([*base, str(folder / "s0.wav")]) == 0
        assert main([*base, str(folder)]) == 0
        assert "embedded 2 tracks" in capsys.readouterr().err
        assert len(read_index(out)[0]) == 3
        assert main([*base, str(folder), "--hop", "0.05"]) == 2
        assert "different crop_hop_s" in capsys.readouterr().err


def test_centred_scores_separate_random_pairs_from_near_duplicates(tmp_path, tiny_model_file):
    root = tmp_path / "songs"
    root.mkdir()
    for i in range(8):
        x = piece(20 + i, 2.0)
        sf.write(root / f"s{i}.wav", x, SR)
        if i < 3:
            noise = np.random.default_rng(i).standard_normal(len(x)).astype(np.float32)
            sf.write(root / f"s{i}_dup.wav", 0.9 * x + 0.003 * noise, SR)
    out = tmp_path / "e.parquet"
    assert main(["embed", str(tiny_model_file), str(root), "--out", str(out), "--quiet"]) == 0
    paths, raw, meta = read_index(out)
    names = [p.rsplit("/", 1)[1][:2] for p in paths]
    pairs = [(a, b) for a, b in itertools.combinations(range(len(paths)), 2)]
    dups = [(a, b) for a, b in pairs if names[a] == names[b]]
    others = [(a, b) for a, b in pairs if names[a] != names[b]]
    raw_unit = normalise(raw)
    assert np.median([raw_unit[a] @ raw_unit[b] for a, b in others]) > 0.98  # the problem: all alike
    for whiten in (False, True):
        index = Index.load(out, whiten=whiten)
        v = index.vectors
        assert min(v[a] @ v[b] for a, b in dups) > 0.95
        assert np.median([v[a] @ v[b] for a, b in others]) < 0.3
        hits = index.query(paths[names.index("s1")], k=2)
        assert hits[1][0].endswith("s1_dup.wav")
    np.testing.assert_allclose(meta["mean_embedding"], raw.mean(0), rtol=1e-5, atol=1e-7)


def test_similar_json_is_valid_with_non_finite_embeddings(tmp_path, tiny_model_file, folder, capsys):
    out = tmp_path / "e.parquet"
    assert main(["embed", str(tiny_model_file), str(folder), "--out", str(out), "--quiet"]) == 0
    table = pq.read_table(out)
    emb = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(3, 32).copy()
    emb[2, 0] = np.nan
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), 32)
    pq.write_table(table.set_column(3, table.schema.field("embedding"), fixed), out)
    paths = table.column("path").to_pylist()

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))

    for query, nulls in ((paths[0], [2]), (paths[2], [0, 1, 2])):
        capsys.readouterr()
        assert main(["similar", query, "--index", str(out), "--json"]) == 0
        hits = strict(capsys.readouterr().out)
        assert [h["similarity"] is None for h in hits] == [i in nulls for i in range(3)]
    assert Index.load(out).centre.tolist() == pytest.approx(emb[:2].mean(0).tolist(), rel=1e-5)


@pytest.mark.parametrize(
    "meta",
    [b"{not json", b'{"config": {}}', b'{"config": {"embedding_dim": "many"}}', b"[1, 2]"],
)
def test_a_damaged_table_is_one_line_naming_it(tmp_path, meta, capsys):
    out = tmp_path / "damaged.parquet"
    schema = pa.schema([pa.field("path", pa.string())], metadata={b"clmr": meta})
    pq.write_table(schema.empty_table(), out)
    assert main(["similar", "x.wav", "--index", str(out)]) == 2
    err = capsys.readouterr().err
    assert "damaged.parquet" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_part_that_is_not_parquet_is_one_line(tmp_path, tiny_model_file, folder, capsys):
    out = tmp_path / "e.parquet"
    assert main(["embed", str(tiny_model_file), str(folder / "s0.wav"), "--out", str(out), "--quiet"]) == 0
    parts = tmp_path / "e.parquet.parts"
    parts.mkdir()
    (parts / "part-000003.parquet").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["similar", str(folder / "s0.wav"), "--index", str(out)]) == 2
    err = capsys.readouterr().err
    assert "part-000003.parquet" in err and "Traceback" not in err


def test_tag_json_is_valid_with_non_finite_probabilities(tmp_path, capsys):
    torch.manual_seed(0)
    tagger = CLMR(SampleCNN(width=1 / 16, n_blocks=5), head=Head("linear", 32, 3), sample_rate=SR)
    ckpt = save_model(tagger, tmp_path / "tagger.safetensors")
    loud = tmp_path / "loud.wav"  # finite samples whose activations overflow to inf - inf = NaN
    sf.write(loud, np.full(SR, 3e38, np.float32) * np.sign(piece(0)), SR, subtype="FLOAT")
    capsys.readouterr()
    assert main(["tag", str(ckpt), str(loud), "--json", "--top", "2"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"invalid JSON {c}"))
    assert [t["probability"] for tags in out.values() for t in tags] == [None, None]


def test_an_index_of_one_song_is_not_centred_away(tmp_path, tiny_model_file, folder, capsys):
    out = tmp_path / "one.parquet"
    assert main(["embed", str(tiny_model_file), str(folder / "s0.wav"), "--out", str(out), "--quiet"]) == 0
    copy = tmp_path / "copy.wav"
    copy.write_bytes((folder / "s0.wav").read_bytes())
    capsys.readouterr()
    assert main(["similar", str(copy), "--index", str(out), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
