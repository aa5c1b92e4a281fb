"""The daemon side of the model worker: start it, talk to it, survive it.

One :class:`WorkerEngine` owns at most one worker process.  Requests run one
at a time; ``cancel`` may come from any thread.  If the worker dies, the
request in flight fails with :class:`~daemon.errors.WorkerCrashed` and the
next request starts a fresh worker with the same model.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from daemon import platform
from daemon.engine import Generation, TextSink
from daemon.engine.process import Child, ChildDied
from daemon.errors import Cancelled, EngineError, ModelError, WorkerCrashed, YomitoriError
from daemon.models import ModelSpec

log = logging.getLogger(__name__)


def describe_exit(code: int | None) -> str:
    """``exit code 3`` / ``signal SIGSEGV`` for messages."""
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    if code >= 0xC0000000:  # a Windows crash: an NTSTATUS, e.g. 0xC0000005 (access violation)
        return f"exit code 0x{code:08X}"
    return f"exit code {code}"


def _friendly(kind: str, message: str, spec: ModelSpec | None) -> EngineError:
    """Turn a worker-side exception text into a sentence a user can act on."""
    name = spec.name if spec else "the model"
    if kind == "user":  # the worker's own sentence about the model's files
        return ModelError(message)
    if kind == "load":
        if "mtmd" in message.lower() or "clip" in message.lower():
            mmproj = spec.mmproj if spec else "?"
            return ModelError(
                f"llama.cpp could not load the vision projector for '{name}' ({mmproj}); "
                "make sure the mmproj file belongs to this model."
            )
        return ModelError(
            f"llama.cpp could not load '{name}' from {spec.path if spec else '?'}: the file may be "
            "incomplete or of an architecture this llama-cpp-python build does not know "
            "(update llama-cpp-python, or re-download the file)."
        )
    if "exceed context window" in message or ("context" in message and "exceed" in message):
        n_ctx = spec.n_ctx if spec else "?"
        return EngineError(
            f"The input is too long for the model's context (n_ctx = {n_ctx}): shorten it or "
            "raise n_ctx in models.toml."
        )
    log.debug("worker error (%s): %s", kind, message)
    return EngineError(f"The model failed while generating ({message.splitlines()[0][:200]}).")


class WorkerEngine:
    """llama-cpp-python in a child process, behind the :class:`~daemon.engine.Engine` protocol."""

    def __init__(self, log_path: Path | None = None, cancel_grace_s: float = 1.5) -> None:
        self._log_path = log_path if log_path is not None else platform.log_dir() / "worker.log"
        self._cancel_grace_s = cancel_grace_s
        self._child: Child | None = None
        self._spec: ModelSpec | None = None
        self._info: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._request_lock = threading.Lock()
        self._active: int | None = None
        self._killed_for_cancel: int | None = None
        self.last: Generation | None = None

    # -- public protocol --------------------------------------------------
    @property
    def spec(self) -> ModelSpec | None:
        return self._spec

    @property
    def loaded(self) -> bool:
        return self._alive() and self._spec is not None

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None and child.alive else None

    def load(self, spec: ModelSpec) -> float:
        with self._request_lock:
            return self._ensure(spec)

    def generate(
        self,
        messages: list[dict[str, Any]],
        options: dict[str, Any],
        on_text: TextSink | None = None,
    ) -> Generation:
        with self._request_lock:
            if self._spec is None:
                raise EngineError("No model is loaded; load one first.")
            load_s = self._ensure(self._spec)
            request_id = next(self._ids)
            parts: list[str] = []
            first: float | None = None
            started = time.perf_counter()
            self._active = request_id
            try:
                self._send(
                    {"op": "generate", "id": request_id, "messages": messages, "options": options}
                )
                while True:
                    event = self._receive(request_id)
                    if event["ev"] == "chunk":
                        if first is None:
                            first = time.perf_counter() - started
                        parts.append(event["text"])
                        if on_text is not None:
                            on_text(event["text"])
                    elif event["ev"] == "done":
                        break
                    elif event["ev"] == "error":
                        raise _friendly(event.get("kind", ""), event["message"], self._spec)
            except WorkerCrashed:
                if self._killed_for_cancel == request_id:
                    event = {"finish_reason": "cancelled", "timings": {}}
                else:
                    raise
            except BaseException:
                # Leaving early (Ctrl-C, a failing callback): stop the worker's work too,
                # or it would stay busy with a request nobody waits for.
                with contextlib.suppress(YomitoriError, OSError, ValueError):
                    self._send({"op": "cancel", "id": request_id})
                raise
            finally:
                self._active = None
            timings = event.get("timings", {})
            result = Generation(
                text="".join(parts),
                finish_reason=event.get("finish_reason") or "stop",
                ttft_s=first,
                total_s=time.perf_counter() - started,
                load_s=load_s,
                prompt_tokens=timings.get("prompt_tokens", 0),
                reused_tokens=timings.get("reused_tokens", 0),
                completion_tokens=timings.get("completion_tokens", 0),
                extra={k: timings[k] for k in ("prompt_eval_s", "image_encode_s") if k in timings},
            )
            self.last = result
            return result

    def cancel(self) -> None:
        request_id = self._active
        if request_id is None:
            return
        try:
            self._send({"op": "cancel", "id": request_id})
        except (OSError, EOFError, EngineError):
            return
        # A request stuck in native code (a GPU kernel, a hung driver) cannot
        # see the flag: after a grace period the worker is killed instead.
        timer = threading.Timer(self._cancel_grace_s, self._kill_if_still, args=(request_id,))
        timer.daemon = True
        timer.start()

    def unload(self) -> None:
        self.cancel()
        with self._request_lock:
            self._stop()
            self._spec = None

    def stats(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "backend": "llama-cpp",
            "model": self._spec.name if self._spec else None,
            "loaded": self.loaded,
            "busy": self._active is not None,
            "pid": self.pid,
            **{k: v for k, v in self._info.items() if k != "model_path"},
        }
        if state["pid"] is not None:
            state["rss_bytes"] = rss(state["pid"])
            state["log"] = str(self._log_path)
            # Only an idle worker is asked (a running request owns the channel);
            # it answers from its reader thread at once.
            if self._request_lock.acquire(blocking=False):
                try:
                    request_id = next(self._ids)
                    self._send({"op": "stats", "id": request_id})
                    reply = self._receive(request_id, timeout=2.0)
                    state["cached_tokens"] = reply.get("cached_tokens")
                    state["rss_bytes"] = reply.get("rss_bytes") or state["rss_bytes"]
                except EngineError as err:
                    log.debug("worker stats unavailable: %s", err)
                finally:
                    self._request_lock.release()
        if self.last is not None:
            state["last_timings"] = self.last.timings()
        return state

    def close(self) -> None:
        self.unload()

    # -- process management -----------------------------------------------
    def _alive(self) -> bool:
        return self.pid is not None

    def _ensure(self, spec: ModelSpec) -> float:
        """Make ``spec`` resident (starting or replacing the worker); seconds taken."""
        if self._alive() and self._spec is not None and self._spec.load_key() == spec.load_key():
            self._spec = spec
            return 0.0
        self._stop()
        started = time.perf_counter()
        self._child = Child("daemon.engine.worker", self._log_path)
        self._spec = spec
        request_id = next(self._ids)
        try:
            self._send({"op": "load", "id": request_id, "spec": spec.wire()})
            event = self._receive(request_id)
        except WorkerCrashed as err:
            self._spec = None
            raise WorkerCrashed(
                f"The model worker crashed while loading '{spec.name}' ({err}); "
                f"see {self._log_path} for llama.cpp's messages."
            ) from None
        if event["ev"] == "error":
            self._stop()
            self._spec = None
            kind = "user" if event.get("kind") == "user" else "load"
            raise _friendly(kind, event["message"], spec)
        self._info = event.get("info", {})
        log.info(
            "model %s loaded in %.2fs (%s)",
            spec.name,
            time.perf_counter() - started,
            ", ".join(f"{k}={v}" for k, v in self._info.items() if k != "model_path"),
        )
        return time.perf_counter() - started

    def _send(self, message: dict[str, Any]) -> None:
        child = self._child
        if child is None:
            raise WorkerCrashed("The model worker is not running.")
        try:
            child.send(message)
        except ChildDied:
            raise self._crashed() from None

    def _receive(self, request_id: int, timeout: float | None = None) -> dict[str, Any]:
        """The next event for ``request_id``; raises WorkerCrashed if the worker dies."""
        child = self._child
        if child is None:
            raise self._crashed()
        try:
            return child.receive(request_id, timeout)
        except ChildDied:
            raise self._crashed() from None
        except TimeoutError:
            raise EngineError("The model worker did not answer in time.") from None

    def _crashed(self) -> WorkerCrashed:
        child, self._child, self._info = self._child, None, {}
        how = describe_exit(child.end(grace_s=1) if child is not None else None)
        log.warning("model worker stopped unexpectedly (%s)", how)
        return WorkerCrashed(
            f"The model worker stopped unexpectedly ({how}); the next request starts it again."
        )

    def _kill_if_still(self, request_id: int) -> None:
        child = self._child
        if self._active == request_id and child is not None and child.alive:
            log.warning("worker ignored cancel for %.1fs; killing it", self._cancel_grace_s)
            self._killed_for_cancel = request_id
            child.proc.kill()

    def _stop(self) -> None:
        if self._child is not None:
            self._child.end({"op": "unload"})
        self._child, self._info = None, {}


def rss(pid: int) -> int | None:
    """A process's resident memory in bytes (None: it is gone)."""
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:  # the process may exit between the check and the read
        return None


__all__ = ["Cancelled", "WorkerEngine", "describe_exit"]
