"""The output directory: its layout (DESIGN.md contract 3), ownership and per-stage cache keys.

``.adatsq/owner.json`` records which model the directory belongs to, so a compile of another model into it is
refused instead of mixing artifacts. ``.adatsq/stages.json`` maps each finished stage to the key of its inputs;
a rerun skips a stage whose key is unchanged and whose outputs exist, so an interrupted compile resumes and a
new ``--target`` re-runs from the search on.
"""

from __future__ import annotations

import json
import os

from adatsq.core.atomic import atomic_write_text
from adatsq.core.errors import CompileError
from adatsq.core.layout import OutputLayout

__all__ = ["OutputDir"]


class OutputDir(OutputLayout):
    """The layout plus what only the compiler does with it: claiming the directory and stage keys."""

    # --- checks ---------------------------------------------------------------------------------------------
    def claim(self, model: str) -> None:
        """Create the directory if needed, check it is writable and not another model's."""
        try:
            self.meta.mkdir(parents=True, exist_ok=True)
            probe = self.meta / f".probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise CompileError(
                f"output directory {self.root} is not writable ({exc.strerror}); pick another -o"
            ) from None
        owner = self.meta / "owner.json"
        if owner.exists():
            found = json.loads(owner.read_text()).get("model")
            if found != model:
                raise CompileError(
                    f"output directory {self.root} holds artifacts of model {found!r}, not {model!r}; "
                    f"use another -o or delete it"
                )
        elif (self.root / "schedule.json").exists() or (self.root / "manifest.json").exists():
            raise CompileError(
                f"output directory {self.root} holds artifacts not written by this adatsq; use another -o"
            )
        else:
            atomic_write_text(owner, json.dumps({"model": model}) + "\n")

    # --- stage keys -----------------------------------------------------------------------------------------
    def _stages(self) -> dict[str, str]:
        path = self.meta / "stages.json"
        return json.loads(path.read_text()) if path.exists() else {}

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
