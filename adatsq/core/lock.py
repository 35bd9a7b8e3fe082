"""One writer per output directory: an exclusive ``flock`` on ``<out>/.adatsq/lock``, held for a whole compile.

The holder writes its pid into the file, so a second compile (or ``adatsq-run``) can name it. The kernel
releases a ``flock`` when its process dies, so a lock left by a killed compile does not block: whether the
directory is locked is asked of the kernel, never read from the pid the file still holds. The file itself is
kept after release (emptied): unlinking a lock file lets two processes lock two different inodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from adatsq.core.layout import OutputLayout

__all__ = ["DirectoryLock", "LockHeldError", "describe_holder", "lock_holder", "lock_path"]

_ATTEMPTS = 10  # ~0.1 s in all before a held lock is reported


def lock_path(root: str | Path) -> Path:
    """``<root>/.adatsq/lock``."""
    return OutputLayout(root).lock_file


def describe_holder(pid: int) -> str:
    """``pid 1234``; ``a pid not yet recorded`` for 0 (the holder has taken the lock, not written its pid)."""
    return f"pid {pid}" if pid > 0 else "a pid not yet recorded"


class LockHeldError(OSError):
    """Another live process holds the lock; ``pid`` is the one it recorded (0 when not yet written)."""

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(f"{path} is locked by {describe_holder(pid)}")
        self.path = path
        self.pid = pid


def _read_pid(path: Path) -> int:
    """The pid the holder wrote; it writes it just after taking the lock, so retry briefly while empty."""
    for _ in range(20):
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        time.sleep(0.005)
    return 0


def lock_holder(path: str | Path) -> int | None:
    """The pid of the live process holding the lock at ``path`` (0 if it has not written it yet), or None
    when nobody holds it (also when the file does not exist). Creates nothing and takes no lock for long."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(path)
    finally:
        os.close(fd)  # closing also drops the shared lock, if taken
    return None


class DirectoryLock:
    """Exclusive, non-blocking ``flock`` on ``path`` for the life of the object's ``with`` block.

    ``acquire`` raises :class:`LockHeldError` (within ~0.1 s, it never waits for the holder) when another
    process holds it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this object")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            # a few short retries: :func:`lock_holder` takes a shared lock for a few microseconds, a real
            # holder keeps its lock for the whole compile
            for attempt in range(_ATTEMPTS):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == _ATTEMPTS - 1:
                        raise
                    time.sleep(0.01)
        except BlockingIOError:
            os.close(fd)
            raise LockHeldError(self.path, _read_pid(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # drops the flock

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
