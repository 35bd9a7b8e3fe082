"""A real ``tritonserver`` for tests: its installation (a script CI runs once) and a bounded start / stop.

Install (idempotent; ``python3 tests/helpers/triton_server.py install``) into ``$ADATSQ_TRITON_HOME``
(default ``<repo>/build/triton``, git-ignored), never into the project's site-packages:

* ``server/``: the ``nvidia-pytriton`` 0.7.0 wheel, ``pip install --no-deps --target`` (its numpy < 2 pin is
  not installed: only its bundled ``tritonserver`` 2.51 and python backend are used), plus the python-backend
  stub of the running Python copied to ``backends/python/`` (the wheel ships it under
  ``python_backend_stubs/X.Y/``; without it no python model loads).
* ``client/``: ``tritonclient`` 2.73 (HTTP) and the packages it needs that the project's environment lacks,
  all ``--no-deps`` (its ``ml-dtypes<=0.5.4`` and protobuf pins would downgrade the project's onnx stack; the
  project's numpy, urllib3, certifi and ml_dtypes are used). Tests put it on ``sys.path`` after the project's
  site-packages (:func:`import_tritonclient`), so no project package is shadowed.

The python models run in the project's own Python: its ``bin/`` first on ``PATH`` and its libpython's folder on
``LD_LIBRARY_PATH`` (reference/triton-server.md; without the latter the stub embeds another Python and
``import numpy`` fails). numpy 2 works through DLPack only (export/triton_models/denoiser.py).

:class:`TritonServer` starts a repository's generated ``launch.sh`` (which ``exec``s tritonserver, so the pid
is the server's) on 127.0.0.1 with free ports, polls ``/v2/health/ready`` until a deadline (a server that
never becomes ready, or exits, raises with the log's tail: it does not hang), and stops it by its pid only:
SIGTERM, a bounded wait, then SIGKILL of the server and of the stub processes it started (by their pids).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType

REPO = Path(__file__).resolve().parents[2]
HOME_ENV = "ADATSQ_TRITON_HOME"
PYTRITON = "nvidia-pytriton==0.7.0"
CLIENT_PACKAGES = (  # tritonclient[http] 2.73 minus what the project's environment already has, pinned
    "tritonclient==2.73.0",
    "python-rapidjson==1.25",
    "geventhttpclient==2.6.1",
    "gevent==26.9.0",
    "greenlet==3.3.2",
    "zope.event==6.2",
    "zope.interface==8.7",
    "brotli==1.2.1",
)
READY_TIMEOUT = 60.0  # s; measured 1.5–2.5 s with 2–3 python models (reference/triton-server.md)
STOP_TIMEOUT = 20.0  # s; SIGTERM exits in 2.3–4.4 s with --exit-timeout-secs=5

__all__ = [
    "TritonInstall",
    "TritonServer",
    "find_install",
    "free_ports",
    "import_tritonclient",
    "install",
    "model_config_pb2",
    "triton_home",
]


def triton_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or REPO / "build" / "triton")


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class TritonInstall:
    home: Path

    @property
    def server_root(self) -> Path:
        return self.home / "server" / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server_root / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.server_root / "backends"

    @property
    def stub(self) -> Path:
        return self.backends / "python" / "triton_python_backend_stub"

    @property
    def client(self) -> Path:
        return self.home / "client"

    def problems(self) -> list[str]:
        want = {
            "tritonserver": self.binary,
            f"python backend stub ({_python_tag()})": self.stub,
            "tritonclient": self.client / "tritonclient" / "http" / "__init__.py",
        }
        return [f"{what} missing at {p}" for what, p in want.items() if not p.is_file()]

    def env(self) -> dict[str, str]:
        """The server's environment: the project's Python first on PATH, its libpython found first."""
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
        env["TRITONSERVER"] = str(self.binary)
        env["BACKEND_DIRECTORY"] = str(self.backends)
        return env


def find_install(home: Path | None = None) -> TritonInstall | None:
    """The installation under ``home`` (default :func:`triton_home`), or None when it is incomplete."""
    inst = TritonInstall(home or triton_home())
    return None if inst.problems() else inst


WHEELS_ENV = (
    "ADATSQ_TRITON_WHEELS"  # optional folder of the wheels (pip --find-links), e.g. for an offline CI
)


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", *args]
    if os.environ.get(WHEELS_ENV):
        cmd[4:4] = ["--find-links", os.environ[WHEELS_ENV]]
    subprocess.run(cmd, check=True)


def install(home: Path | None = None) -> TritonInstall:
    """Install server and client under ``home`` (module docstring); a complete installation is kept."""
    inst = TritonInstall(home or triton_home())
    record = inst.home / "INSTALLED.json"
    wanted = {"server": PYTRITON, "client": list(CLIENT_PACKAGES), "python": _python_tag()}
    if not inst.problems() and record.is_file() and json.loads(record.read_text()) == wanted:
        return inst
    for part in ("server", "client"):
        shutil.rmtree(inst.home / part, ignore_errors=True)
    inst.home.mkdir(parents=True, exist_ok=True)
    _pip("--target", str(inst.home / "server"), PYTRITON)
    stub = inst.server_root / "python_backend_stubs" / _python_tag() / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(f"{PYTRITON} has no python-backend stub for Python {_python_tag()} ({stub})")
    shutil.copy2(stub, inst.stub)
    _pip("--target", str(inst.client), *CLIENT_PACKAGES)
    if inst.problems():
        raise RuntimeError("; ".join(inst.problems()))
    record.write_text(json.dumps(wanted, indent=2) + "\n")
    return inst


def import_tritonclient(inst: TritonInstall) -> ModuleType:
    """``tritonclient.http``, from the project's environment or else ``inst``'s client folder (appended to
    ``sys.path``: the project's own packages keep precedence)."""
    try:
        import tritonclient.http as http
    except ImportError:
        if str(inst.client) not in sys.path:
            sys.path.append(str(inst.client))
        import tritonclient.http as http
    return http


def model_config_pb2(inst: TritonInstall | None = None) -> ModuleType | None:
    """tritonclient's ``ModelConfig`` protobuf module (``tritonclient/grpc/model_config_pb2.py``), or None
    without tritonclient. Imported as ``tritonclient.grpc.model_config_pb2`` when grpcio is there; else
    loaded from its file (``tritonclient.grpc``'s ``__init__`` imports grpcio, which the client folder lacks:
    its protobuf pin would shadow the project's), once per process (the descriptor pool refuses a file twice)."""
    import importlib.util

    try:
        from tritonclient.grpc import model_config_pb2 as module

        return module
    except (ImportError, RuntimeError):  # tritonclient.grpc without grpcio raises RuntimeError
        pass
    name = "_adatsq_tritonclient_model_config_pb2"
    if name in sys.modules:
        return sys.modules[name]
    roots = [inst.client] if inst is not None else []
    found = importlib.util.find_spec("tritonclient")
    roots += [Path(p).parent for p in (found.submodule_search_locations or [])] if found else []
    for root in roots:
        path = root / "tritonclient" / "grpc" / "model_config_pb2.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
    return None


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc; empty where that is not readable)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


