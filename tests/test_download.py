"""The downloader against a local HTTP server with Range support: resume of a partial file, checksum
mismatch rejected, retries, mirror URLs, MTAT part merging and zip-slip / tar escapes refused."""

import hashlib
import io
import tarfile
import zipfile

import numpy as np
import pytest

from clmr.data.download import DownloadError, Remote, download, extract_tar, extract_zip, fetch


def _npy(values=(1, 2, 3)) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values))
    return buffer.getvalue()


@pytest.fixture
def server(range_server):
    """(base URL, the `RangeServer` whose files and faults a test sets)."""
    return range_server.base, range_server


def test_resume_partial_download(tmp_path, server):
    base, handler = server
    data = bytes(range(256)) * 1000
    handler.files["/big.bin"] = data
    target = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(data[:100_000])
    fetch(f"{base}/big.bin", target, progress=False)
    assert target.read_bytes() == data and not (tmp_path / "big.bin.part").exists()
    assert handler.log == [("/big.bin", "bytes=100000-")]  # only the rest was requested


def test_a_dropped_connection_is_resumed_where_it_stopped(tmp_path, server):
    base, handler = server
    data = bytes(range(256)) * 400
    handler.files["/drop.bin"] = data
    handler.cut_first.add("/drop.bin")
    fetch(f"{base}/drop.bin", tmp_path / "drop.bin", progress=False)
    assert (tmp_path / "drop.bin").read_bytes() == data
    assert handler.log == [("/drop.bin", None), ("/drop.bin", f"bytes={len(data) // 2}-")]


