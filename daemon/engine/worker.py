"""The model worker: llama-cpp-python in its own process.

The daemon side (:mod:`daemon.engine.client`) runs ``python -m
daemon.engine.worker``: a fresh interpreter that imports only what it needs.
Messages are JSON lines on the worker's stdin and (a copy of) its stdout;
llama.cpp's own output goes to the worker log.

    → {"op": "load", "id", "spec"}          ← {"ev": "loaded", "id", "info"}
    → {"op": "generate", "id", "messages", "options"}
                                             ← {"ev": "chunk", "id", "text"} …
                                             ← {"ev": "done", "id", "finish_reason", "timings"}
    → {"op": "cancel", "id"}                 (handled at once, even mid-generation)
    → {"op": "stats", "id"}                  ← {"ev": "stats", "id", …}
    → {"op": "unload"}                       the process exits: memory and VRAM go back
    any failure                              ← {"ev": "error", "id", "kind", "message"}

A reader thread takes ``cancel`` and ``stats`` at once; everything else runs in
order on the main thread, one request at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from daemon.backends.llama_cpp import OPTIONS as LLAMA_CPP_OPTIONS
from daemon.engine.channel import Channel
from daemon.engine.llama import (
    FAMILY_FORMATS,
    NO_SYSTEM_ROLE,
    VISION_HANDLERS,
    ModelProblem,
    RequestCancelled,
    check_vision_template,
    fold_system,
    make_llama,
)
from daemon.platform import give_back_memory

# Options the templates speak, mapped to create_chat_completion's names.
_OPTION_NAMES = LLAMA_CPP_OPTIONS


# Pieces after the first are sent at most this often: every send wakes the
# daemon side, and on a machine whose cores all run llama.cpp threads each
# wake-up preempts one of them (measured: -10 % tokens/s on 2 cores when
# every token was sent on its own).
STREAM_INTERVAL_S = 0.04


def _redirect_output(log_path: str | None) -> Channel:
    """Keep stdin/stdout for messages; send every other output to the worker log.

    llama.cpp prints from C straight to file descriptors 1 and 2, so the
    protocol moves to a duplicate of fd 1 before both are pointed at the log.
    """
    stdin = os.fdopen(os.dup(0), "rb")
    stdout = os.fdopen(os.dup(1), "wb")
    target = os.devnull
    if log_path:
        path = Path(log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 2_000_000:
            # Windows cannot rename a file another process has open (a second
            # worker, a one-shot `yomitori do`): then keep appending.
            with contextlib.suppress(OSError):
                path.replace(path.with_suffix(".log.1"))
        target = str(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return Channel(stdin, stdout)


def default_threads() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or None
    except Exception:  # pragma: no cover - psutil is a dependency; be lenient anyway
        return None


class Worker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.cancelled: set[int] = set()
        self.llm: Any = None
        self.text_handler: Any = None  # text-only requests on a vision model
        self.info: dict[str, Any] = {}
        self.active: int | None = None
        self.last_done = 0  # ids only grow; a cancel for a finished request is ignored

    # -- plumbing ---------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(message)

    def read_loop(self) -> None:
        while True:
            message = self.channel.inbox.get()
            if message.get("ev") == "eof":
                # The daemon side is gone: never linger holding VRAM.
                os._exit(0)
            op = message.get("op")
            if op == "cancel":
                request_id = message.get("id", -1)
                if isinstance(request_id, int) and request_id > self.last_done:
                    self.cancelled.add(request_id)
            elif op == "stats":
                self.send({"ev": "stats", "id": message.get("id"), **self.stats()})
            else:
                self.inbox.put(message)

    def stats(self) -> dict[str, Any]:
        rss = None
        with contextlib.suppress(Exception):
            import psutil

            rss = psutil.Process().memory_info().rss
        return {
            "pid": os.getpid(),
            "rss_bytes": rss,
            "loaded": self.llm is not None,
            "busy": self.active is not None,
            "cached_tokens": getattr(self.llm, "n_tokens", 0),
            **self.info,
        }

    def run(self) -> None:
        self.channel.start_reader("worker-channel")
        threading.Thread(target=self.read_loop, name="worker-reader", daemon=True).start()
        while True:
            message = self.inbox.get()
            if message is None or message.get("op") == "unload":
                return
            request_id = message.get("id")
            try:
                if message["op"] == "load":
                    self.load(request_id, message["spec"])
                elif message["op"] == "generate":
                    self.generate(request_id, message["messages"], message.get("options", {}))
                else:
                    self.send(
                        {
                            "ev": "error",
                            "id": request_id,
                            "kind": "protocol",
                            "message": f"unknown op {message['op']!r}",
                        }
                    )
            except ModelProblem as err:
                self.send({"ev": "error", "id": request_id, "kind": "user", "message": str(err)})
            except Exception as err:  # reported to the daemon side, which decides
                self.send(
                    {
                        "ev": "error",
                        "id": request_id,
                        "kind": message.get("op", "?"),
                        "message": f"{type(err).__name__}: {err}",
                    }
                )

    # -- the model --------------------------------------------------------
    def load(self, request_id: int, spec: dict[str, Any]) -> None:
        import llama_cpp

        started = time.perf_counter()
        self.text_handler = None
        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        n_gpu_layers = spec.get("n_gpu_layers")
        if n_gpu_layers is None:
            n_gpu_layers = -1 if gpu else 0
        flash_attn = spec.get("flash_attn")
        if flash_attn is None:
            flash_attn = gpu and n_gpu_layers != 0
        threads = spec.get("threads") or default_threads()
        chat_handler = None
        chat_format = spec.get("chat_format")
        if spec.get("mmproj"):
            from llama_cpp import llama_chat_format as formats

            # MTMD reads the chat template from the GGUF (Qwen-VL, Gemma 3, …); older
            # families need their own handler, named by chat_format in models.toml.
            handler = getattr(formats, VISION_HANDLERS.get(chat_format or "", "MTMDChatHandler"))
            chat_handler = handler(clip_model_path=spec["mmproj"], verbose=False)
            chat_format = None
        llm = make_llama(
            model_path=spec["path"],
            n_ctx=spec.get("n_ctx") or 4096,
            n_gpu_layers=n_gpu_layers,
            flash_attn=flash_attn,
            n_threads=threads,
            n_threads_batch=threads,
            chat_handler=chat_handler,
            chat_format=chat_format,
            verbose=False,
        )
        init_projector = getattr(chat_handler, "_init_mtmd_context", None)
        if init_projector is not None:
            # The handlers load the mmproj on their first request; loading it here makes
            # a wrong or damaged file a load error, and keeps its load time out of the
            # first request's image_encode_s.
            init_projector(llm)
        template = llm.metadata.get("tokenizer.chat_template")
        if chat_handler is not None:
            check_vision_template(chat_handler, llm, spec)
            # Text-only requests skip the vision handler, which clears the cache every
            # time: through the GGUF's template they reuse the prompt prefix as usual.
            self.text_handler = getattr(llm, "_chat_handlers", {}).get("chat_template.default")
        elif chat_format is None and not template:
            arch = str(llm.metadata.get("general.architecture", ""))
            guessed = next((f for prefix, f in FAMILY_FORMATS if arch.startswith(prefix)), None)
            if guessed is not None:
                llm.chat_format = guessed
            else:
                print(f"yomitori: {spec['path']} has no chat template; using "
                      f"{llm.chat_format!r} (set chat_format in models.toml)",
                      file=sys.stderr)  # fmt: skip
        self.llm = llm
        self.info = {
            "model_path": spec["path"],
            "mmproj": spec.get("mmproj"),
            "n_ctx": llm.n_ctx(),
            "n_gpu_layers": n_gpu_layers,
            "gpu_offload": gpu,
            "flash_attn": bool(flash_attn),
            "threads": llm.n_threads,
            "chat_format": llm.chat_format if chat_handler is None else "mtmd",
        }
        self.send(
            {
                "ev": "loaded",
                "id": request_id,
                "load_s": time.perf_counter() - started,
                "info": self.info,
            }
        )

    def generate(
        self, request_id: int, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> None:
        if self.llm is None:
            raise RuntimeError("no model loaded")
        kwargs = {_OPTION_NAMES[k]: v for k, v in options.items() if k in _OPTION_NAMES}
        if kwargs.get("seed", 0) < 0:
            kwargs.pop("seed")
        llm = self.llm
        self.active = request_id
        started = time.perf_counter()
        llm.begin_request(lambda: request_id in self.cancelled)
        has_image = any(isinstance(m.get("content"), list) for m in messages)
        if llm.chat_format in NO_SYSTEM_ROLE and self.text_handler is None:
            messages = fold_system(messages)
        first: float | None = None
        finish = "stop"
        pending: list[str] = []
        last_send = 0.0  # the first piece goes out at once (time to first token)
        try:
            # A vision handler evaluates the prompt (images too) before it returns.
            if self.text_handler is not None and not has_image:
                stream = self.text_handler(llama=llm, messages=messages, stream=True, **kwargs)
            else:
                stream = llm.create_chat_completion(messages, stream=True, **kwargs)
            for chunk in stream:
                choice = chunk["choices"][0]
                piece = choice.get("delta", {}).get("content")
                if piece:
                    now = time.perf_counter()
                    if first is None:
                        first = now - started
                    pending.append(piece)
                    if now - last_send >= STREAM_INTERVAL_S:
                        self.send({"ev": "chunk", "id": request_id, "text": "".join(pending)})
                        pending.clear()
                        last_send = now
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        except (RequestCancelled, RuntimeError) as err:
            if request_id not in self.cancelled:
                raise
            if not isinstance(err, RequestCancelled):
                # llama.cpp dropped the partial batch; start the cache afresh.
                llm.reset()
            finish = "cancelled"
        finally:
            counts = llm.end_request()
            self.active = None
            if pending:
                self.send({"ev": "chunk", "id": request_id, "text": "".join(pending)})
        if request_id in self.cancelled:
            finish = "cancelled"
        image_encode_s = counts.pop("pre_eval_s", 0.0)
        if has_image:
            counts["image_encode_s"] = image_encode_s
        self.cancelled.discard(request_id)
        self.last_done = max(self.last_done, request_id)
        self.send(
            {
                "ev": "done",
                "id": request_id,
                "finish_reason": finish,
                "timings": {
                    "worker_ttft_s": first,
                    "worker_total_s": time.perf_counter() - started,
                    **counts,
                },
            }
        )
        # Answered: now hand the request's freed heap back (glibc keeps it otherwise, and
        # the worker's memory crept up request after request), off the answer's path.
        give_back_memory()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the worker process."""
    parser = argparse.ArgumentParser(prog="yomitori-worker")
    parser.add_argument("--log", default=None, help="file for llama.cpp's own output")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group; the daemon side
    # decides what to do (cancel), the worker must not die of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = _redirect_output(args.log)
    Worker(channel).run()
    # Skip interpreter teardown: ggml may crash freeing a model at exit, and
    # the OS reclaims everything (RAM and VRAM) faster than destructors do.
    os._exit(0)


if __name__ == "__main__":
    main()