class TritonServer:
    """``launch`` (a generated ``launch.sh``) started on 127.0.0.1 with free ports; a context manager."""

    def __init__(
        self,
        inst: TritonInstall,
        launch: Path,
        log: Path,
        ready_timeout: float = READY_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> None:
        self.inst = inst
        self.launch = launch
        self.log = log
        self.ready_timeout = ready_timeout
        self.extra_env = env or {}
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def start(self) -> TritonServer:
        env = {
            **self.inst.env(),
            "HTTP_ADDRESS": "127.0.0.1",
            "HTTP_PORT": str(self.http_port),
            "GRPC_PORT": str(self.grpc_port),
            "METRICS_PORT": str(self.metrics_port),
            **self.extra_env,
        }
        t0 = time.monotonic()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["bash", str(self.launch)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = t0 + self.ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with code {self.proc.returncode} before it was ready; log tail:\n"
                    f"{self.log_tail()}"
                )
            if self._ready():
                self.start_seconds = time.monotonic() - t0
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"tritonserver not ready within {self.ready_timeout:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stats(self, model: str) -> dict:
        """``GET /v2/models/<model>/stats`` (the server's own per-model inference statistics)."""
        with urllib.request.urlopen(f"http://{self.url}/v2/models/{model}/stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> int | None:
        """SIGTERM to the server's pid, wait up to STOP_TIMEOUT, then SIGKILL it and its stubs (by pid)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        t0 = time.monotonic()
        stubs = _children(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            stubs += _children(self.proc.pid)
            self.proc.kill()
            code = self.proc.wait(timeout=10)
            for pid in stubs:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.stop_seconds = time.monotonic() - t0
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    if argv[1:] != ["install"]:
        print(f"usage: {argv[0]} install   (into ${HOME_ENV}, default {REPO / 'build' / 'triton'})")
        return 2
    t0 = time.monotonic()
    inst = install()
    print(f"tritonserver and tritonclient ready under {inst.home} ({time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
