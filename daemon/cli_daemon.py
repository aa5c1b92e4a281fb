"""The ``yomitori`` commands that talk to the daemon or measure things:
run, trigger, status, bindings, reload/cancel/free/quit, history, capture, bench."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from daemon.errors import YomitoriError


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.desktop.app import main as run_daemon

    return run_daemon(use_tray=False if args.no_tray else None, debug=args.debug)


def cmd_trigger(args: argparse.Namespace) -> int:
    from daemon.cli import parse_sets
    from daemon.desktop import ipc

    message: dict[str, Any] = {
        "cmd": "trigger", "action": args.action, "source": args.source, "text": args.text,
        "output": args.output or ["clipboard", "notify"], "vars": parse_sets(args.set),
        "model": args.model, "wait": not args.no_wait,
    }  # fmt: skip
    reply = ipc.request(message, timeout=None)
    if not reply.get("ok"):
        error = YomitoriError(str(reply.get("error") or "The daemon refused the request."))
        code = reply.get("exit_code")
        if isinstance(code, int) and not isinstance(code, bool):
            error.exit_code = code  # the same code `yomitori do` gives for this failure
        raise error
    if args.json:
        # The fields `yomitori do --json` prints, or {"queued": true} with --no-wait.
        fields = ("action", "text", "model", "timings", "finish_reason", "queued")
        print(json.dumps({k: reply[k] for k in fields if k in reply}, ensure_ascii=False))
    elif "text" in reply:
        print(reply["text"])
    return 0


def cmd_bindings(args: argparse.Namespace) -> int:
    """The hotkeys that take effect, where each comes from, and every config problem."""
    from daemon import platform
    from daemon.service import read_state

    state = read_state()
    shipped = platform.defaults_dir()
    rows = []
    for binding in state.config.bindings:
        origin = "shipped" if binding.origin == "shipped" else binding.where
        rows.append({
            "hotkey": binding.hotkey, "action": binding.action, "source": binding.source,
            "output": list(binding.output), "vars": dict(binding.vars), "model": binding.model,
            "from": origin, "replaces": list(binding.replaces),
        })  # fmt: skip
    cancel = state.config.settings.cancel_hotkey
    if args.json:
        print(json.dumps({"bindings": rows, "cancel_hotkey": cancel,
                          "problems": state.problems}, ensure_ascii=False))  # fmt: skip
    else:
        table = [(r["hotkey"], r["action"],
                  f"{r['source']} → {', '.join(r['output'])}"
                  + "".join(f" {k}={v}" for k, v in r["vars"].items())
                  + (f" model={r['model']}" if r["model"] else ""), r["from"])
                 for r in rows]  # fmt: skip
        table.append((cancel, "cancel", "stops the running action", ""))
        widths = [max(len(row[i]) for row in table) for i in range(3)]
        for row, info in zip(table, [*rows, None], strict=True):
            cells = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
            print(f"{cells}  {row[3]}".rstrip())
            for old in info["replaces"] if info else ():
                print(f"{'':<{widths[0]}}  (replaces {old})".replace(
                    str(shipped / "hotkeys.toml"), "shipped"))  # fmt: skip
        if not state.config.settings.shipped_bindings:
            print("(shipped_bindings = false: the shipped hotkeys are left out)")
    for message in state.problems:
        print(f"yomitori: {message}", file=sys.stderr)
    if state.problems:
        print("yomitori: the bindings above are those that can work; fix the problems, then "
              "yomitori reload.", file=sys.stderr)  # fmt: skip
        return 2
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from daemon.desktop import ipc

    reply = ipc.request({"cmd": "status"})
    if not reply.get("ok") or not isinstance(reply.get("status"), dict):
        raise YomitoriError(str(reply.get("error") or "the daemon sent no status"))
    status = reply["status"]
    if args.json:
        print(json.dumps(status))
        return 0
    print("\n".join(status_lines(status)))
    return 0


def status_lines(status: dict[str, Any]) -> list[str]:
    """``yomitori status`` in words: no Python lists, Nones or True/False."""
    lines = []
    for key, value in status.items():
        label = key.replace("_", " ")
        if key == "engines":
            lines += [f"engine: {describe_engine(e)}" for e in value] or ["engine: none yet"]
        elif key == "remote":
            lines += [f"remote: text and images go to {url} (allow_remote)" for url in value]
        elif key == "hotkeys_taken":
            lines += [f"hotkey not available: {line}" for line in value]
        elif key == "uptime_s":
            lines.append(f"uptime: {_duration(float(value))}")
        elif isinstance(value, bool):
            lines.append(f"{label}: {'yes' if value else 'no'}")
        elif value is None:
            lines.append(f"{label}: none")
        elif isinstance(value, list | tuple):
            lines.append(f"{label}: {', '.join(map(str, value)) or 'none'}")
        else:
            lines.append(f"{label}: {value}")
    return lines


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


def describe_engine(engine: dict[str, Any]) -> str:
    """One line per engine for ``yomitori status``: backend, model, where, memory."""
    parts = [str(engine.get("backend")), str(engine.get("model") or "no model")]
    parts.append("loaded" if engine.get("loaded") else "not loaded")
    if engine.get("url"):
        parts.append(str(engine["url"]))
    if engine.get("pid"):
        parts.append(f"pid {engine['pid']}")
    if engine.get("rss_bytes"):
        parts.append(f"{engine['rss_bytes'] / 2**20:.0f} MiB")
    if engine.get("on_gpu"):
        vram, size = engine.get("vram_bytes") or 0, engine.get("size_bytes") or 0
        parts.append(f"on GPU: {engine['on_gpu']} ({vram / 2**30:.1f} of {size / 2**30:.1f} GiB)")
    elif engine.get("gpu_offload") is not None:
        parts.append("GPU offload" if engine["gpu_offload"] else "CPU")
    if engine.get("shared"):
        parts.append(f"shared (key in {engine['shared']})")
    return ", ".join(parts)


def cmd_simple(args: argparse.Namespace) -> int:
    from daemon.desktop import ipc

    reply = ipc.request({"cmd": args.command}, timeout=60)
    if not reply.get("ok"):
        raise YomitoriError(str(reply.get("error")))
    if args.command == "quit":
        if reply.get("cancelled"):
            print(f"Cancelled the running {reply['cancelled']}.")
        _wait_until_gone(ipc)
    return 0


def _wait_until_gone(ipc: Any, timeout: float = 10.0) -> None:
    """Quit returns once the daemon is gone, so that status and run are right at once."""
    lock = ipc.InstanceLock()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock.acquire():
            lock.release()
            print("yomitori stopped.")
            return
        time.sleep(0.05)
    raise YomitoriError(f"The daemon is still stopping after {timeout:g} s; "
                        "yomitori status shows when it is gone.")  # fmt: skip


def cmd_history(args: argparse.Namespace) -> int:
    from daemon.sinks.history import History, default_path

    if not default_path().exists():
        print("No history yet.")
        return 0
    history = History()
    if args.clear:
        print(f"Deleted {history.clear()} entries.")
        return 0
    entries = history.recent(args.limit)
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], ensure_ascii=False))
        return 0
    for entry in entries:
        print("\n".join(history_lines(entry)))
    return 0


def history_lines(entry: Any) -> list[str]:
    """One entry for a terminal: a heading, what it read (a region's OCR text, the
    clipboard's start), and the result with every line indented, so a multi-line
    result (four variations) stays readable and one entry ends where the next begins."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.ts))
    lines = [f"{when}  {entry.action}  ({entry.source}, {entry.model})"]
    read = " ".join(entry.input_excerpt.split())
    if read:
        lines.append(f"  from: {read if len(read) <= 90 else read[:89] + '…'}")
    lines += [f"  {line}" if line.strip() else "" for line in entry.output.splitlines()]
    return [*lines, ""]


def cmd_capture(args: argparse.Namespace) -> int:
    from daemon.desktop.capture import run_capture

    return run_capture(args.out)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.ocr is not None:
        from daemon.bench.ocr import run_ocr_bench

        print(json.dumps(run_ocr_bench(args.ocr, args.engine, max(1, args.runs // 2)),
                         ensure_ascii=False))  # fmt: skip
        return 0
    if args.overlay:
        from daemon.desktop.capture import overlay_bench

        print(json.dumps(overlay_bench(args.runs)))
        return 0

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    if args.load:
        from daemon.bench.load import run_load_bench

        print(json.dumps(run_load_bench(args.model or "tiny", args.actions, say),
                         ensure_ascii=False))  # fmt: skip
        return 0
    if args.daemon:
        from daemon.bench.desktop import run_daemon_bench

        figures = run_daemon_bench(args.model or "tiny", args.runs, args.idle_seconds, say)
        print(json.dumps(figures))
        return 0
    if args.compare:
        from daemon.bench.compare import run_compare

        figures = run_compare(args.model, args.runs, args.threads, quiet=args.json)
        print(json.dumps(figures))
        return 0
    from daemon.bench import run_bench

    figures = run_bench(model=args.model, runs=args.runs, threads=args.threads, quiet=args.json)
    print(json.dumps(figures))
    return 0
