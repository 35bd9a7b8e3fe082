"""Packaging smoke test: the wheel, installed into a fresh venv, is a complete adatsq without the source tree.

The wheel is built from a copy of what a fresh clone holds (git's tracked and untracked-but-not-ignored files;
so no stale ``build/lib`` leaks in and the working tree is not written to), installed with ``--no-deps`` into a
``--system-site-packages`` venv (torch & co. come from the system), and checked there: every package of
setup.py's folder mapping imports from the venv (not from an editable install of the system site-packages),
both console scripts run, and the plugin sources export/package.py copies into every output directory are
installed where it looks for them. ~15 s on a 2-core CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIRS = ("plugins/trt", "plugins/csrc")
# the rooms of the architecture; the full list comes from setup.py, this is only its floor
ROOMS = (
    "adatsq",
    "adatsq.core",
    "adatsq.core.models",
    "adatsq.compiler",
    "adatsq.calib",
    "adatsq.passes",
    "adatsq.passes.onnx",
    "adatsq.plugins",
    "adatsq.plugins.kernels",
    "adatsq.export",
    "adatsq.runtime",
)
_NOT_SOURCES = {"build", "__pycache__", ".git", ".ruff_cache", ".pytest_cache", "engines", "gpu_fixture"}


def _repo_files() -> list[str]:
    """What a fresh clone of the repository holds (plus new files not yet added): repo-relative posix paths."""
    try:
        res = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
            timeout=60,
        )
        names = [n for n in res.stdout.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but build outputs
        names = [
            p.relative_to(REPO).as_posix()
            for p in REPO.rglob("*")
            if p.is_file()
            and not _NOT_SOURCES.intersection(p.relative_to(REPO).parts)
            and not any(part.endswith(".egg-info") for part in p.relative_to(REPO).parts)
            and p.suffix not in (".o", ".so", ".pyc")
        ]
    return sorted(n for n in names if (REPO / n).is_file())  # a tracked file deleted in the work tree is gone


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    log = f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{log}"
    return res.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("packaging")
    files = _repo_files()
    src = root / "src"
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)

    # setup.py's own folder mapping (package -> folder), with setuptools.setup stubbed out
    probe = (
        "import json, setuptools\n"
        "setuptools.setup = lambda **kw: print(json.dumps({p: kw['package_dir'][p] for p in kw['packages']}))\n"
        "exec(compile(open('setup.py').read(), 'setup.py', 'exec'), {'__name__': '__main__'})\n"
    )
    mapping = json.loads(_run([sys.executable, "-c", probe], cwd=src).strip().splitlines()[-1])

    dist = root / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-w", str(dist), str(src)],
        cwd=root,
        timeout=300,
    )
    (wheel,) = dist.glob("adatsq-*.whl")

    # pip comes from the system site-packages too, so the venv needs none of its own
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=root)
    py = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    venv_site = Path(_run([str(py), "-c", purelib], cwd=root).strip())
    # run from a venv: its packages too (as plain paths, so none of their .pth hooks run)
    if sys.prefix != sys.base_prefix:
        (venv_site / "_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        cwd=root,
        timeout=300,
    )
    return {
        "root": root,
        "files": files,
        "wheel": wheel,
        "venv": venv,
        "py": py,
        "site": venv_site,
        "mapping": mapping,
    }


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def test_wheel_holds_every_package_of_the_mapping(installed: dict) -> None:
    names = _wheel_names(installed["wheel"])
    in_wheel = {n[: -len("/__init__.py")].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    mapping = installed["mapping"]
    assert set(ROOMS) <= set(mapping), "setup.py lost a room"
    assert in_wheel == set(mapping)
    # and every module of those packages, where package_dir puts it
    for pkg, folder in mapping.items():
        modules = [n for n in installed["files"] if n.rsplit("/", 1)[0] == folder and n.endswith(".py")]
        missing = [m for m in modules if f"{pkg.replace('.', '/')}/{m.rsplit('/', 1)[1]}" not in names]
        assert not missing, f"{pkg}: not in the wheel: {missing}"


def test_wheel_holds_the_plugin_sources(installed: dict) -> None:
    names = _wheel_names(installed["wheel"])
    sources = [n for n in installed["files"] if n.startswith(tuple(d + "/" for d in PLUGIN_DIRS))]
    for d in PLUGIN_DIRS:
        assert any(n.startswith(d + "/") for n in sources), f"no sources under {d}"
    missing = [n for n in sources if f"adatsq/{n}" not in names]
    assert not missing, f"not in the wheel (add them to package_data in setup.py): {missing}"


def test_every_package_imports_from_the_venv(installed: dict) -> None:
    packages = sorted(installed["mapping"])
    code = (
        "import importlib, json, sys\n"
        f"print(json.dumps({{n: importlib.import_module(n).__file__ for n in {packages!r}}}))\n"
    )
    files = json.loads(_run([str(installed["py"]), "-c", code], cwd=installed["root"], timeout=300))
    site = installed["site"].resolve()
    outside = {n: f for n, f in files.items() if not Path(f).resolve().is_relative_to(site)}
    assert not outside, f"imported from outside the venv's site-packages {site}: {outside}"


@pytest.mark.parametrize("script", ["adatsq-compile", "adatsq-run"])
def test_console_scripts_run_from_the_venv(installed: dict, script: str) -> None:
    exe = installed["venv"] / "bin" / script
    assert exe.is_file(), f"{script} was not installed into the venv"
    out = _run([str(exe), "--help"], cwd=installed["root"], timeout=300)
    assert f"Usage: {script}" in out


def test_package_stage_finds_the_installed_plugin_sources(installed: dict) -> None:
    """What export/package.py copies into ``<out>/plugins/src`` (and hashes) comes from the installed wheel."""
    out = installed["root"] / "out"
    code = (
        "import json, sys\n"
        "from adatsq.core.layout import OutputLayout\n"
        "from adatsq.export import package\n"
        "out = OutputLayout(sys.argv[1])\n"
        "record = package.write_plugins(out)\n"
        "print(json.dumps({'trt': str(package._PLUGIN_SRC), 'csrc': str(package._KERNEL_SRC),\n"
        "                  'sources': record['sources'], 'hashed': sorted(package.package_inputs(out)['plugin_sources'])}))\n"
    )
    got = json.loads(_run([str(installed["py"]), "-c", code, str(out)], cwd=installed["root"]))
    site = installed["site"].resolve()
    for key in ("trt", "csrc"):
        assert Path(got[key]).resolve().is_relative_to(site), f"plugin sources looked up at {got[key]}"
    trt = [n[len("plugins/trt/") :] for n in installed["files"] if n.startswith("plugins/trt/")]
    csrc = [n[len("plugins/csrc/") :] for n in installed["files"] if n.startswith("plugins/csrc/")]
    for rel in trt:
        assert (Path(got["trt"]) / rel).is_file(), f"plugins/trt/{rel} not installed at {got['trt']}"
    for rel in csrc:
        assert (Path(got["csrc"]) / rel).is_file(), f"plugins/csrc/{rel} not installed at {got['csrc']}"
    assert sorted(got["sources"]) == sorted([f"src/{r}" for r in trt] + [f"src/csrc/{r}" for r in csrc])
    assert got["hashed"] == sorted([f"trt/{r}" for r in trt] + [f"csrc/{r}" for r in csrc])
    for rel in trt:
        assert (out / "plugins" / "src" / rel).read_bytes() == (REPO / "plugins" / "trt" / rel).read_bytes()
