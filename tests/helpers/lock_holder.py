"""A second process that holds an output directory's writer lock (adatsq/core/lock.py) until it is killed."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_HOLD = (
    "import sys, time\n"
    "from adatsq.core.lock import DirectoryLock, lock_path\n"
    "DirectoryLock(lock_path(sys.argv[1])).acquire()\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


@contextlib.contextmanager
def holding_lock(root: Path) -> Iterator[subprocess.Popen[str]]:
    """A subprocess holding ``<root>/.adatsq/lock`` (created here) while the block runs; SIGKILLed after."""
    (root / ".adatsq").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        kill(proc)


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL (no cleanup in the holder: the kernel alone releases its flock) and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()
