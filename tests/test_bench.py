"""``yomitori bench`` runs end to end and prints its figures as JSON.

No timing targets are asserted here (shared machines are noisy); only that
every figure is measured and the measurements are coherent.
"""

from __future__ import annotations

import json
import math

from conftest import needs_model, run_cli

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
    assert set(figures["targets"]) == {"overhead_ok", "prefix_speedup_ok", "tps_ratio_ok"}
