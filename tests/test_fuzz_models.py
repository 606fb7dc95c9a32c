"""Seeded mutations of our .safetensors files (header bytes, header length, truncation, JSON values):
each either loads or is a one-line ClmrError naming the file; no other exception, no crash, no
memory blow-up."""

import json
import math
import random
import resource
import struct

import pytest
import torch

from clmr.cli import main as cli
from clmr.errors import ClmrError
from clmr.models import CLMR, Head, Projector, SampleCNN, load_model, save_model

N_MUTATIONS = 300
ODD_VALUES = (
    2**70, -(2**63), -1, 0, 10**12, math.nan, math.inf, -math.inf, 1e308, 0.5, "x", "", True, False,
    None, [], {}, [1, 2, 3], {"a": 1}, "F8_E4M3", "I64", "BOOL",
)  # fmt: skip


DEEP = "__50000 nested arrays__"  # json.dumps cannot write them (recursion): spliced into the text


def _nested(rng):
    """A nested value: 20 arrays deep (within the bound), or DEEP."""
    return rng.choice((json.loads("[" * 20 + "]" * 20), DEEP))


def _paths(value, prefix=()):
    """Every place in a JSON document (dict keys and list indexes), parents before children."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(doc, path, new):
    if not path:
        return new
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = new
    return doc


def _dumps(value):
    """JSON text (NaN and Infinity as Python writes them), with DEEP spliced in."""
    return json.dumps(value, allow_nan=True).replace(json.dumps(DEEP), "[" * 50_000 + "]" * 50_000)


def _header(data):
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8 : 8 + n]), data[8 + n :]


def _pack(header_text, body):
    raw = header_text.encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _mutate(rng, data):
    """One seeded mutation of a safetensors file's bytes."""
    n, header, body = _header(data)
    kind = rng.randrange(6)
    if kind == 0:  # flip bytes in the length and header
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(8 + n)] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == 1:  # truncate
        return data[: rng.randrange(len(data))]
    if kind == 2:  # a wrong header length
        length = rng.choice((0, 1, n - 1, n + 1, n * 2, len(data), 2**63, 2**64 - 1, rng.randrange(2**32)))
        return struct.pack("<Q", length) + data[8:]
    if kind in (3, 4):  # a value of the clmr config replaced
        config = json.loads(header["__metadata__"]["clmr"])
        path = rng.choice(list(_paths(config)))
        new = _nested(rng) if rng.random() < 0.2 else rng.choice(ODD_VALUES)
        header["__metadata__"]["clmr"] = _dumps(_replace(config, path, new))
        return _pack(json.dumps(header), body)
    # a value of the safetensors header itself (a tensor's dtype, shape or offsets; the metadata)
    path = rng.choice([p for p in _paths(header) if p])
    new = _nested(rng) if rng.random() < 0.2 else rng.choice(ODD_VALUES)
    return _pack(_dumps(_replace(header, path, new)), body)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(0)
    encoder = SampleCNN(width=1 / 16, n_blocks=2)
    model = CLMR(encoder, Projector(32, 8, 4), Head("linear", 32, 3), sample_rate=8000, tags=["a", "b", "c"])
    return save_model(model.eval(), tmp_path_factory.mktemp("fuzz") / "tiny.safetensors").read_bytes()


def test_seeded_mutations_load_or_fail_in_one_line(tmp_path, tiny_file, capsys):
    rng = random.Random(1234)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(N_MUTATIONS):
        path = tmp_path / f"m{i}.safetensors"
        path.write_bytes(_mutate(rng, tiny_file))
        try:
            model = load_model(path)
        except ClmrError as err:
            message = str(err)
            assert str(path) in message and "\n" not in message, (i, message)
            outcomes["refused"] += 1
        else:
            assert isinstance(model, CLMR)
            outcomes["loaded"] += 1
        if i % 3 == 0:  # `clmr info` on the same file: 0, or the one-line error (exit 2)
            code = cli(["info", str(path), "--json"])
            err = capsys.readouterr().err.strip()
            assert code in (0, 2) and (code == 0 or (str(path) in err and "\n" not in err)), (i, err)
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert growth_mib < 256, f"peak RSS grew {growth_mib:.0f} MiB while loading mutated files"
    assert outcomes["refused"] > N_MUTATIONS // 2 and outcomes["loaded"] > 0, outcomes
