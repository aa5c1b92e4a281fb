"""The core runs headless: it imports no model or display library, and lints clean."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BANNED = ("llama_cpp", "pynput", "pystray", "mss", "tkinter")

CHECK = (
    "import daemon.config, daemon.prompts, daemon.actions, daemon.models, daemon.cli, "
    "daemon.pipeline, daemon.service, daemon.jobs, daemon.runner, daemon.backends, "
    "daemon.backends.llama_cpp, daemon.backends.llama_server, daemon.backends.ollama, "
    "daemon.backends.openai, daemon.engine, daemon.engine.client, daemon.engine.openai, "
    "daemon.engine.ollama, daemon.engine.server, daemon.cli_models; import sys; "
    f"bad=[m for m in {BANNED!r} if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
)


def test_core_imports_no_model_or_display_library():
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "[]"


def test_the_check_would_catch_a_banned_import():
    # The probe itself must be able to fail: import a stand-in for a banned name.
    probe = CHECK.replace("import daemon.config,", "import json as _j, daemon.config,")
    probe = probe.replace(repr(BANNED), repr((*BANNED, "json")))
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "json" in done.stdout


def test_ruff_check_passes():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install 'yomitori[test]')")
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(ROOT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
