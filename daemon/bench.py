"""``yomitori bench``: what yomitori's process split costs and what prefix reuse buys.

Everything is measured in one run, on the same model, prompt and threads, so
the ratios hold even on a busy machine.  The reference is raw llama-cpp-python
in this process (which is why this module may import it).  With a GPU build
both the reference and the worker hold a copy of the model.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from daemon.actions import Payload, run_action
from daemon.config import template_folders
from daemon.engine.client import WorkerEngine
from daemon.engine.llama import NO_SYSTEM_ROLE, fold_system
from daemon.engine.worker import default_threads
from daemon.models import ModelSpec, check_spec, load_models, resolve_model
from daemon.prompts import Template, load_templates, render

INPUT = "夕焼けの海辺で、白いワンピースを着た少女が麦わら帽子を押さえている"
GREEDY = {"temperature": 0.0, "seed": 1}
SHORT = {**GREEDY, "max_tokens": 32}
LONG = {**GREEDY, "max_tokens": 128}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _timed_stream(chunks: Iterator[str]) -> tuple[float, float | None, list[float]]:
    """Consume a stream; total seconds, first-chunk seconds, and each chunk's time."""
    started = time.perf_counter()
    stamps: list[float] = []
    for _ in chunks:
        stamps.append(time.perf_counter() - started)
    return time.perf_counter() - started, (stamps[0] if stamps else None), stamps


def _decode_tps(tokens: int, total_s: float, ttft_s: float | None) -> float:
    """Tokens per second after the first, as the caller sees them arrive."""
    if tokens < 3 or ttft_s is None:
        return float("nan")
    return (tokens - 1) / (total_s - ttft_s)


