"""Where the tests find TensorRT's public headers (never in the repository): ``$TENSORRT_ROOT``, else
``../tensorrt`` beside the checkout, else ``../shared/tensorrt``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ROOT", "TRT_ROOT"]

ROOT = Path(__file__).resolve().parents[2]
TRT_ROOT = Path(
    os.environ.get("TENSORRT_ROOT")
    or next(
        (
            p
            for p in (ROOT.parent / "tensorrt", ROOT.parent / "shared" / "tensorrt")
            if (p / "include").is_dir()
        ),
        ROOT.parent / "tensorrt",
    )
)
