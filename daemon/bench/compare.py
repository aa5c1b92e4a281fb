"""``yomitori bench --compare``: the in-process worker against a managed llama-server on
the same GGUF and thread count, one after the other (never both at once), so users and
the README can say which to pick on a CPU and why."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import Any

import psutil

from daemon.bench import measure
from daemon.config import template_folders
from daemon.engine.worker import default_threads
from daemon.errors import UserInputError
from daemon.models import check_spec, load_models, resolve_model
from daemon.prompts import load_templates, render
from daemon.runner import Engines

SIDES = (("worker", "llama-cpp"), ("llama_server", "llama-server"))


def run_compare(
    model: str | None = None, runs: int = 5, threads: int | None = None, quiet: bool = False
) -> dict[str, Any]:
    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    base = resolve_model(model or "tiny", load_models())
    if not base.local_file:
        raise UserInputError("--compare needs a GGUF model (a file, not a server's model).")
    base = replace(base, threads=threads or base.threads or default_threads())
    template = load_templates(template_folders()).get("translate_en")
    figures: dict[str, Any] = {"model": base.name, "threads": base.threads, "runs": runs}
    for label, backend in SIDES:
        spec = check_spec(replace(base, backend=backend))
        say(f"{label}: loading…")
        figures[label] = _one_side(spec, template, runs)
    worker, server = figures["worker"], figures["llama_server"]
    figures["server_vs_worker"] = {
        key: round(server[key] / worker[key], 3)
        for key in ("load_s", "ttft_cold_s", "ttft_reused_s", "tps", "idle_rss_mb")
        if worker.get(key) and server.get(key)
    }
    return figures


def _one_side(spec: Any, template: Any, runs: int) -> dict[str, Any]:
    engines = Engines()
    engine = engines.get(spec)
    side: dict[str, Any] = {"backend": spec.backend}
    try:
        started = time.perf_counter()
        engine.load(spec)
        side["load_s"] = round(time.perf_counter() - started, 4)
        side.update(measure.prefix_reuse(engine, template, runs))
        rendered = render(template, measure.INPUT, options=measure.LONG)
        options = {**rendered.options, **measure.LONG}
        tps = []
        for _ in range(max(2, runs // 2)):
            total_s, ttft_s, generation = measure.engine_stamps(engine, rendered.messages, options)
            tps.append(measure.decode_tps(generation.completion_tokens, total_s, ttft_s))
        side["tps"] = round(measure.median(tps), 2)
        side["cancel_ms"] = measure.cancel_ms(engine, template)
        time.sleep(1.0)  # idle: what the process holds between requests
        pid = engine.stats().get("pid")
        side["idle_rss_mb"] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    finally:
        engines.unload()
    # Unloading ends the process: its memory really goes back.
    side["process_gone_after_unload"] = not psutil.pid_exists(pid) or (
        psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    )
    return side
