"""Atomic file writes: write beside the target, fsync, rename. Readers see the old or the new file.

The file gets the mode an ordinary ``open`` would give it, 0o666 less the umask (``mkstemp`` creates 0o600,
which would make every artifact unreadable to a Triton server or a colleague running as another user).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "copy_file",
    "current_umask",
    "make_executable",
]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the kernel says it (``/proc/self/status``,
    Linux ≥ 4.7); elsewhere set-and-restore under a lock (a file another thread creates in between would
    get mode 0o666)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then move ``tmp_path`` onto ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # after the write: some writers (safetensors' save_file) replace the file with a 0o600 one
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb") as fh:  # the bytes reach the disk before the rename makes them visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def copy_file(src: Path, dst: Path) -> None:
    """Copy the bytes of ``src`` to ``dst`` atomically, with the mode a new file gets under the umask (an
    executable ``src`` stays executable): not the source's own mode, as ``shutil.copy2`` would keep."""
    import shutil

    atomic_write(Path(dst), lambda p: shutil.copyfile(src, p))
    if os.access(src, os.X_OK):
        make_executable(Path(dst))


def make_executable(path: Path) -> None:
    """Mode 0o777 less the umask (a script or a shared library)."""
    os.chmod(path, 0o777 & ~current_umask())
