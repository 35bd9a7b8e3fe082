"""The writer's lock of an output directory: held by another live process it is refused at once, naming that
process's pid; a holder killed with SIGKILL blocks nothing (the kernel drops its flock; the pid it left in the
file does not matter); querying it creates nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.lock_holder import holding_lock, kill

from adatsq.core.lock import DirectoryLock, LockHeldError, lock_holder, lock_path


def test_lock_held_by_another_process_is_refused_naming_its_pid(tmp_path: Path) -> None:
    with holding_lock(tmp_path) as holder:
        assert lock_holder(lock_path(tmp_path)) == holder.pid
        with pytest.raises(LockHeldError, match=f"locked by pid {holder.pid}") as info:
            DirectoryLock(lock_path(tmp_path)).acquire()
        assert info.value.pid == holder.pid


def test_killed_holder_does_not_block(tmp_path: Path) -> None:
    with holding_lock(tmp_path) as holder:
        kill(holder)
        assert lock_path(tmp_path).read_text().strip() == str(holder.pid)  # the stale pid is still there
        assert lock_holder(lock_path(tmp_path)) is None
        with DirectoryLock(lock_path(tmp_path)) as lock:
            assert lock.held
            assert lock_path(tmp_path).read_text().strip() == str(os.getpid())
    assert lock_holder(lock_path(tmp_path)) is None  # released (the file stays, emptied)
    assert lock_path(tmp_path).read_text() == ""


def test_query_creates_nothing(tmp_path: Path) -> None:
    assert lock_holder(lock_path(tmp_path / "nowhere")) is None
    assert not (tmp_path / "nowhere").exists()
