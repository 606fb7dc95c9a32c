"""clmr.files: atomic writes appear whole or not at all, with a new file's usual permissions under the
umask in force when they are written; importing the module leaves the umask alone."""

import importlib
import os
import stat

import pytest

import clmr.files
from clmr.files import atomic_open, atomic_path, atomic_write_bytes


def test_importing_never_touches_the_umask(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or 0o022)
    importlib.reload(clmr.files)
    assert calls == []


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_outputs_get_the_permissions_of_the_current_umask(tmp_path, umask):
    old = os.umask(umask)  # set after clmr.files was imported: a value read at import would be stale
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"data")
        with open(tmp_path / "plain.bin", "wb") as f:  # what a plain open() gives under this umask
            f.write(b"data")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode)
    assert (tmp_path / "a.bin").read_bytes() == b"data"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_path(target, suffix=".tmp.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.txt.") and tmp.name.endswith(".tmp.bin")
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
