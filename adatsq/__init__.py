"""adatsq: AdaTSQ model compiler for diffusion transformers.

Importing adatsq needs neither a GPU nor TensorRT. The Python API is :func:`compile`.
"""

from __future__ import annotations

import pkgutil
from typing import Any

# The rooms (compiler/, calib/, ...) are top-level folders installed as adatsq.* (setup.py). Python started in
# the repository root finds this bare adatsq/ folder first; with the strict editable install (a link tree that
# type checkers can read) the rooms are in that tree's adatsq/, so the package spans both.
__path__ = pkgutil.extend_path(__path__, __name__)

__all__ = ["__version__", "compile"]
__version__ = "0.1.0"


def compile(*args: Any, **kwargs: Any) -> Any:  # noqa: A001 - the public verb of the package
    """Compile a diffusers transformer; see :func:`adatsq.compiler.api.compile_model`."""
    from adatsq.compiler.api import compile_model

    return compile_model(*args, **kwargs)
