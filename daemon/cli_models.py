"""``yomitori models --discover [--json]`` and ``yomitori models add NAME …``.

Discovery asks the usual loopback ports what answers there (Ollama 11434, LM Studio
1234, llama-server 8080, KoboldCpp 5001), all at once, and lists each model a server
offers.  ``add`` writes one ``[models.NAME]`` section into the user's models.toml with
tomlkit, so the comments and layout already there survive, and checks the result
parses before leaving it in place.

Wiring in :mod:`daemon.cli`::

    models = sub.add_parser("models", help="list, discover (--discover) or add models")
    cli_models.configure_parser(models)
    ...
    def cmd_models(args):
        handled = cli_models.cmd_models_verbs(args)
        if handled is not None:
            return handled
        ...  # the listing, as before
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from daemon import platform
from daemon.errors import UserInputError, YomitoriError
from daemon.models import MODELS_FILE, TINY, load_models

log = logging.getLogger(__name__)

#: Server label → its usual port.  The label "ollama" is asked Ollama's native API;
#: the others the OpenAI-compatible one (which also tells which server it is).
DEFAULT_PORTS: dict[str, int] = {
    "ollama": 11434,
    "lmstudio": 1234,
    "llama-server": 8080,
    "koboldcpp": 5001,
}
PORTS_ENV = "YOMITORI_DISCOVER_PORTS"
GGUF_BACKENDS = ("llama-cpp", "llama-server")
HTTP_BACKENDS = ("ollama", "openai")
BACKEND_CHOICES = (*GGUF_BACKENDS, *HTTP_BACKENDS)
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_ADD_ONLY = ("backend", "model", "url", "path", "mmproj", "from_discovered")
_ADD_FLAGS = ("vision", "default", "allow_remote")

_NEW_FILE = """\
# yomitori models: one [models.NAME] section per model; `default` is the one used
# when an action or --model names none.  See the README's "Models" section.
"""

_START_HINTS = (
    "Ollama: install it from https://ollama.com, run `ollama serve` (or open its app), "
    "then `ollama pull qwen2.5vl:7b`.",
    "LM Studio: download a model, then start its server with `lms server start` "
    "(or the Developer tab).",
    "llama-server: `llama-server -m MODEL.gguf --port 8080`.",
)


# -- discovery --------------------------------------------------------------------------


def discover_ports(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """The port table: :data:`DEFAULT_PORTS`, or exactly the servers that
    ``YOMITORI_DISCOVER_PORTS="ollama=PORT,lmstudio=PORT,…"`` lists."""
    text = (os.environ if environ is None else environ).get(PORTS_ENV, "").strip()
    if not text:
        return dict(DEFAULT_PORTS)
    ports: dict[str, int] = {}
    for item in text.split(","):
        label, sep, value = item.strip().partition("=")
        label = label.strip().lower()
        if not sep or label not in DEFAULT_PORTS:
            raise UserInputError(
                f"{PORTS_ENV} wants LABEL=PORT items separated by commas, LABEL one of "
                f"{', '.join(DEFAULT_PORTS)}; got '{item.strip()}'."
            )
        try:
            port = int(value)
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise UserInputError(f"{PORTS_ENV}: '{value.strip()}' is not a port number.")
        ports[label] = port
    return ports


def _probe(label: str, url: str, timeout: float) -> Any:
    """The server at ``url`` as :mod:`daemon.engine.probe` sees it (raises when none)."""
    from daemon.engine import probe

    if label == "ollama":
        return probe.probe_ollama(url, timeout)
    return probe.probe_openai(url, None, timeout)


def discover(
    ports: Mapping[str, int] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 0.5,
    refused: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Every model the servers on the usual loopback ports offer, asked concurrently.

    One dict per model: ``url``, ``server`` (ollama, lmstudio, llama-server, koboldcpp
    or openai), ``backend`` (the models.toml backend to use: ``ollama`` or ``openai``),
    ``model`` (its name on the server), ``vision`` (True/False, None where the server
    does not say) and ``loaded``.  Nothing listening, a timeout or a server of another
    kind is skipped (logged at DEBUG); a server that wants an API key is skipped and
    its URL appended to ``refused``."""
    from daemon.engine.probe import ProbeRefused

    table = discover_ports() if ports is None else dict(ports)
    targets: list[tuple[str, str]] = []
    for label, port in table.items():
        url = f"http://{host}:{port}"
        if url not in (u for _l, u in targets):
            targets.append((label, url))
    if not targets:
        return []

    def ask(target: tuple[str, str]) -> Any:
        label, url = target
        try:
            return _probe(label, url, timeout)
        except ProbeRefused:
            log.debug("discover: %s wants an API key", url)
            if refused is not None:
                refused.append(url)
        except Exception as err:  # nothing there, or not a server we know
            log.debug("discover: %s (%s): %s: %s", url, label, type(err).__name__, err)
        return None

    with ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="discover") as pool:
        found = list(pool.map(ask, targets))
    entries: list[dict[str, Any]] = []
    for info in found:
        if info is None:
            continue
        for model in info.models:
            entries.append(
                {
                    "url": info.url,
                    "server": info.kind,
                    "backend": "ollama" if info.kind == "ollama" else "openai",
                    "model": model.id,
                    "vision": model.vision,
                    "loaded": model.loaded,
                }
            )
    return entries


