"""The part of ``yomitori bench`` that works for every backend.

yomitori's path (template → engine → cleaned text, as ``do`` and the daemon run it)
against a *reference* that sends the same messages and options with as little as
possible around them: raw llama-cpp-python in this process for the in-process
worker, a bare streaming HTTP client for a server.  Measured in one run, order
alternated, medians, so the ratios hold on a busy machine.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Protocol

from daemon.actions import Payload, run_action
from daemon.engine import Engine
from daemon.models import ModelSpec
from daemon.prompts import Template, render

INPUT = "夕焼けの海辺で、白いワンピースを着た少女が麦わら帽子を押さえている"
GREEDY = {"temperature": 0.0, "seed": 1}
SHORT = {**GREEDY, "max_tokens": 32}
ONE = {**GREEDY, "max_tokens": 1}
LONG = {**GREEDY, "max_tokens": 128}
Say = Callable[[str], None]


class Reference(Protocol):
    """The same request without yomitori: one streamed piece per token."""

    def stream(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> Iterator[str]:
        """Yield the answer's pieces as they arrive."""

    def close(self) -> None:
        """Free what it holds."""


def median(values: list[float]) -> float:
    clean = [v for v in values if v == v]  # NaN-free
    return statistics.median(clean) if clean else float("nan")


def timed_stream(chunks: Iterator[str]) -> tuple[float, float | None, list[float]]:
    """Consume a stream; total seconds, first-chunk seconds, and each chunk's time."""
    started = time.perf_counter()
    stamps: list[float] = []
    for _ in chunks:
        stamps.append(time.perf_counter() - started)
    return time.perf_counter() - started, (stamps[0] if stamps else None), stamps


def decode_tps(tokens: int, total_s: float, ttft_s: float | None) -> float:
    """Tokens per second after the first, as the caller sees them arrive."""
    if tokens < 3 or ttft_s is None or total_s <= ttft_s:
        return float("nan")
    return (tokens - 1) / (total_s - ttft_s)


def engine_stamps(
    engine: Engine, messages: list[dict[str, Any]], options: dict[str, Any]
) -> tuple[float, float | None, Any]:
    started = time.perf_counter()
    first: list[float] = []

    def on_text(_piece: str) -> None:
        if not first:
            first.append(time.perf_counter() - started)

    generation = engine.generate(messages, options, on_text)
    return time.perf_counter() - started, (first[0] if first else None), generation


def long_template(base: Template) -> Template:
    """``translate_en`` with a long fixed part (a style guide of examples)."""
    examples = "\n".join(
        f"Example {i}: 窓辺で猫が眠る、柔らかい朝の光、水彩画風、番号{i} → A cat sleeping on a "
        f"windowsill in soft morning light, watercolour style, number {i}."
        for i in range(24)
    )
    return replace(base, system=base.system + "\n" + examples)


def overhead(
    engine: Engine,
    spec: ModelSpec,
    template: Template,
    reference: Reference,
    runs: int,
    options: dict[str, Any] = SHORT,
) -> dict[str, Any]:
    """Warm requests: the do path vs the reference, alternating which goes first."""
    rendered = render(template, INPUT, options=options)
    payload = Payload(text=INPUT)
    outputs: set[str] = set()

    def ours() -> float:
        started = time.perf_counter()
        outputs.add(run_action(template, payload, engine, spec, options=options).text)
        return time.perf_counter() - started

    def theirs() -> float:
        parts: list[str] = []

        def collect() -> Iterator[str]:
            for piece in reference.stream(rendered.messages, rendered.options):
                parts.append(piece)
                yield piece

        total_s, _, _ = timed_stream(collect())
        outputs.add("".join(parts).strip())
        return total_s

    ours_s: list[float] = []
    theirs_s: list[float] = []
    for i in range(runs + 1):  # the first round warms both sides up
        pair = (theirs(), ours())[::-1] if i % 2 else (ours(), theirs())
        if i:
            ours_s.append(pair[0])
            theirs_s.append(pair[1])
    do_s, raw_s = median(ours_s), median(theirs_s)
    # Paired: each request against its neighbour in time, so a machine that speeds up or
    # slows down during the run (shared cores) moves both sides of a pair together.
    pairs = list(zip(ours_s, theirs_s, strict=True))
    return {
        "do_warm_s": round(do_s, 4),
        "raw_warm_s": round(raw_s, 4),
        "overhead_ms": round(median([(o - t) * 1000 for o, t in pairs]), 2),
        "overhead_ratio": round(median([o / t - 1 for o, t in pairs]), 4),
        "same_output": len(outputs) == 1,
    }