def test_a_206_for_another_range_restarts_instead_of_corrupting(tmp_path, server):
    base, handler = server
    data = bytes(range(256)) * 100
    handler.files["/f.bin"] = data
    handler.wrong_range.add("/f.bin")
    (tmp_path / "f.bin.part").write_bytes(data[:5000])
    fetch(f"{base}/f.bin", tmp_path / "f.bin", progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data  # not the part + the whole file again
    assert handler.log == [("/f.bin", "bytes=5000-"), ("/f.bin", None)]


def test_bad_arguments(tmp_path):
    with pytest.raises(DownloadError, match="retries"):
        download("mtat", tmp_path, retries=-1, progress=False)
    with pytest.raises(DownloadError, match="mirror"):
        download("mtat", tmp_path, mirror="ftp://example.org", progress=False)
    with pytest.raises(DownloadError, match="unknown dataset"):
        download("imagenet", tmp_path, progress=False)


def test_interrupted_gtzan_extraction_is_redone(tmp_path, server):
    base, handler = server
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as t:
        for name in ("genres/blues/blues.00000.au", "genres/rock/rock.00000.au"):
            info = tarfile.TarInfo(name)
            info.size = 4
            t.addfile(info, io.BytesIO(b"data"))
    handler.files["/genres.tar.gz"] = buffer.getvalue()
    for s in ("train", "valid", "test"):
        handler.files[f"/{s}_filtered.txt"] = b"blues/blues.00000.au\n"
    (tmp_path / "genres" / "blues").mkdir(parents=True)  # what an interrupted extraction leaves
    download("gtzan", tmp_path, mirror=base, progress=False)
    assert (tmp_path / "genres" / "rock" / "rock.00000.au").read_bytes() == b"data"
    assert (tmp_path / ".genres-extracted").exists()


def test_checksum_verified_and_mismatch_rejected(tmp_path, server):
    base, handler = server
    handler.files["/a.txt"] = b"hello"
    good = hashlib.sha256(b"hello").hexdigest()
    download("x", tmp_path, manifest=[Remote(f"{base}/a.txt", "a.txt", sha256=good)], progress=False)
    assert (tmp_path / "a.txt").read_bytes() == b"hello"
    handler.files["/b.txt"] = b"tampered"
    with pytest.raises(DownloadError, match="SHA-256"):
        download("x", tmp_path, manifest=[Remote(f"{base}/b.txt", "b.txt", sha256=good)], progress=False)
    assert not (tmp_path / "b.txt").exists()
    # no published checksum: the first download is recorded and later copies are checked against it
    handler.files["/c.txt"] = b"first"
    download("x", tmp_path, manifest=[Remote(f"{base}/c.txt", "c.txt")], progress=False)
    (tmp_path / "c.txt").write_bytes(b"changed")
    with pytest.raises(DownloadError, match="SHA-256"):
        download("x", tmp_path, manifest=[Remote(f"{base}/c.txt", "c.txt")], progress=False)


def test_retry_mirror_and_optional(tmp_path, server):
    base, handler = server
    handler.files["/split/x.npy"] = _npy()
    handler.fail_first.add("/split/x.npy")
    manifest = [
        Remote("http://unreachable.invalid/x.npy", "split/x.npy"),
        Remote("http://unreachable.invalid/y.npy", "split/y.npy", optional=True),
    ]
    download("x", tmp_path, manifest=manifest, mirror=base + "/", progress=False)
    assert (tmp_path / "split" / "x.npy").read_bytes() == _npy()
    assert [p for p, _ in handler.log].count("/split/x.npy") == 2  # 503, then retried
    with pytest.raises(DownloadError, match="404"):
        fetch(f"{base}/nothing", tmp_path / "n", progress=False)


def test_mtat_parts_merged_and_extracted(tmp_path, server):
    base, handler = server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("f/clip-0-29.mp3", b"mp3 bytes")
        z.writestr("0/clip-1-29.mp3", b"more")
    blob = buffer.getvalue()
    thirds = [blob[: len(blob) // 3], blob[len(blob) // 3 : 2 * len(blob) // 3], blob[2 * len(blob) // 3 :]]
    for n, part in enumerate(thirds, start=1):
        handler.files[f"/mp3.zip.00{n}"] = part
    handler.files["/annotations_final.csv"] = b"clip_id\tguitar\tmp3_path\n"
    for f in ("train", "valid", "test", "binary", "tags"):
        handler.files[f"/split/mtat/{f}.npy"] = _npy()
    for f in ("index_mtt.tsv", "train_gt_mtt.tsv", "val_gt_mtt.tsv", "test_gt_mtt.tsv"):
        handler.files[f"/index/mtt/{f}"] = b"tsv"  # Pons et al.'s split, the default
    download("mtat", tmp_path, mirror=base, progress=False)
    assert (tmp_path / "f" / "clip-0-29.mp3").read_bytes() == b"mp3 bytes"
    assert (tmp_path / "0" / "clip-1-29.mp3").is_file()
    assert (tmp_path / "checksums.json").is_file()
    assert (tmp_path / "index" / "mtt" / "train_gt_mtt.tsv").read_bytes() == b"tsv"
    assert not (tmp_path / "mp3.zip").exists()  # the joined copy is removed; the parts stay
    assert all((tmp_path / f"mp3.zip.00{n}").is_file() for n in (1, 2, 3))


def test_zip_slip_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ok.txt", b"fine")
        z.writestr("../../escaped.txt", b"bad")
    target = tmp_path / "out"
    with pytest.raises(DownloadError, match="outside"):
        extract_zip(archive, target)
    assert not (tmp_path / "escaped.txt").exists() and not (target / "ok.txt").exists()


def test_tar_escape_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc"
        t.addfile(info)
    with pytest.raises(DownloadError, match="outside"):
        extract_tar(archive, tmp_path / "out")


def test_a_part_longer_than_the_file_starts_over(tmp_path, server):
    base, handler = server
    handler.files["/g.bin"] = b"new, shorter file"
    (tmp_path / "g.bin.part").write_bytes(b"x" * 100)  # from an older, longer version of the file
    fetch(f"{base}/g.bin", tmp_path / "g.bin", progress=False)
    assert (tmp_path / "g.bin").read_bytes() == b"new, shorter file"
    (tmp_path / "h.bin.part").write_bytes(b"new, shorter file")  # complete, only not renamed yet
    handler.files["/h.bin"] = b"new, shorter file"
    handler.log.clear()
    fetch(f"{base}/h.bin", tmp_path / "h.bin", progress=False)
    assert (tmp_path / "h.bin").read_bytes() == b"new, shorter file"
    assert handler.log == [("/h.bin", "bytes=17-")]  # answered 416: nothing fetched again


def test_progress_lines_while_downloading(tmp_path, server, monkeypatch, capsys):
    import clmr.data.download as dl

    base, handler = server
    handler.files["/p.bin"] = bytes(3 * dl.CHUNK)
    monkeypatch.setattr(dl, "PROGRESS_EVERY_S", 0.0)
    fetch(f"{base}/p.bin", tmp_path / "p.bin")
    err = capsys.readouterr().err
    assert "p.bin: 3.0 of 3.0 MB" in err and "MB/s" in err


def test_a_416_without_a_size_is_not_taken_as_complete(tmp_path, server):
    base, handler = server
    handler.files["/s.bin"] = b"short"
    handler.bare_416.add("/s.bin")
    (tmp_path / "s.bin.part").write_bytes(b"garbage from elsewhere")  # longer than the file: 416
    fetch(f"{base}/s.bin", tmp_path / "s.bin", progress=False)
    assert (tmp_path / "s.bin").read_bytes() == b"short"


def test_pieces_that_do_not_add_up_to_the_announced_size_start_over(tmp_path, server):
    base, handler = server
    handler.files["/t.bin"] = b"0123456789"
    handler.wrong_total.add("/t.bin")
    (tmp_path / "t.bin.part").write_bytes(b"01234")
    with pytest.raises(DownloadError, match="announced as 17"):
        fetch(f"{base}/t.bin", tmp_path / "t.bin", retries=0, progress=False)
    assert not (tmp_path / "t.bin").exists() and not (tmp_path / "t.bin.part").exists()


@pytest.mark.parametrize(
    "name,payload",
    [
        ("split/msd/filtered_list_train.cP", bytes(range(256)) * 4),
        ("split/x.npy", b"\x93NUMPY random bytes"),
        ("tags.txt", b"\xff\xfe\x00 not text"),
        ("genres.tar.gz", b"\x1f\x8b\x08 not a tarball"),
    ],
)
def test_random_bytes_are_removed_and_never_recorded_as_trusted(tmp_path, server, name, payload):
    base, handler = server
    handler.files[f"/{name}"] = payload
    with pytest.raises(DownloadError, match=f"{name.rsplit('/', 1)[-1]}: the downloaded file is not a valid"):
        download(
            "x", tmp_path, manifest=[Remote("http://unused.invalid/", name)], mirror=base, progress=False
        )
    assert not (tmp_path / name).exists()
    recorded = tmp_path / "checksums.json"
    assert not recorded.exists() or name not in recorded.read_text()


def test_damaged_zip_parts_are_removed_with_one_line(tmp_path, server):
    from clmr.data.download import extract_mtat

    for n in (1, 2, 3):
        (tmp_path / f"mp3.zip.00{n}").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DownloadError, match="not a valid zip.*rerun"):
        extract_mtat(tmp_path, {})
    assert not list(tmp_path.glob("mp3.zip*"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("f/a.mp3", b"x" * 1000)
    blob = bytearray(buffer.getvalue())
    blob[40] ^= 0xFF  # a flipped byte in the stored data: the CRC check fails
    (tmp_path / "mp3.zip.001").write_bytes(bytes(blob))
    with pytest.raises(DownloadError, match="not a valid zip"):
        extract_mtat(tmp_path, {})
    assert not (tmp_path / "f" / "a.mp3").exists()


def test_a_damaged_tarball_and_a_corrupt_checksum_record_are_one_line(tmp_path):
    archive = tmp_path / "genres.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as t:
        info = tarfile.TarInfo("genres/a.au")
        info.size = 5000
        t.addfile(info, io.BytesIO(bytes(5000)))
    archive.write_bytes(buffer.getvalue()[:-40])  # cut: the gzip stream ends early
    with pytest.raises(DownloadError, match="genres.tar.gz: a damaged archive"):
        extract_tar(archive, tmp_path / "out")
    for content in ("[1, 2]", '{"a.txt": "not hex"}', "{not json"):
        (tmp_path / "checksums.json").write_text(content)
        with pytest.raises(DownloadError, match="checksums.json: not a"):
            download("x", tmp_path, manifest=[], progress=False)


def test_disk_full_during_a_download_is_one_line_and_resumes(tmp_path, server, monkeypatch, capsys):
    import builtins

    from clmr.cli import main

    base, handler = server
    handler.files["/split/msd/50tagList.txt"] = b"rock\n"
    real_open = builtins.open

    def full(file, mode="r", *args, **kwargs):
        if str(file).endswith(".part") and "b" in mode and "r" not in mode:
            raise OSError(28, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full)
    code = main(["download", "msd", "--root", str(tmp_path), "--mirror", base, "--retries", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    monkeypatch.setattr(builtins, "open", real_open)
    handler.files.update(
        {
            f"/split/msd/{f}": pickle_bytes([])
            for f in ("filtered_list_train.cP", "filtered_list_test.cP", "msd_id_to_tag_vector.cP")
        }
    )
    assert main(["download", "msd", "--root", str(tmp_path), "--mirror", base]) == 0
    assert (tmp_path / "split" / "msd" / "50tagList.txt").read_bytes() == b"rock\n"


def pickle_bytes(value) -> bytes:
    import pickle

    return pickle.dumps(value, protocol=2)


def test_a_name_with_markup_is_shown_literally(monkeypatch):
    import clmr.data.download as dl

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(dl.sys, "stderr", Terminal())
    with dl._meter(True, "[/][bold]{x}", 10, 0) as show:
        show(5)
    assert "[/][bold]{x}" in dl.sys.stderr.getvalue()
