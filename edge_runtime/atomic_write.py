"""Writing a file so that a crash or a full disk leaves either the old file or the new one, never half.

The data goes to a temp file in the same folder (same filesystem, so the rename is atomic), the temp
file is fsync'd, renamed over the target, and the folder is fsync'd so that the rename itself
survives a power cut. On any exception the temp file is removed and the target is untouched.

    atomic_write_bytes(path, data)
    with atomic_writer(path) as tmp:      # for writers that want a path (safetensors, onnx.save)
        save_file(tensors, str(tmp))
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Make renames inside the folder ``path`` durable. Filesystems that cannot sync a folder (some
    network and FUSE mounts) are skipped: the rename is still atomic there, only not yet durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk (the writer may have closed it already)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _umask() -> int:
    # /proc first: os.umask can only be read by setting it, which races with other threads' files
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: str | Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path next to ``path`` for the caller to write. On a clean exit the temp file is
    fsync'd, given ``mode`` (default: what ``open`` gives a new file under the umask; the temp file
    itself starts private) and renamed over ``path``; then the folder is fsync'd. On an exception
    the temp file is removed and ``path`` keeps its old content."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync_file(tmp)
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview, *, mode: int | None = None) -> Path:
    """Replace ``path`` with ``data`` atomically (see ``atomic_writer``)."""
    with atomic_writer(path, mode=mode) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)


def set_aside(path: Path, why: str) -> Path:
    """Rename a state file we will not use (a snapshot, a catalog index) next to itself, with a reason and a UTC time stamp."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.{why}-{stamp}.{n}")
        n += 1
    os.replace(path, dest)
    fsync_dir(path.parent)
    return dest
