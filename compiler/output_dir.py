"""The output directory: its layout (DESIGN.md contract 3), ownership, the writer's lock, cache entries and
per-stage cache keys.

``.adatsq/owner.json`` records which model the directory belongs to, so a compile of another model into it is
refused instead of mixing artifacts. ``.adatsq/lock`` is held (``flock``, adatsq/core/lock.py) for a whole
compile, so two compiles never write one directory. ``.adatsq/stages.json`` maps each finished stage to the
key of its inputs; a rerun skips a stage whose key is unchanged and whose outputs exist and can be read, so an
interrupted compile resumes and a new ``--target`` re-runs from the search on.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adatsq.core.atomic import atomic_write_text
from adatsq.core.errors import CompileError
from adatsq.core.layout import OutputLayout
from adatsq.core.lock import DirectoryLock, LockHeldError, describe_holder, lock_holder

__all__ = ["OutputDir"]


class OutputDir(OutputLayout):
    """The layout plus what only the compiler does with it: claiming the directory, locking it, reading its
    cache and its stage keys."""

    # --- checks ---------------------------------------------------------------------------------------------
    def _busy(self, pid: int) -> CompileError:
        return CompileError(
            f"output directory {self.root} is being written by another adatsq-compile ({describe_holder(pid)}); "
            f"wait for it to finish or use another -o"
        )

    def _unwritable(self, reason: str) -> CompileError:
        return CompileError(f"output directory {self.root} is not writable ({reason}); pick another -o")

    def check(self, model: str) -> None:
        """Everything that can be checked without creating anything: no other compile is writing the
        directory, it can be created or written, and it is not another model's."""
        pid = lock_holder(self.lock_file)
        if pid is not None:
            raise self._busy(pid)
        existing = self.root.absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise self._unwritable(os.strerror(errno.ENOTDIR))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise self._unwritable(os.strerror(errno.EACCES))
        self._check_owner(model)

    def _check_owner(self, model: str) -> None:
        owner = self.meta / "owner.json"
        if owner.exists():
            try:
                found = json.loads(owner.read_text()).get("model")
            except (OSError, ValueError, AttributeError):
                raise CompileError(
                    f"{owner} cannot be read; delete it if {self.root} holds artifacts of {model!r}"
                ) from None
            if found != model:
                raise CompileError(
                    f"output directory {self.root} holds artifacts of model {found!r}, not {model!r}; "
                    f"use another -o or delete it"
                )
        elif self.schedule.exists() or self.manifest.exists():
            raise CompileError(
                f"output directory {self.root} holds artifacts not written by this adatsq; use another -o"
            )

    def create(self) -> Path | None:
        """Create the directory (and ``.adatsq/``) and check it is writable. Returns the topmost folder this
        call created (the directory or an ancestor), None if the directory existed."""
        created = None
        for folder in (self.root.absolute(), *self.root.absolute().parents):
            if folder.exists():
                break
            created = folder
        try:
            self.meta.mkdir(parents=True, exist_ok=True)
            probe = self.meta / f".probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise self._unwritable(exc.strerror or str(exc)) from None
        return created

    def lock(self) -> DirectoryLock:
        """Take the writer's lock (``create`` first); fails at once, naming the holder's pid, if it is held."""
        lock = DirectoryLock(self.lock_file)
        try:
            lock.acquire()
        except LockHeldError as exc:
            raise self._busy(exc.pid) from None
        return lock

    def claim(self, model: str) -> None:
        """Under the lock: check the directory is not another model's and record that it is ``model``'s."""
        self._check_owner(model)
        owner = self.meta / "owner.json"
        if not owner.exists():
            atomic_write_text(owner, json.dumps({"model": model}) + "\n")

    # --- cache entries --------------------------------------------------------------------------------------
    def read_cache(
        self, name: str, warn: Callable[[str], None], parse: Callable[[Any], Any] | None = None
    ) -> Any | None:
        """The cache entry ``cache/<name>`` (``.pt``: ``torch.load``; ``.json``: JSON), passed through
        ``parse`` if given; None if it does not exist, or, after one ``warn`` line naming the file, if it
        cannot be read or parsed (truncated, corrupt, an older layout): the caller recomputes it."""
        path = self.cache / name
        if not path.exists():
            return None
        try:
            if path.suffix == ".json":
                value = json.loads(path.read_text())
            else:
                import torch

                value = torch.load(path, weights_only=False)
            return parse(value) if parse is not None else value
        except Exception as exc:  # any failure to read a cache entry means: recompute it
            # the first sentence: torch's message goes on for five more
            reason = (str(exc).strip().splitlines() or ["no message"])[0].split(". ")[0]
            warn(f"cache entry {path} cannot be read ({type(exc).__name__}: {reason}); recomputing it")
            return None

    # --- stage keys -----------------------------------------------------------------------------------------
    def _stages(self) -> dict[str, str]:
        """The recorded stage keys; a damaged record counts as none (every stage re-runs, one warning)."""
        path = self.meta / "stages.json"
        if not path.exists():
            return {}
        try:
            stages = json.loads(path.read_text())
            if isinstance(stages, dict) and all(isinstance(v, str) for v in stages.values()):
                return stages
            reason = "not an object of stage keys"
        except (OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        print(f"warning: {path} cannot be read ({reason}); every stage runs again", file=sys.stderr)
        path.unlink(missing_ok=True)
        return {}

    def has_finished_stages(self) -> bool:
        return bool(self._stages())

    def stage_key(self, stage: str) -> str | None:
        return self._stages().get(stage)

    def record_stage(self, stage: str, key: str) -> None:
        stages = self._stages()
        stages[stage] = key
        atomic_write_text(self.meta / "stages.json", json.dumps(stages, indent=2, sort_keys=True) + "\n")

    def forget_stage(self, stage: str) -> None:
        stages = self._stages()
        if stages.pop(stage, None) is not None:
            atomic_write_text(self.meta / "stages.json", json.dumps(stages, indent=2, sort_keys=True) + "\n")