def decode_speed(
    engine: Engine, template: Template, reference: Reference, runs: int
) -> dict[str, Any]:
    rendered = render(template, INPUT, options=LONG)
    options = {**rendered.options, **LONG}
    ours, theirs = [], []
    for _ in range(max(2, runs // 2)):
        total_s, ttft_s, generation = engine_stamps(engine, rendered.messages, options)
        ours.append(decode_tps(generation.completion_tokens, total_s, ttft_s))
        total_s, ttft_s, stamps = timed_stream(reference.stream(rendered.messages, options))
        theirs.append(decode_tps(len(stamps), total_s, ttft_s))
    return {
        "tps_ours": round(median(ours), 2),
        "tps_raw": round(median(theirs), 2),
        "tps_ratio": round(median(ours) / median(theirs), 4),
    }


def prefix_reuse(engine: Engine, template: Template, runs: int) -> dict[str, Any]:
    """TTFT on a long template: a fresh fixed part (a nonce in front) vs the same one
    again with other input after it, through whatever cache the backend has."""
    long = long_template(template)
    cold, reused = [], []
    last: Any = None
    for i in range(runs):
        nonce = replace(long, system=f"[{uuid.uuid4().hex}]\n{long.system}")
        cold.append(engine_stamps(engine, render(nonce, INPUT).messages,
                                  {**GREEDY, "max_tokens": 4})[1] or float("nan"))  # fmt: skip
        _, ttft, last = engine_stamps(engine, render(nonce, f"{INPUT} {i}").messages,
                                      {**GREEDY, "max_tokens": 4})  # fmt: skip
        reused.append(ttft or float("nan"))
    return {
        "ttft_cold_s": round(median(cold), 4),
        "ttft_reused_s": round(median(reused), 4),
        "prefix_speedup": round(median(cold) / median(reused), 2),
        "long_prompt_tokens": last.prompt_tokens if last else 0,
        "long_reused_tokens": last.reused_tokens if last else 0,
    }


def cancel_ms(engine: Engine, template: Template) -> float:
    """Milliseconds from cancel() to generate() returning, mid-generation (median of 3)."""
    rendered = render(template, INPUT)
    times = []
    for _ in range(3):
        marks: dict[str, float] = {}

        def on_text(_piece: str, marks: dict[str, float] = marks) -> None:
            if "first" not in marks:
                marks["first"] = time.perf_counter()

                def fire(marks: dict[str, float] = marks) -> None:
                    marks["cancel"] = time.perf_counter()
                    engine.cancel()

                threading.Timer(0.1, fire).start()

        engine.generate(rendered.messages, {**GREEDY, "max_tokens": 2000}, on_text)
        times.append((time.perf_counter() - marks.get("cancel", time.perf_counter())) * 1000)
    return round(median(times), 1)


def cold_process(model: str, options: dict[str, Any]) -> float:
    """Wall time of a fresh ``yomitori do`` that starts, loads and answers."""
    command = [sys.executable, "-m", "daemon", "do", "translate_en", "--model", model,
               "--text", INPUT, "--json"]  # fmt: skip
    for key, value in options.items():
        command += ["--set", f"{key}={value}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cold run failed: {done.stderr.strip()}")
    return elapsed


def targets(figures: dict[str, Any], overhead_ms_ok: float) -> dict[str, bool]:
    return {
        "overhead_ok": figures["overhead_ratio"] <= 0.05
        or figures["overhead_ms"] <= overhead_ms_ok,
        "prefix_speedup_ok": figures["prefix_speedup"] >= 10,
        "tps_ratio_ok": figures["tps_ratio"] >= 0.95,
        "cancel_ok": figures["cancel_ms"] <= 200,
    }
