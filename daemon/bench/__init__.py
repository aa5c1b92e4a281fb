"""``yomitori bench``: every benchmark, in one package.

- :func:`run_bench`: one model on any backend — yomitori's path against a bare
  reference on the same model (raw llama-cpp-python for the worker, a bare HTTP
  client for a server): overhead, tokens/s, prefix reuse, cancel, cold vs warm.
- :mod:`daemon.bench.compare`: the in-process worker against a managed llama-server
  on the same GGUF and threads.
- :mod:`daemon.bench.ocr`, :mod:`daemon.bench.desktop`: OCR, and the daemon on a
  real X display (hotkey → clipboard, idle memory and CPU).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from daemon.bench import measure
from daemon.config import template_folders
from daemon.engine.worker import default_threads
from daemon.models import check_spec, load_models, resolve_model
from daemon.prompts import load_templates
from daemon.runner import Engines


def run_bench(
    model: str | None = None, runs: int = 5, threads: int | None = None, quiet: bool = False
) -> dict[str, Any]:
    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    spec = check_spec(resolve_model(model or "tiny", load_models()))
    if spec.local_file:
        spec = replace(spec, threads=threads or spec.threads or default_threads())
    template = load_templates(template_folders()).get("translate_en")
    engines = Engines()
    engine = engines.get(spec)
    figures: dict[str, Any] = {"model": spec.name, "backend": spec.backend, "runs": runs}
    try:
        say(f"loading {spec.name} ({spec.backend})…")
        figures["load_s"] = round(engine.load(spec), 4)
        info = engine.stats()
        figures.update({k: info[k] for k in ("threads", "n_gpu_layers", "gpu_offload", "url")
                        if info.get(k) is not None})  # fmt: skip
        if spec.backend == "llama-cpp":
            from daemon.bench.llama import RawLlama

            say("loading the same model in-process (the reference)…")
            reference: Any = RawLlama(spec, info)
        else:
            from daemon.bench.http import RawHttp

            reference = RawHttp(engine)
        try:
            say("warm requests: yomitori's path vs the reference…")
            figures.update(measure.overhead(engine, spec, template, reference, runs))
            # One token: the fixed cost of a request alone, far less noisy than 32 tokens.
            short = measure.overhead(engine, spec, template, reference, runs, measure.ONE)
            figures.update(overhead_1tok_ms=short["overhead_ms"],
                           overhead_1tok_ratio=short["overhead_ratio"])  # fmt: skip
            say("decode speed…")
            figures.update(measure.decode_speed(engine, template, reference, runs))
        finally:
            reference.close()  # free the reference copy before the long-prompt runs
        say("prefix reuse on a template with a long fixed part…")
        figures.update(measure.prefix_reuse(engine, template, runs))
        say("cancel latency…")
        figures["cancel_ms"] = measure.cancel_ms(engine, template)
        say("a fresh process that loads and answers (cold) vs a warm request…")
        cold = [measure.cold_process(model or "tiny", measure.SHORT)
                for _ in range(max(1, runs // 2))]  # fmt: skip
        figures.update(
            cold_process_s=round(measure.median(cold), 4),
            warm_vs_cold_ratio=round(figures["do_warm_s"] / measure.median(cold), 4),
        )
    finally:
        engines.close()
    # Over a socket the target is 5 ms (a server is already a process of its own).
    figures["targets"] = measure.targets(figures, 30 if spec.backend == "llama-cpp" else 5)
    return figures