class _Raw:
    """The reference: llama-cpp-python in-process, loaded like the worker loads it."""

    def __init__(self, spec: ModelSpec, info: dict[str, Any]) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(spec.path),
            n_ctx=info.get("n_ctx", spec.n_ctx),
            n_gpu_layers=info.get("n_gpu_layers", 0),
            flash_attn=bool(info.get("flash_attn")),
            n_threads=info.get("threads"),
            n_threads_batch=info.get("threads"),
            chat_format=spec.chat_format,
            verbose=False,
        )
        # The format the worker settled on (a GGUF without a template gets its family's).
        chosen = info.get("chat_format")
        if chosen and chosen != "mtmd" and not spec.chat_format:
            self.llm.chat_format = chosen

    def stream(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> Iterator[str]:
        if self.llm.chat_format in NO_SYSTEM_ROLE:
            messages = fold_system(messages)
        for chunk in self.llm.create_chat_completion(messages, stream=True, **options):
            piece = chunk["choices"][0].get("delta", {}).get("content")
            if piece:
                yield piece

    def close(self) -> None:
        self.llm.close()


def _worker_stamps(
    engine: WorkerEngine, messages: list[dict[str, Any]], options: dict[str, Any]
) -> tuple[float, float | None, list[float]]:
    started = time.perf_counter()
    stamps: list[float] = []
    engine.generate(messages, options, lambda _p: stamps.append(time.perf_counter() - started))
    return time.perf_counter() - started, (stamps[0] if stamps else None), stamps


def _long_template(base: Template) -> Template:
    """``translate_en`` with a long fixed part (a style guide of examples)."""
    examples = "\n".join(
        f"Example {i}: 窓辺で猫が眠る、柔らかい朝の光、水彩画風、番号{i} → A cat sleeping on a "
        f"windowsill in soft morning light, watercolour style, number {i}."
        for i in range(24)
    )
    return replace(base, system=base.system + "\n" + examples)


def _cold_process(model: str, options: dict[str, Any]) -> float:
    """Wall time of a fresh ``yomitori do`` that starts, loads and answers."""
    command = [
        sys.executable,
        "-m",
        "daemon",
        "do",
        "translate_en",
        "--model",
        model,
        "--text",
        INPUT,
        "--json",
    ]
    for key, value in options.items():
        command += ["--set", f"{key}={value}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cold run failed: {done.stderr.strip()}")
    return elapsed


def run_bench(
    model: str | None = None,
    runs: int = 5,
    threads: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    spec = resolve_model(model or "tiny", load_models())
    check_spec(spec)
    spec = replace(spec, threads=threads or spec.threads or default_threads())
    templates = load_templates(template_folders())
    template = templates.get("translate_en")
    # Both sides get exactly the messages and options the do path sends.
    rendered = render(template, INPUT, options=SHORT)
    long_options = {**rendered.options, **LONG}
    payload = Payload(text=INPUT)
    engine = WorkerEngine()
    figures: dict[str, Any] = {"model": spec.name, "runs": runs}
    try:
        say("loading the model in the worker…")
        figures["load_s"] = round(engine.load(spec), 4)
        info = engine.stats()
        figures.update(
            threads=info.get("threads"),
            n_gpu_layers=info.get("n_gpu_layers"),
            gpu_offload=info.get("gpu_offload"),
        )
        say("loading the same model in-process (the reference)…")
        raw = _Raw(spec, info)

        say("warm requests: yomitori's do path vs raw llama-cpp-python…")
        do_times: list[float] = []
        raw_times: list[float] = []
        outputs: set[str] = set()

        def do_once() -> float:
            started = time.perf_counter()
            result = run_action(template, payload, engine, spec, options=SHORT)
            outputs.add(result.text)
            return time.perf_counter() - started

        def raw_once() -> float:
            parts: list[str] = []
            total_s, _, _ = _timed_stream(
                _collect(raw.stream(rendered.messages, rendered.options), parts)
            )
            outputs.add("".join(parts).strip())
            return total_s

        for i in range(runs + 1):  # the first round warms both caches up
            # Alternate which side goes first so neither gains from the order.
            if i % 2:
                raw_s, do_s = raw_once(), do_once()
            else:
                do_s, raw_s = do_once(), raw_once()
            if i:
                do_times.append(do_s)
                raw_times.append(raw_s)
        do_s, raw_s = _median(do_times), _median(raw_times)
        figures.update(
            do_warm_s=round(do_s, 4),
            raw_warm_s=round(raw_s, 4),
            overhead_ms=round((do_s - raw_s) * 1000, 2),
            overhead_ratio=round(do_s / raw_s - 1, 4),
            same_output=len(outputs) == 1,
        )

        say("decode speed: worker vs raw…")
        worker_tps, raw_tps = [], []
        for _ in range(max(2, runs // 2)):
            total_s, ttft_s, _ = _worker_stamps(engine, rendered.messages, long_options)
            worker_tps.append(_decode_tps(engine.last.completion_tokens, total_s, ttft_s))
            # Raw llama-cpp-python streams one chunk per token here.
            total_s, ttft_s, stamps = _timed_stream(raw.stream(rendered.messages, long_options))
            raw_tps.append(_decode_tps(len(stamps), total_s, ttft_s))
        figures.update(
            tps_worker=round(_median(worker_tps), 2),
            tps_raw=round(_median(raw_tps), 2),
            tps_ratio=round(_median(worker_tps) / _median(raw_tps), 4),
        )
        raw.close()  # free the reference copy before the long-prompt runs

        say("prefix reuse on a template with a long fixed part…")
        long_template = _long_template(template)
        cold, reused = [], []
        prompt_tokens = reused_tokens = 0
        for i in range(runs):
            nonce = replace(long_template, system=f"[{uuid.uuid4().hex}]\n{long_template.system}")
            first = render(nonce, INPUT)
            second = render(nonce, f"{INPUT} {i}")
            cold.append(_worker_stamps(engine, first.messages, {**GREEDY, "max_tokens": 4})[1])
            reused.append(_worker_stamps(engine, second.messages, {**GREEDY, "max_tokens": 4})[1])
            prompt_tokens = engine.last.prompt_tokens
            reused_tokens = engine.last.reused_tokens
        figures.update(
            ttft_cold_s=round(_median(cold), 4),
            ttft_reused_s=round(_median(reused), 4),
            prefix_speedup=round(_median(cold) / _median(reused), 2),
            long_prompt_tokens=prompt_tokens,
            long_reused_tokens=reused_tokens,
        )

        say("cancel latency…")
        figures["cancel_ms"] = round(_median([_cancel_ms(engine, rendered) for _ in range(3)]), 1)

        say("a fresh process that loads and answers (cold) vs a warm request…")
        cold_runs = [_cold_process(model or "tiny", SHORT) for _ in range(max(1, runs // 2))]
        figures.update(
            cold_process_s=round(_median(cold_runs), 4),
            warm_vs_cold_ratio=round(do_s / _median(cold_runs), 4),
        )
    finally:
        engine.unload()
    figures["targets"] = {
        "overhead_ok": figures["overhead_ratio"] <= 0.05 or figures["overhead_ms"] <= 30,
        "prefix_speedup_ok": figures["prefix_speedup"] >= 10,
        "tps_ratio_ok": figures["tps_ratio"] >= 0.95,
    }
    return figures


def _collect(chunks: Iterator[str], into: list[str]) -> Iterator[str]:
    for piece in chunks:
        into.append(piece)
        yield piece


def _cancel_ms(engine: WorkerEngine, rendered: Any) -> float:
    """Milliseconds from cancel() to generate() returning, mid-generation."""
    import threading

    marks: dict[str, float] = {}

    def on_text(_piece: str) -> None:
        if "first" not in marks:
            marks["first"] = time.perf_counter()
            threading.Timer(
                0.1, lambda: (marks.setdefault("cancel", time.perf_counter()), engine.cancel())
            ).start()

    engine.generate(rendered.messages, {**GREEDY, "max_tokens": 2000}, on_text)
    return (time.perf_counter() - marks.get("cancel", time.perf_counter())) * 1000