def suggest_name(model: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A models.toml name for a server's model id: ``qwen2.5vl:7b`` → ``qwen2-5vl-7b``."""
    base = model.rsplit("/", 1)[-1].lower()
    base = re.sub(r"[^a-z0-9_-]+", "-", base).strip("-") or "model"
    base = re.sub(r"-{2,}", "-", base)
    name, number = base, 2
    while name in taken or name == TINY:
        name, number = f"{base}-{number}", number + 1
    return name


def add_command(entry: Mapping[str, Any], name: str) -> str:
    """The ``yomitori models add`` command line that adds a discovered model."""
    words = ["yomitori", "models", "add", name, "--backend", str(entry["backend"])]
    words += ["--model", str(entry["model"]), "--url", str(entry["url"])]
    if entry.get("vision"):
        words.append("--vision")
    return " ".join(shlex.quote(w) for w in words)


def _configured_names() -> set[str]:
    try:
        return set(load_models().models)
    except (YomitoriError, ImportError) as err:
        log.debug("models.toml not readable for name suggestions: %s", err)
        return set()


def _vision_word(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def cmd_models_discover(args: argparse.Namespace) -> int:
    """``yomitori models --discover [--json]``."""
    ports = discover_ports()
    refused: list[str] = []
    entries = discover(ports, refused=refused)
    if getattr(args, "json", False):
        print(json.dumps(entries, ensure_ascii=False, indent=2))
        return 0
    asked = ", ".join(f"http://127.0.0.1:{port} ({label})" for label, port in ports.items())
    for url in refused:
        print(
            f"{url} answered but wants an API key: add its model by hand with "
            "api_key_env in models.toml (see the README)."
        )
    if not entries:
        print(f"No local model server found. Asked: {asked}.")
        print("Start one, then run `yomitori models --discover` again:")
        for hint in _START_HINTS:
            print(f"  {hint}")
        return 0
    rows = [("#", "url", "server", "model", "vision")]
    for number, entry in enumerate(entries, 1):
        rows.append(
            (
                str(number),
                entry["url"],
                entry["server"],
                entry["model"],
                _vision_word(entry["vision"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    first = entries[0]
    name = suggest_name(str(first["model"]), _configured_names())
    print()
    print("To use the first one:")
    print(f"  {add_command(first, name)}")
    print("(or: yomitori models add NAME --from-discovered N, N from the # column)")
    return 0


# -- add --------------------------------------------------------------------------------


def models_path() -> Path:
    return platform.config_dir() / MODELS_FILE


def _absolute(text: str) -> str:
    return str(Path(text).expanduser().absolute())


def _fill_from_discovered(args: argparse.Namespace) -> dict[str, Any]:
    """backend, model, url (and vision when the server says so) from discovery entry N."""
    number = args.from_discovered
    entries = discover()
    if not entries:
        raise UserInputError(
            "--from-discovered: no local model server answered (yomitori models --discover "
            "says which ports it asks)."
        )
    if not 1 <= number <= len(entries):
        raise UserInputError(
            f"--from-discovered {number}: discovery found {len(entries)} model(s), numbered "
            "1 on (yomitori models --discover lists them)."
        )
    return entries[number - 1]


def _section(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """The keys of the new section, checked; raises UserInputError with one line."""
    section: dict[str, Any] = {"backend": backend}
    if backend in GGUF_BACKENDS:
        if not args.path:
            raise UserInputError(
                f"Backend '{backend}' runs a GGUF file: give its --path (and --mmproj for a "
                "vision model)."
            )
        for flag in ("model", "url"):
            if getattr(args, flag):
                raise UserInputError(
                    f"--{flag} is for models on a server; backend '{backend}' runs the "
                    "--path file (use --backend openai or ollama for a server)."
                )
        if args.vision or args.allow_remote:
            flag = "--vision" if args.vision else "--allow-remote"
            raise UserInputError(
                f"{flag} is for models on a server; a GGUF model sees images through its "
                "--mmproj file."
            )
        section["path"] = _absolute(args.path)
        if args.mmproj:
            section["mmproj"] = _absolute(args.mmproj)
        return section
    if not args.model:
        raise UserInputError(
            f"Backend '{backend}' uses a model the server has: give its --model name "
            "(yomitori models --discover lists them)."
        )
    for flag in ("path", "mmproj"):
        if getattr(args, flag):
            raise UserInputError(
                f"--{flag} is for GGUF files; backend '{backend}' uses a model the server "
                "already has (use --backend llama-cpp or llama-server for a file)."
            )
    if not args.url and _default_url(backend) is None:
        raise UserInputError(
            f"Backend '{backend}' needs the server's --url (LM Studio http://127.0.0.1:1234, "
            "llama-server :8080, KoboldCpp :5001; yomitori models --discover finds them)."
        )
    if args.url:
        from daemon.backends.common import check_url

        check_url(args.url.rstrip("/"), bool(args.allow_remote))  # ModelError: exit 2
        section["url"] = args.url.rstrip("/")
    section["model"] = args.model
    if args.vision:
        section["vision"] = True
    if args.allow_remote:
        section["allow_remote"] = True
    return section


def _default_url(backend: str) -> str | None:
    """The URL the backend assumes when models.toml gives none (None: it needs one)."""
    from daemon import backends

    return getattr(backends.get(backend), "DEFAULT_URL", None)


def _render(name: str, section: Mapping[str, Any]) -> str:
    import tomlkit

    doc = tomlkit.document()
    models = tomlkit.table(is_super_table=True)
    table = tomlkit.table()
    for key, value in section.items():
        table[key] = value
    models[name] = table
    doc["models"] = models
    return tomlkit.dumps(doc).strip()


def cmd_models_add(args: argparse.Namespace) -> int:
    """``yomitori models add NAME …``: one new ``[models.NAME]`` section in models.toml."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    name = getattr(args, "name", None)
    if not name:
        raise UserInputError("yomitori models add needs a NAME for the model.")
    if not _NAME_RE.match(name):
        raise UserInputError(
            f"Model name '{name}' may use only letters, digits, '-' and '_' "
            f"(try {suggest_name(name)})."
        )
    if name == TINY:
        raise UserInputError(f"'{TINY}' is the built-in demo model's name; pick another.")
    backend = args.backend
    model, url, vision = args.model, args.url, args.vision
    if args.from_discovered is not None:
        entry = _fill_from_discovered(args)
        backend = backend or entry["backend"]
        model = model or entry["model"]
        url = url or entry["url"]
        vision = vision or entry.get("vision") is True
    if backend is None:
        if not args.path:
            raise UserInputError(
                "yomitori models add: say --backend (llama-cpp or llama-server with --path "
                "FILE.gguf; ollama or openai with --model NAME), or --from-discovered N."
            )
        backend = "llama-cpp"
    if backend not in BACKEND_CHOICES:
        raise UserInputError(f"Unknown backend '{backend}' (known: {', '.join(BACKEND_CHOICES)}).")
    filled = argparse.Namespace(**{**vars(args), "model": model, "url": url, "vision": vision})
    section = _section(filled, backend)

    path = models_path()
    old_text = path.read_text(encoding="utf-8") if path.exists() else None
    config = load_models(path.parent)  # a broken file: its own error, before any change
    if name in config.models:
        raise UserInputError(
            f"Model '{name}' is already in {path}; pick another name or edit the file."
        )
    try:
        doc = tomlkit.parse(old_text if old_text is not None else _NEW_FILE)
    except TOMLKitError as err:
        raise UserInputError(f"{path} cannot be edited ({err}); fix it by hand first.") from None
    table = tomlkit.table()
    for key, value in section.items():
        table[key] = value
    models = doc.get("models")
    if models is None:
        models = tomlkit.table(is_super_table=True)
        doc["models"] = models
    models[name] = table
    # No default yet: the new model becomes it, except that a lone model already there
    # (used until now because it was the only one) stays the one used.
    default = name if args.default or config.default is None else None
    if default is not None and not args.default and len(config.models) == 1:
        default = next(iter(config.models))
    if default is not None:
        doc["default"] = default
    new_text = tomlkit.dumps(doc)

    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, new_text)
    try:
        load_models(path.parent)
    except BaseException:
        if old_text is None:
            path.unlink(missing_ok=True)
        else:
            _write(path, old_text)
        raise
    print(f"Added model '{name}' to {path}:")
    print()
    print(_render(name, section))
    print()
    if default == name:
        print(f'It is the default model now (default = "{name}").')
    elif default is not None:
        print(
            f"The default stays '{default}' (written as default = \"{default}\"); "
            "use --default to make the new one the default."
        )
    missing = [section[k] for k in ("path", "mmproj") if k in section]
    missing = [file for file in missing if not Path(file).is_file()]
    for file in missing:
        print(
            f"yomitori: note: {file} does not exist yet; download it there before use.",
            file=sys.stderr,
        )
    return 0


def _write(path: Path, text: str) -> None:
    """Replace ``path``'s text in one step (a crash leaves the old or the new file)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


# -- argparse ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The ``models`` subcommand's arguments: ``yomitori models`` (list),
    ``yomitori models --discover [--json]`` and ``yomitori models add NAME …``."""
    parser.add_argument("verb", nargs="?", choices=("add",), help="add: write a new model")
    parser.add_argument("name", nargs="?", help="the new model's name (with add)")
    parser.add_argument(
        "--discover",
        action="store_true",
        help="list the models local servers offer (Ollama, LM Studio, llama-server, KoboldCpp)",
    )
    parser.add_argument("--json", action="store_true", help="with --discover: print JSON")
    add = parser.add_argument_group("add NAME")
    add.add_argument("--backend", choices=BACKEND_CHOICES, help="how the model runs")
    add.add_argument("--model", help="the model's name on the server (ollama, openai)")
    add.add_argument("--url", help="the server's URL (ollama, openai; default: the usual port)")
    add.add_argument("--path", help="the GGUF file (llama-cpp, llama-server)")
    add.add_argument("--mmproj", help="the vision projector GGUF (llama-cpp, llama-server)")
    add.add_argument("--vision", action="store_true", help="the server model sees images")
    add.add_argument(
        "--allow-remote",
        action="store_true",
        help="the server is on another machine (your text and images go there)",
    )
    add.add_argument("--default", action="store_true", help="make it the default model")
    add.add_argument(
        "--from-discovered",
        type=int,
        metavar="N",
        help="take backend, model and url from entry N of yomitori models --discover",
    )


#: The same, under the name the first plan gave it.
add_parsers = configure_parser


def cmd_models_verbs(args: argparse.Namespace) -> int | None:
    """Run ``--discover`` or ``add``; None when neither was asked (the listing runs)."""
    verb = getattr(args, "verb", None)
    discover_flag = bool(getattr(args, "discover", False))
    if verb == "add":
        if discover_flag:
            raise UserInputError("--discover and add are separate commands; run one.")
        return cmd_models_add(args)
    given = [k for k in _ADD_ONLY if getattr(args, k, None) is not None]
    given += [k for k in _ADD_FLAGS if getattr(args, k, False)]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UserInputError(f"{flag} goes with yomitori models add NAME.")
    if discover_flag:
        return cmd_models_discover(args)
    if getattr(args, "json", False):
        raise UserInputError("--json goes with yomitori models --discover.")
    return None
