"""Released models by name: reference-layout release files (full-width random weights, the release zip
structure) served from a local HTTP server through CLMR_MODEL_MIRROR into a temporary CLMR_HOME. Tag
and embed with the default model, offline reuse, refusal of damaged or tampered files, resume."""

import io
import json
import re
import threading
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

import clmr
from clmr.cli import main
from clmr.data.download import DownloadError
from clmr.data.synthetic import draw_piece, render
from clmr.models import CLMR, Projector, SampleCNN
from clmr.models.registry import (
    MODELS,
    MTAT_TAGS,
    RegistryError,
    download_path,
    model_file,
    model_path,
)

SR = 22050
ENCODER_ZIP, HEAD_ZIP = "/2.0/clmr_checkpoint_10000.zip", "/2.0/finetuner_checkpoint_200.zip"
TOP = "techno"  # the released head below is built to rank this tag first for any input


def _pt(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _optimiser() -> dict:
    return {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(4)}},
        "param_groups": [{"lr": 3e-4}],
    }


@pytest.fixture(scope="module")
def release():
    """The release files, in the reference's layouts, with the weights they hold."""
    torch.manual_seed(0)
    simclr = CLMR(SampleCNN(), Projector(512, 512, 64))  # full width: 2.4 M parameters
    state = simclr.state_dict()  # encoder.sequential.*, projector.{0,2}.weight: the 2.0 .pt layout
    head = torch.nn.Sequential(torch.nn.Linear(512, 50))
    with torch.no_grad():
        head[0].weight.mul_(1e-3)
        head[0].bias.copy_(-torch.arange(50) / 10.0)
        head[0].bias[MTAT_TAGS.index(TOP)] = 5.0
    head_state = head.state_dict()  # 0.weight, 0.bias
    # the 1.0 layout: encoder.conv1 ... encoder.conv11 for sequential.0 ... sequential.10
    v1 = {
        re.sub(r"^encoder\.sequential\.(\d+)\.", lambda m: f"encoder.conv{int(m[1]) + 1}.", k): v
        for k, v in state.items()
    }
    files = {
        ENCODER_ZIP: _zip(
            {"clmr_checkpoint_10000.pt": _pt(state), "clmr_checkpoint_10000_optim.pt": _pt(_optimiser())}
        ),
        HEAD_ZIP: _zip(
            {"run-7/epoch=199.weights": _pt(head_state), "run-7/optimiser.bin": _pt(_optimiser())}
        ),
        "/1.0/clmr_checkpoint_1550.pt": _pt(v1),
        "/1.0-l/finetuner_checkpoint_20.pt": _pt(head_state),
    }
    return {"files": files, "encoder": simclr.encoder.state_dict(), "head": head_state}


@pytest.fixture
def server(release, range_server, tmp_path, monkeypatch):
    srv = range_server
    srv.files.update(release["files"])
    monkeypatch.setenv("CLMR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLMR_MODEL_MIRROR", srv.base + "/")
    return srv


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    path = tmp_path_factory.mktemp("music") / "song.wav"
    rng = np.random.default_rng(0)
    sf.write(path, render(draw_piece(rng), 3.0, SR, rng), SR)  # one 59,049-sample crop
    return path


def _same_weights(model, release):
    enc = model.encoder.state_dict()
    assert all(torch.equal(enc[k], v) for k, v in release["encoder"].items()) and len(enc) == len(
        release["encoder"]
    )
    assert torch.equal(model.head.model[0].weight, release["head"]["0.weight"])


def _trusted_files(home):
    """What the cache would trust: files with a recorded checksum."""
    record = home / "checksums.json"
    return json.loads(record.read_text()) if record.exists() else {}


