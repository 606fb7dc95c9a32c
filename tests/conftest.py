"""Shared fixtures: generated music and a labelled store at a tiny rate, and a tiny model and its file.

Session-scoped fixtures are built once per test run and must be treated as read-only; `tiny_model`
is a fresh copy for each test, so a test may move it or change its mode. A test that needs its own
generated set or store asks `make_music` / `make_store` for it (the same arguments share one build)."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Callable

import pytest
import torch

from clmr.data import Store, preprocess
from clmr.data.synthetic import SyntheticSet, generate
from clmr.models import CLMR, Projector, SampleCNN, load_model, save_model

SR = 8000
"""Sample rate of the shared music, store and model (a tiny rate keeps the tests fast)."""


def build_tiny_model(**kwargs) -> CLMR:
    """SampleCNN at width 1/16 and 5 blocks (crop 729 samples, h of 32), a 32-32-16 projector, seeded.
    Kaiming convs (`--model.init kaiming`): a random encoder whose embeddings tell pieces apart."""
    torch.manual_seed(0)
    return CLMR(
        SampleCNN(width=1 / 16, n_blocks=5).kaiming_init(), Projector(32, 32, 16), sample_rate=SR, **kwargs
    ).eval()


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """`build_tiny_model(meta={"note": "x"})` saved as a clmr .safetensors file."""
    return save_model(
        build_tiny_model(meta={"note": "x"}), tmp_path_factory.mktemp("model") / "model.safetensors"
    )


@pytest.fixture()
def tiny_model(tiny_model_file) -> CLMR:
    """The model in `tiny_model_file`, loaded afresh for each test (eval mode, CPU)."""
    return load_model(tiny_model_file).eval()


@pytest.fixture(scope="session")
def make_music(tmp_path_factory) -> Callable[..., SyntheticSet]:
    """`make_music(tracks, seconds, seed)`: a generated set at SR (`clmr.data.synthetic.generate`), made
    once per distinct arguments in a test run and shared by every test that asks for it (read-only)."""
    made: dict[tuple, SyntheticSet] = {}

    def make(tracks: int, seconds: float, seed: int) -> SyntheticSet:
        key = (tracks, float(seconds), seed)
        if key not in made:
            made[key] = generate(
                tmp_path_factory.mktemp("music"), tracks, seconds=seconds, seed=seed, sample_rate=SR
            )
        return made[key]

    return make


@pytest.fixture(scope="session")
def make_store(tmp_path_factory, make_music) -> Callable[..., Store]:
    """`make_store(tracks, seconds, seed, labels="tags" or "genre", min_length=1)`: `make_music`'s set
    preprocessed at SR with its multi-label tags or single-label genres and their splits; made once per
    distinct arguments in a test run and shared (read-only: copy it to change it)."""
    made: dict[tuple, Store] = {}

    def make(tracks: int, seconds: float, seed: int, labels: str = "tags", min_length: int = 1) -> Store:
        key = (tracks, float(seconds), seed, labels, min_length)
        if key not in made:
            music = make_music(tracks, seconds, seed)
            csv = {"tags": music.tags_csv, "genre": music.genre_csv}[labels]
            made[key] = preprocess(
                music.root,
                tmp_path_factory.mktemp(f"store-{labels}"),
                labels=csv,
                sample_rate=SR,
                workers=0,
                min_length=min_length,
                progress=False,
            )
        return made[key]

    return make


@pytest.fixture(scope="session")
def synthetic_music(make_music) -> SyntheticSet:
    """12 generated two-second pieces at SR with tags and labels CSVs (`clmr.data.synthetic.generate`)."""
    return make_music(12, 2.0, 1)


@pytest.fixture(scope="session")
def labelled_store(make_store) -> Store:
    """`synthetic_music` preprocessed into a store with its tags (multi-label) and train/valid/test splits."""
    return make_store(12, 2.0, 1)


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Answers GET from its server's `RangeServer` state (files, faults), logging (path, Range)."""

    owner: RangeServer

    def do_GET(self):  # noqa: N802
        s = self.owner
        s.log.append((self.path, self.headers.get("Range")))
        if gate := s.hold.get(self.path):
            gate.wait(60)
        if self.path in s.fail_first:
            s.fail_first.discard(self.path)
            self.send_error(503)
            return
        data = s.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng := self.headers.get("Range"):
            start = 0 if self.path in s.wrong_range else int(rng.split("=")[1].split("-")[0])
            if start >= len(data):  # as real servers do: 416 with the file's size
                self.send_response(416)
                if self.path not in s.bare_416:
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            total = len(data) + 7 if self.path in s.wrong_total else len(data)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{total}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if self.path in s.cut_first:  # the connection drops half-way
            s.cut_first.discard(self.path)
            self.wfile.write(data[start : start + (len(data) - start) // 2])
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


class RangeServer:
    """A local HTTP server of `files` (URL path -> bytes) with Range support, on a free port, and
    switches for the faults real servers show; `log` lists every request's (path, Range header)."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.log: list[tuple[str, str | None]] = []
        self.fail_first: set[str] = set()  # paths whose first answer is a 503
        self.wrong_range: set[str] = set()  # paths answered with bytes 0- whatever range was asked
        self.cut_first: set[str] = set()  # paths whose first answer stops half-way (the connection drops)
        self.bare_416: set[str] = set()  # paths whose 416 answer says no size (no Content-Range)
        self.wrong_total: set[str] = set()  # paths whose 206 answer announces another total size
        self.hold: dict[str, threading.Event] = {}  # path -> event the answer waits for
        handler = type("Handler", (_RangeHandler,), {"owner": self})
        self.httpd: http.server.ThreadingHTTPServer | None = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), handler
        )
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Shut the server down (later requests are refused); calling it again does nothing."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


@pytest.fixture()
def range_server():
    """A fresh `RangeServer` with no files for one test, stopped after it."""
    server = RangeServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def unprivileged() -> list[str]:
    """A command prefix that runs a program without the power to write into read-only folders: none
    for a normal user; for root, setpriv dropping CAP_DAC_OVERRIDE. Skips the test where neither works."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    drop = [setpriv, "--inh-caps=-dac_override", "--bounding-set=-dac_override"] if setpriv else []
    if not drop or subprocess.run([*drop, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop CAP_DAC_OVERRIDE here")
    return drop
