import os
import stat

import pytest

from edge_runtime.atomic_write import atomic_write_bytes, atomic_writer


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_bytes_written_and_no_temp_left(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, memoryview(b"second"))
    assert path.read_bytes() == b"second"
    assert _leftovers(tmp_path) == []


def test_writer_gives_a_path_in_the_same_folder(tmp_path):
    path = tmp_path / "b.txt"
    with atomic_writer(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        tmp.write_text("hello")
        assert not path.exists()  # nothing visible until the block ends
    assert path.read_text() == "hello"
    assert _leftovers(tmp_path) == []


def test_exception_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_writer(path) as tmp:
            tmp.write_text("half of the ne")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_failed_write_of_new_file_leaves_nothing(tmp_path):
    path = tmp_path / "d.txt"

    with pytest.raises(TypeError):
        atomic_write_bytes(path, object())  # not bytes: the write itself fails
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_mode(tmp_path):
    private = atomic_write_bytes(tmp_path / "p", b"x", mode=0o600)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    mask = os.umask(0o022)
    try:
        plain = atomic_write_bytes(tmp_path / "q", b"x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644  # like open(), not mkstemp's 0600
