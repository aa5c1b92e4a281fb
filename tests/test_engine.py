"""The model worker with the real llama.cpp and the tiny real model."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
import time

import psutil
import pytest
from conftest import needs_model

from daemon.engine.client import WorkerEngine
from daemon.errors import ModelError, WorkerCrashed

pytestmark = needs_model

SYSTEM = "You write short English prompts for an image model. " * 40
LONG_SYSTEM = "You write short English prompts for an image model, carefully. " * 150


def messages(text: str, system: str = SYSTEM) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


def test_streams_pieces_as_they_come(engine):
    pieces: list[tuple[float, str]] = []
    started = time.perf_counter()
    result = engine.generate(
        messages("a cat on a roof"),
        {"max_tokens": 60, "temperature": 0},
        lambda piece: pieces.append((time.perf_counter() - started, piece)),
    )
    assert result.finish_reason in ("stop", "length")
    assert "".join(p for _, p in pieces) == result.text
    assert result.completion_tokens > 1
    assert result.ttft_s is not None and result.ttft_s < result.total_s
    if result.completion_tokens > 20:
        # The first piece arrives well before the end: it really streams.
        assert len(pieces) >= 2
        assert pieces[0][0] < result.total_s * 0.8


def test_a_gguf_without_chat_template_gets_its_family_format_with_the_system_prompt(engine):
    # The tiny model's GGUF has no chat template: llama-cpp-python alone would use Llama 2's
    # format, and its "gemma" format drops system messages; the worker folds them in.
    engine.generate(messages("warm"), {"max_tokens": 1})
    assert engine.stats()["chat_format"] == "gemma"
    bare = engine.generate([{"role": "user", "content": "a cat"}], {"max_tokens": 1})
    framed = engine.generate(messages("a cat", "Answer in English."), {"max_tokens": 1})
    assert framed.prompt_tokens - bare.prompt_tokens >= 4  # the system text is in the prompt


def test_fold_system_puts_the_system_text_first_in_the_first_user_turn():
    from daemon.engine.llama import fold_system

    def say(role: str, content: str) -> dict[str, str]:
        return {"role": role, "content": content}

    folded = fold_system([say("system", "S"), say("user", "U"), say("assistant", "A"),
                          say("user", "V")])  # fmt: skip
    assert folded == [say("user", "S\n\nU"), say("assistant", "A"), say("user", "V")]
    assert fold_system([{"role": "user", "content": "U"}]) == [{"role": "user", "content": "U"}]
    assert fold_system([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]


def test_model_stays_resident_between_requests(engine):
    pid = engine.pid
    first = engine.generate(messages("red apple"), {"max_tokens": 4, "temperature": 0})
    second = engine.generate(messages("green apple"), {"max_tokens": 4, "temperature": 0})
    assert engine.pid == pid
    assert first.load_s == 0 and second.load_s == 0


def test_same_template_reuses_the_prefix(engine):
    engine.generate(messages("first input", LONG_SYSTEM), {"max_tokens": 2, "temperature": 0})
    second = engine.generate(messages("another one", LONG_SYSTEM), {"max_tokens": 2})
    system_tokens = len(LONG_SYSTEM.split()) // 2  # far fewer tokens than the real count
    assert second.prompt_tokens > second.reused_tokens > system_tokens
    # Only the new user text (and the chat frame after it) was evaluated.
    assert second.prompt_tokens - second.reused_tokens < 40


def test_cancel_during_generation(engine):
    marks: dict[str, float] = {}

    def on_text(_piece: str) -> None:
        if "cancel" not in marks:
            marks["cancel"] = time.perf_counter()
            engine.cancel()

    result = engine.generate(messages("describe a city"), {"max_tokens": 1500}, on_text)
    stopped_after = time.perf_counter() - marks["cancel"]
    assert result.cancelled
    assert result.completion_tokens < 1500
    # The requirement is 200 ms; the bench reports the real figure (cancel_ms).
    # Here only that it stopped long before 1500 tokens would have taken.
    assert stopped_after < 2.0
    again = engine.generate(messages("a dog"), {"max_tokens": 3, "temperature": 0})
    assert not again.cancelled and again.completion_tokens >= 1


def test_cancel_during_a_long_prompt(engine):
    """llama.cpp's abort callback stops the prompt evaluation mid-batch."""
    system = "Detailed instructions about prompts, lighting and composition. " * 160
    timer = threading.Timer(0.15, engine.cancel)
    started = time.perf_counter()
    timer.start()
    result = engine.generate(messages("sea", system + str(time.time())), {"max_tokens": 5})
    elapsed = time.perf_counter() - started
    assert result.cancelled
    assert result.completion_tokens == 0
    assert elapsed < 2.0
    # The cache was dropped with the aborted batch; the next request is whole.
    after = engine.generate(messages("sea"), {"max_tokens": 3, "temperature": 0})
    assert after.prompt_tokens > 0 and not after.cancelled


def _tree_rss(pid: int) -> int:
    me = psutil.Process(pid)
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


def test_unload_gives_memory_back(tiny_spec):
    engine = WorkerEngine()
    before = _tree_rss(os.getpid())
    engine.load(tiny_spec)
    engine.generate(messages("warm up"), {"max_tokens": 4})
    worker_pid = engine.pid
    loaded = _tree_rss(os.getpid())
    engine.unload()
    after = _tree_rss(os.getpid())
    assert loaded - before > 100 * 2**20, "the model should take >100 MB while loaded"
    assert loaded - after > 100 * 2**20, "unloading should give that memory back"
    assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == "zombie"
    assert engine.stats()["loaded"] is False


def test_a_forgotten_engine_takes_its_worker_with_it(tiny_spec):
    engine = WorkerEngine()
    engine.load(tiny_spec)
    worker = psutil.Process(engine.pid)
    del engine
    gc.collect()
    _gone, alive = psutil.wait_procs([worker], timeout=10)
    assert not alive, "the worker outlived its engine"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_worker_death_mid_request_then_recovery(tiny_spec, sig):
    engine = WorkerEngine()
    try:
        engine.load(tiny_spec)
        pid = engine.pid
        threading.Timer(0.3, os.kill, args=(pid, sig)).start()
        with pytest.raises(WorkerCrashed) as caught:
            engine.generate(messages("a long story " * 5), {"max_tokens": 3000})
        message = str(caught.value)
        assert "stopped unexpectedly" in message
        assert sig.name in message
        assert "Traceback" not in message and "\n" not in message
        result = engine.generate(messages("next"), {"max_tokens": 3, "temperature": 0})
        assert result.completion_tokens >= 1
        assert engine.pid != pid
        assert result.load_s > 0  # a fresh worker loaded the model again
    finally:
        engine.unload()


def test_unloadable_gguf_is_a_clear_error(tmp_path):
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + os.urandom(4096))
    from daemon.models import ModelSpec

    engine = WorkerEngine()
    with pytest.raises((ModelError, WorkerCrashed)) as caught:
        engine.load(ModelSpec(name="broken", path=bogus))
    assert "broken" in str(caught.value)
    assert engine.stats()["loaded"] is False


def test_stats_report_the_worker(engine):
    engine.generate(messages("stats"), {"max_tokens": 2})
    stats = engine.stats()
    assert stats["loaded"] is True and stats["model"] == "tiny"
    assert stats["rss_bytes"] > 50 * 2**20
    assert stats["n_ctx"] >= 512
    assert stats["cached_tokens"] > 0  # answered by the worker itself
    assert stats["last_timings"]["prompt_tokens"] > 0
