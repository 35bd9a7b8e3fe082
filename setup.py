"""adatsq: AdaTSQ model compiler for diffusion transformers.

Each top-level folder is one room of the architecture (see DESIGN.md) and installs as a
subpackage of the ``adatsq`` namespace: ``compiler/`` -> ``adatsq.compiler`` and so on.
"""

from setuptools import setup

ROOMS = ("compiler", "calib", "passes", "plugins", "export", "runtime")


def _packages() -> dict[str, str]:
    import os

    mapping = {}
    for dirpath, _dirnames, filenames in os.walk("adatsq"):  # adatsq itself and its base package adatsq.core
        if "__init__.py" in filenames and "__pycache__" not in dirpath:
            mapping[dirpath.replace(os.sep, ".")] = dirpath
    for room in ROOMS:
        for dirpath, _dirnames, filenames in os.walk(room):
            if "__init__.py" in filenames and "__pycache__" not in dirpath:
                mapping["adatsq." + dirpath.replace(os.sep, ".")] = dirpath
    return mapping


PACKAGES = _packages()

setup(
    name="adatsq",
    version="0.1.0",
    description="AdaTSQ: timestep-adaptive W3/W4 + A3/A4/A8 quantization of diffusion transformers",
    python_requires=">=3.10",
    packages=sorted(PACKAGES),
    package_dir=PACKAGES,
    package_data={
        "adatsq.core.models": ["configs/*.json"],  # the published transformer configs of the real entries
        "adatsq.export": ["trt_parser_ops.json"],  # the TensorRT ONNX parser's tables (export/trt_check.py)
        # shapes-flux's trained checkpoint (trained here: adatsq/core/models/shapes/train.py)
        "adatsq.core.models.shapes": [
            "checkpoint/*.json",
            "checkpoint/*/*.json",
            "checkpoint/*/*.safetensors",
        ],
        # the C++/CUDA sources export/package.py copies into every output directory: every file git tracks
        # under plugins/csrc and plugins/trt must match a pattern (tests/e2e/test_packaging.py checks)
        "adatsq.plugins": [
            "csrc/*.cu",
            "csrc/*.cuh",
            "csrc/*.h",
            "csrc/*.cpp",
            "csrc/Makefile",
            "trt/*.cpp",
            "trt/*.h",
            "trt/CMakeLists.txt",
            "trt/README.md",
        ],
    },
    install_requires=[
        "torch>=2.4",
        "diffusers>=0.35",
        "numpy",
        "click>=8",
        "rich",
        "safetensors",
        "onnx>=1.17",
        "onnxruntime>=1.20",
        "onnxscript>=0.5",
        "onnx-ir",
        "matplotlib",
        "transformers",
        "accelerate",
    ],
    extras_require={
        "dev": ["pytest", "pytest-timeout", "ruff", "polygraphy", "onnx-graphsurgeon"],
    },
    entry_points={
        "console_scripts": [
            "adatsq-compile=adatsq.compiler.cli:main",
            "adatsq-run=adatsq.runtime.cli:main",
        ]
    },
)
