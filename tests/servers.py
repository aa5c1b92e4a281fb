"""Real servers for the HTTP engines' tests: llama.cpp's llama-server (built by
installer/build_llama_server.sh) and llama-cpp-python's ``llama_cpp.server``, run as a
user would run them, on the tiny model."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def llama_server_binary() -> Path | None:
    """``YOMITORI_TEST_LLAMA_SERVER``, the venv's, or one on PATH."""
    given = os.environ.get("YOMITORI_TEST_LLAMA_SERVER")
    for candidate in (given, ROOT / ".venv" / "bin" / "llama-server", shutil.which("llama-server")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def need_llama_server() -> Path:
    binary = llama_server_binary()
    if binary is None:
        pytest.skip("needs llama-server (installer/setup.sh --test builds it)")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UserServer:
    """A llama-server the user started themselves (``backend = "openai"``)."""

    def __init__(self, model: Path, port: int | None = None, api_key: str | None = None,
                 mmproj: Path | None = None, n_ctx: int = 2048) -> None:  # fmt: skip
        self.binary = need_llama_server()
        self.port = port or free_port()
        argv = [str(self.binary), "-m", str(model), "--host", "127.0.0.1", "--port",
                str(self.port), "-c", str(n_ctx), "-np", "1", "-t", "2"]  # fmt: skip
        if mmproj is not None:
            argv += ["--mmproj", str(mmproj)]
        env = dict(os.environ)
        if api_key:
            env["LLAMA_API_KEY"] = api_key
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        wait_healthy(f"{self.url}/health", self.proc)

    def slots_busy(self, api_key: str | None = None) -> bool:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        slots = httpx.get(f"{self.url}/slots", headers=headers, timeout=5).json()
        return any(slot.get("is_processing") for slot in slots)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class LlamaCppPythonServer:
    """``python -m llama_cpp.server``: a second real OpenAI-compatible server."""

    def __init__(self, model: Path, alias: str = "tiny") -> None:
        pytest.importorskip("uvicorn", reason="needs llama-cpp-python[server] (setup.sh --test)")
        pytest.importorskip("sse_starlette", reason="needs llama-cpp-python[server]")
        self.port = free_port()
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
                "127.0.0.1", "--port", str(self.port), "--model_alias", alias,
                "--n_ctx", "2048", "--n_threads", "2", "--chat_format", "gemma"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_healthy(f"{self.url}/v1/models", self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} while starting")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{url} did not answer within {timeout} s")


SECRET_RE = re.compile(r"[A-Za-z0-9_\-]{24,}")
