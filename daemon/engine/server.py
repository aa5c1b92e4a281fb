"""A llama-server that yomitori starts, talks to and stops (``backend = "llama-server"``).

The server listens on 127.0.0.1 only, on a port it picks itself (``--port 0``,
read back from its "listening on" line: no race between choosing and binding),
with a fresh API key that goes by environment, never on the command line.  One
slot, so a cancel (closing the stream) frees it at once.  Unload ends the
process.  A server that dies fails the request in flight with a sentence; the
next request starts a fresh one.  It never outlives the daemon: see
:mod:`daemon.engine.binary` (parent-death signal, Job Object, PID files).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from daemon import platform
from daemon.backends.llama_server import SHARE_PORT, find_server
from daemon.engine import Generation, TextSink
from daemon.engine.binary import BinaryChild, ChildExited, sweep
from daemon.engine.client import describe_exit, rss
from daemon.engine.openai import OpenAIEngine
from daemon.errors import EngineError, ModelError, WorkerCrashed, YomitoriError
from daemon.models import ModelSpec

log = logging.getLogger(__name__)

READY = re.compile(r"listening on https?://[^\s]+:(\d+)")
LOAD_TIMEOUT_S = 300.0
SHARE_FILE = "llama-server-share.json"


def server_argv(binary: Path, spec: ModelSpec, port: int) -> list[str]:
    """The command line: loopback, one slot, our context; no secrets in it."""
    argv = [str(binary), "-m", str(spec.path), "--host", "127.0.0.1", "--port", str(port),
            "-c", str(spec.n_ctx), "-np", "1", "--no-webui",
            # A full-size sliding-window cache (Gemma 3 and other SWA models), as the
            # in-process worker has (llama.cpp's library default): without it the server
            # keeps only a checkpoint near the end of each prompt, and a template's fixed
            # part is evaluated again whenever the input after it changes.
            "--swa-full"]  # fmt: skip
    if spec.mmproj is not None:
        argv += ["--mmproj", str(spec.mmproj)]
    if spec.n_gpu_layers is not None:
        argv += ["-ngl", str(spec.n_gpu_layers)]
    if spec.flash_attn is not None:
        argv += ["-fa", "on" if spec.flash_attn else "off"]
    if spec.threads is not None:
        argv += ["-t", str(spec.threads)]
    if spec.chat_format:
        argv += ["--chat-template", spec.chat_format]
    argv += list(spec.opt("args") or ())
    return argv


def share_file() -> Path:
    return platform.data_dir() / SHARE_FILE


def write_private(path: Path, text: str) -> None:
    """A file only this user can read (the shared server's key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


class ManagedServerEngine:
    backend = "llama-server"

    def __init__(self, log_path: Path | None = None, run_dir: Path | None = None) -> None:
        self._log_path = log_path or platform.log_dir() / "llama-server.log"
        self._run_dir = run_dir or platform.runtime_dir()
        self._child: BinaryChild | None = None
        self._spec: ModelSpec | None = None
        self._http: OpenAIEngine | None = None
        self._lock = threading.Lock()
        self._started_for: tuple[Any, ...] | None = None
        self.port: int | None = None
        self.api_key: str | None = None
        swept = sweep(self._run_dir)
        if swept:
            log.info("stopped %d llama-server(s) left by a daemon that was killed", len(swept))

    # -- protocol ----------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec | None:
        return self._spec

    @property
    def loaded(self) -> bool:
        child = self._child
        return child is not None and child.alive and self._spec is not None

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None and child.alive else None

    def load(self, spec: ModelSpec) -> float:
        with self._lock:
            return self._ensure(spec)

    def generate(
        self,
        messages: list[dict[str, Any]],
        options: dict[str, Any],
        on_text: TextSink | None = None,
    ) -> Generation:
        with self._lock:
            if self._spec is None:
                raise EngineError("No model is loaded; load one first.")
            load_s = self._ensure(self._spec)
            http = self._http
        assert http is not None
        try:
            result = http.generate(messages, options, on_text)
        except YomitoriError:
            if self._died():
                raise self._crashed() from None
            raise
        result.load_s += load_s
        return result

    def wire(
        self, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The request ``generate`` would send to the running server (for the bench)."""
        if self._http is None:
            raise EngineError("llama-server is not running; load a model first.")
        return self._http.wire(messages, options)

    def cancel(self) -> None:
        if self._http is not None:
            self._http.cancel()

    def unload(self) -> None:
        self.cancel()
        with self._lock:
            self._stop()
            self._spec = None

    close = unload

    def stats(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "backend": self.backend,
            "model": self._spec.name if self._spec else None,
            "loaded": self.loaded,
            "pid": self.pid,
            "log": str(self._log_path),
        }
        if self.pid is not None:
            state["url"] = f"http://127.0.0.1:{self.port}"
            state["rss_bytes"] = rss(self.pid)
            if self._spec is not None and self._spec.opt("share"):
                state["shared"] = str(share_file())
        if self._http is not None and self._http.last is not None:
            state["last_timings"] = self._http.last.timings()
        return state

    # -- the process ---------------------------------------------------------------
    def _ensure(self, spec: ModelSpec) -> float:
        if self.loaded and self._started_for == spec.load_key():
            self._spec = spec
            return 0.0
        self._stop()
        started = time.perf_counter()
        binary = find_server(spec)
        share = bool(spec.opt("share"))
        port = int(spec.opt("port") or SHARE_PORT) if share else 0
        key = secrets.token_urlsafe(24)
        argv = server_argv(binary, spec, port)
        log.info("starting %s for %s", binary, spec.name)
        child = BinaryChild(argv, self._log_path, env={"LLAMA_API_KEY": key},
                            ready_pattern=READY, pidfile_dir=self._run_dir)  # fmt: skip
        self._child, self._spec = child, spec
        timeout = float(spec.opt("timeout_s") or LOAD_TIMEOUT_S)
        try:
            child.wait_ready(timeout, health=lambda: self._healthy(child))
        except ChildExited as err:
            self._child, self._spec = None, None
            raise self._failed_start(spec, err, port) from None
        except TimeoutError:
            child.end()
            self._child, self._spec = None, None
            raise EngineError(
                f"llama-server did not become ready within {timeout:g} s for '{spec.name}'; "
                f"see {self._log_path}. A big model on a slow disk may need timeout_s raised."
            ) from None
        self.port, self.api_key = self._port(child), key
        url = f"http://127.0.0.1:{self.port}"
        self._http = OpenAIEngine(api_key=key, flavour="llama-server")
        inner = ModelSpec(name=spec.name, backend="llama-server", url=url, remote=spec.name)
        self._http.load(inner.with_opts(server_kind="llama-server", vision=spec.vision))
        self._started_for = spec.load_key()
        if share:
            write_private(share_file(), f'{{"url": "{url}/v1", "api_key": "{key}"}}\n')
        elapsed = time.perf_counter() - started
        log.info("llama-server ready for %s on port %s in %.2fs", spec.name, self.port, elapsed)
        return elapsed

    @staticmethod
    def _port(child: BinaryChild) -> int:
        """The port from the "listening on" line (wait_ready has seen it)."""
        match = child.ready_match
        assert match is not None
        return int(match.group(1))

    def _healthy(self, child: BinaryChild) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self._port(child)}/health", timeout=2.0,
                             trust_env=False).status_code == 200  # fmt: skip
        except httpx.HTTPError:
            return False

    def _failed_start(self, spec: ModelSpec, err: ChildExited, port: int) -> YomitoriError:
        said = "\n".join(err.tail).lower()
        how = describe_exit(err.code)
        if port and ("address already in use" in said or "bind" in said):
            return ModelError(
                f"llama-server could not listen on port {port}: another program uses it. Set "
                f"port = … for '{spec.name}' in models.toml to a free one."
            )
        if "invalid argument" in said or "unknown argument" in said:
            return ModelError(
                f"This llama-server does not take one of the flags yomitori passes ({how}); "
                f"see {self._log_path}. Update llama-server, or check args in models.toml."
            )
        if "failed to load model" in said or "error loading model" in said:
            return ModelError(
                f"llama-server could not load '{spec.name}' from {spec.path}: the file may be "
                "incomplete or of an architecture this build does not know; see "
                f"{self._log_path}."
            )
        if "mmproj" in said or "clip" in said:
            return ModelError(
                f"llama-server could not load the vision projector for '{spec.name}' "
                f"({spec.mmproj}); make sure the mmproj file belongs to this model."
            )
        return EngineError(f"llama-server exited while starting ({how}); see {self._log_path}.")

    def _died(self) -> bool:
        child = self._child
        if child is None:
            return False
        # The connection breaks a moment before the exit status is there.
        for _ in range(20):
            if not child.alive:
                return True
            time.sleep(0.025)
        return False

    def _crashed(self) -> WorkerCrashed:
        child, self._child = self._child, None
        code = child.end(grace_s=1) if child is not None else None
        self._started_for = None
        how = describe_exit(code)
        log.warning("llama-server stopped unexpectedly (%s)", how)
        return WorkerCrashed(
            f"llama-server stopped unexpectedly ({how}); the next request starts it again. "
            f"Its messages are in {self._log_path}."
        )

    def _stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._child is not None:
            self._child.end()
            self._child = None
        self._started_for = None
        self.port = None
        if self._spec is not None and self._spec.opt("share"):
            with contextlib.suppress(OSError):
                share_file().unlink()
