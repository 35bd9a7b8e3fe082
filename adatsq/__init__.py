"""adatsq: AdaTSQ model compiler for diffusion transformers.

Importing adatsq needs neither a GPU nor TensorRT. The Python API is :func:`compile`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "compile"]
__version__ = "0.1.0"


def compile(*args: Any, **kwargs: Any) -> Any:  # noqa: A001 - the public verb of the package
    """Compile a diffusers transformer; see :func:`adatsq.compiler.api.compile_model`."""
    from adatsq.compiler.api import compile_model

    return compile_model(*args, **kwargs)
