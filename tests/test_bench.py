"""``yomitori bench`` runs end to end and prints its figures as JSON.

No timing targets are asserted here (shared machines are noisy); only that
every figure is measured and the measurements are coherent.
"""

from __future__ import annotations

import json
import math
import shutil
import sys

import pytest
from conftest import needs_model, run_cli
from servers import need_llama_server

KEYS = (
    "overhead_ratio",
    "overhead_ms",
    "ttft_cold_s",
    "ttft_reused_s",
    "prefix_speedup",
    "tps_ratio",
    "warm_vs_cold_ratio",
    "cancel_ms",
)


@needs_model
def test_bench_prints_every_figure():
    done = run_cli("bench", "--json", "--runs", "1", timeout=600)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for key in KEYS:
        assert isinstance(figures[key], (int, float)) and math.isfinite(figures[key]), key
    # Greedy decoding gives the same text through the worker and in-process.
    assert figures["same_output"] is True
    # The long template really was reused: only the new input was evaluated.
    assert figures["long_reused_tokens"] > 0.9 * figures["long_prompt_tokens"]
    assert figures["ttft_cold_s"] > figures["ttft_reused_s"] > 0
    assert figures["warm_vs_cold_ratio"] > 0  # its size is for the report, not a test
    assert set(figures["targets"]) == TARGETS


TARGETS = {"overhead_ok", "prefix_speedup_ok", "tps_ratio_ok", "cancel_ok"}


@needs_model
def test_bench_runs_on_a_server_backend(config_dir, vision_files):
    """The generic bench on a managed llama-server: the reference is a bare HTTP client
    sending the engine's own request."""
    binary = need_llama_server()
    (config_dir / "models.toml").write_text(
        f'[models.srv]\nbackend = "llama-server"\npath = "{vision_files["model"].as_posix()}"\n'
        f'server = "{binary.as_posix()}"\nn_ctx = 2048\n',
        encoding="utf-8",
    )
    try:
        done = run_cli("bench", "--json", "--runs", "1", "--model", "srv", timeout=600)
    finally:
        (config_dir / "models.toml").unlink()
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["backend"] == "llama-server" and figures["url"].startswith("http://127.0.0.1:")
    for key in KEYS:
        assert isinstance(figures[key], (int, float)) and math.isfinite(figures[key]), key
    assert figures["same_output"] is True
    assert figures["long_reused_tokens"] > 0.9 * figures["long_prompt_tokens"]
    assert set(figures["targets"]) == TARGETS


@needs_model
def test_bench_compare_worker_and_llama_server(vision_files):
    need_llama_server()
    done = run_cli("bench", "--compare", "--json", "--runs", "1", "--model",
                   str(vision_files["model"]), timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for side in ("worker", "llama_server"):
        one = figures[side]
        for key in ("load_s", "ttft_cold_s", "ttft_reused_s", "tps", "idle_rss_mb", "cancel_ms"):
            assert isinstance(one[key], (int, float)) and math.isfinite(one[key]), (side, key)
        assert one["process_gone_after_unload"] is True
        assert one["long_reused_tokens"] > 0.9 * one["long_prompt_tokens"]
    assert set(figures["server_vs_worker"]) >= {"load_s", "tps", "idle_rss_mb"}


@needs_model
@pytest.mark.skipif(
    sys.platform != "linux" or not all(shutil.which(t) for t in ("Xvfb", "xdotool", "xclip")),
    reason="needs Xvfb, xdotool and xclip (installer/setup.sh --test installs them)",
)
def test_bench_load_runs_every_kind_of_action_and_cleans_up():
    """A tiny run of the load bench, on an Xvfb of its own (no DISPLAY given)."""
    done = run_cli("bench", "--load", "--actions", "10", "--json",
                   env={"DISPLAY": ""}, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["actions_done"] == 10 and figures["stopped_by_time_limit"] is False
    assert set(figures["by_kind"]) == {"trigger", "hotkey", "region", "region_esc", "cancel"}
    assert all(count >= 1 for count in figures["by_kind"].values())
    assert figures["failed"] == 0, figures["failure_samples"]
    for snapshot in ("rss_warm_mb", "rss_end_mb"):
        assert {"daemon", "worker", "overlay", "ocr"} <= set(figures[snapshot]), figures[snapshot]
    assert set(figures["rss_growth_percent"]) >= {"daemon", "worker", "overlay", "ocr"}
    assert figures["leftover_processes"] == []
    assert figures["daemon_exit_code"] == 0
    assert "daemon.sock" not in figures["runtime_files_after_quit"]