def test_tag_and_embed_with_the_default_model_then_offline(server, release, song, tmp_path, capsys):
    assert main(["tag", str(song), "--json", "--top", "5"]) == 0
    tags = json.loads(capsys.readouterr().out)[str(song)]
    assert tags[0]["tag"] == TOP and all(t["tag"] in MTAT_TAGS for t in tags)
    assert sorted(p for p, _ in server.log) == sorted([ENCODER_ZIP, HEAD_ZIP])
    model = clmr.load_model("clmr-mtat")
    assert model.tags == list(MTAT_TAGS) and model.task == "multilabel" and model.sample_rate == SR
    assert model.meta["source"][0] == "https://github.com/Spijkervet/CLMR/releases/download" + ENCODER_ZIP
    _same_weights(model, release)

    server.stop()  # everything from here on runs offline, from the cache
    out = tmp_path / "emb.parquet"
    assert main(["embed", "--model", "clmr-mtat", str(song.parent), "--out", str(out), "--quiet"]) == 0
    assert main(["tag", "--model", "clmr-mtat", str(song), "--top", "3"]) == 0
    assert TOP in capsys.readouterr().out
    query = tmp_path / "query.wav"  # not in the table: embedded with the model named here
    query.write_bytes(song.read_bytes())
    assert (
        main(["similar", "--index", str(out), str(query), "--k", "1", "--json", "--model", "clmr-mtat"]) == 0
    )
    hit = json.loads(capsys.readouterr().out)[0]
    assert hit["path"] == str(song) and hit["similarity"] > 0.999
    assert main(["info", "clmr-mtat", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tags"] == list(MTAT_TAGS)
    # the older form, a model path first, still works; and the HEAR module's default is the registry's
    assert main(["tag", str(model_path("clmr-mtat")), "--top", "2", str(song), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[str(song)][0]["tag"] == TOP
    hear = clmr.hear.load_model()
    assert hear.model.tags == list(MTAT_TAGS) and hear.scene_embedding_size == 512


def test_evaluate_and_models_listing_take_a_name(server, capsys, tmp_path):
    from clmr.evaluate.inputs import load_checkpoint

    assert main(["models", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert (
        set(listed) == set(MODELS)
        and listed["clmr-mtat"]["default"]
        and listed["clmr-mtat"]["cached"] == "no"
    )
    assert listed["clmr-mtat"]["paper_scores"]["linear"] == {"roc_auc": 88.7, "pr_auc": 35.6}
    model, info = load_checkpoint("clmr-mtat")
    assert info["path"] == str(model_path("clmr-mtat")) and len(info["sha256"]) == 64
    assert model.head.n_classes == 50
    assert (
        sum(p.numel() for m in (model.encoder, model.head) for p in m.parameters())
        == MODELS["clmr-mtat"].parameters
    )
    assert main(["models"]) == 0 and "converted" in capsys.readouterr().out
    assert main(["models", "--remove", "clmr-mtat"]) == 0
    assert (
        not model_path("clmr-mtat").exists() and not download_path("2.0/clmr_checkpoint_10000.zip").exists()
    )
    assert "models/clmr-mtat.safetensors" not in _trusted_files(tmp_path / "home")


def test_a_truncated_zip_is_refused_and_nothing_trusted(server, release, tmp_path):
    whole = release["files"][ENCODER_ZIP]
    server.files[ENCODER_ZIP] = whole[: len(whole) // 2]  # served complete, but cut short
    with pytest.raises(DownloadError, match="clmr_checkpoint_10000.zip: not a complete zip archive"):
        clmr.load_model("clmr-mtat")
    home = tmp_path / "home"
    assert not model_path("clmr-mtat").exists() and not download_path(ENCODER_ZIP[1:]).exists()
    assert not _trusted_files(home)
    server.files[ENCODER_ZIP] = whole  # a later run downloads it again and succeeds
    assert clmr.load_model("clmr-mtat").tags == list(MTAT_TAGS)


@pytest.mark.parametrize("name", ["../../escaped.pt", "/abs/head.pt"])
def test_a_zip_with_an_unsafe_member_is_refused(server, release, tmp_path, name):
    server.files[HEAD_ZIP] = _zip({name: _pt(release["head"])})
    with pytest.raises(DownloadError, match=f"unsafe member {name!r}"):
        clmr.load_model("clmr-mtat")
    assert not any(tmp_path.rglob("escaped.pt")) and not any(tmp_path.rglob("head.pt"))
    assert not download_path(HEAD_ZIP[1:]).exists() and not model_path("clmr-mtat").exists()
    assert "downloads/2.0/finetuner_checkpoint_200.zip" not in _trusted_files(tmp_path / "home")


def test_a_file_whose_checksum_changed_after_caching_is_refused(server, release):
    path = model_file("clmr-mtat", clmr.load_model, clmr.save_model, progress=False)
    server.stop()
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one flipped bit of weights: still a loadable safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(
        RegistryError, match="clmr-mtat.safetensors: SHA-256 .* recorded when it was converted"
    ):
        clmr.load_model("clmr-mtat")
    assert not path.exists()
    _same_weights(clmr.load_model("clmr-mtat"), release)  # rebuilt offline from the verified downloads
    # a download changed on disk is refused too, and removed
    path.unlink()
    archive = download_path(ENCODER_ZIP[1:])
    archive.write_bytes(archive.read_bytes() + b"\0")
    with pytest.raises(DownloadError, match="recorded at its first download; removed it"):
        clmr.load_model("clmr-mtat")
    assert not archive.exists() and not path.exists()


def test_an_interrupted_download_resumes(server, release):
    whole = release["files"][ENCODER_ZIP]
    part = download_path(ENCODER_ZIP[1:]).with_name("clmr_checkpoint_10000.zip.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(whole[:1000])  # what an earlier, killed run left
    server.cut_first.add(HEAD_ZIP)  # and this run's connection drops half-way through the head
    model_file("clmr-mtat", clmr.load_model, clmr.save_model, progress=False)
    log = server.log
    assert (ENCODER_ZIP, "bytes=1000-") in log and (ENCODER_ZIP, None) not in log
    assert (
        log.count((HEAD_ZIP, None)) == 1
        and (HEAD_ZIP, f"bytes={len(release['files'][HEAD_ZIP]) // 2}-") in log
    )
    assert download_path(ENCODER_ZIP[1:]).read_bytes() == whole and not part.exists()


def test_without_network_the_error_says_which_url_and_where_to_place_the_file(server, release, monkeypatch):
    server.stop()
    with pytest.raises(DownloadError) as err:
        model_file("clmr-mtat", clmr.load_model, clmr.save_model, progress=False, retries=0)
    message = str(err.value)
    assert f"{server.base}{ENCODER_ZIP}" in message and "\n" not in message
    assert f"place the file at {download_path(ENCODER_ZIP[1:])}" in message
    for name in (ENCODER_ZIP, HEAD_ZIP):  # placed by hand: used without any network
        download_path(name[1:]).parent.mkdir(parents=True, exist_ok=True)
        download_path(name[1:]).write_bytes(release["files"][name])
    _same_weights(clmr.load_model("clmr-mtat"), release)


def test_names_and_mirror_are_checked(server, monkeypatch):
    with pytest.raises(
        RegistryError, match="clmr-mta: no such file or registered model .*did you mean clmr-mtat"
    ):
        clmr.load_model("clmr-mta")
    assert main(["models", "--download", "nope"]) == 2
    monkeypatch.setenv("CLMR_MODEL_MIRROR", "ftp://mirror.example")
    with pytest.raises(RegistryError, match="CLMR_MODEL_MIRROR='ftp://mirror.example': expected an http"):
        clmr.load_model("clmr-mtat")
    assert server.log == []


def test_the_1550_release_downloads_into_the_cache(server, release):
    path = model_file("clmr-mtat-1550", clmr.load_model, clmr.save_model, progress=False)
    model = clmr.load_model(path)
    assert model.tags == list(MTAT_TAGS) and model.meta["release"] == "CLMR 1.0"
    _same_weights(model, release)


def test_parallel_first_uses_download_and_convert_once(server):
    gate = threading.Event()
    server.hold[ENCODER_ZIP] = gate
    paths = []

    def use():
        paths.append(model_file("clmr-mtat", clmr.load_model, clmr.save_model, progress=False))

    first, second = threading.Thread(target=use), threading.Thread(target=use)
    first.start()
    deadline = time.monotonic() + 60
    while not server.log and time.monotonic() < deadline:  # the first is downloading
        time.sleep(0.01)
    second.start()  # and waits for the first's lock instead of writing the same files:
    deadline = time.monotonic() + 2
    while len(server.log) < 2 and time.monotonic() < deadline:  # no second request comes
        time.sleep(0.01)
    gate.set()
    first.join(60)
    second.join(60)
    assert paths == [model_path("clmr-mtat")] * 2
    assert sorted(p for p, _ in server.log) == sorted([ENCODER_ZIP, HEAD_ZIP])


def test_a_download_shows_a_progress_bar_on_a_terminal(server, capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    model_file("clmr-mtat", clmr.load_model, clmr.save_model)
    err = capsys.readouterr().err
    assert "clmr_checkpoint_10000.zip" in err and "MB" in err and "━" in err  # rich's bar and size column
