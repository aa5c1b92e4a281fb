"""Prompt templates: ``prompts/*.toml`` files → :class:`Template` objects.

A template is a system part (fixed, comes first so llama.cpp reuses its KV
cache across requests) and a user part holding ``$input``.  Variables are
``$name`` placeholders with defaults; a variable with ``choices`` substitutes
the text of the chosen entry, so ``$style = "tags"`` can switch whole
instructions.  User files in ``<config>/prompts`` override shipped ones by name.

A ``kind = "conversation"`` template asks the user questions before it answers
(:mod:`daemon.conversation`): ``user`` opens with ``$input``, ``answer`` wraps
each reply (``$answer``), ``final`` is the app's own request for the result,
``japanese`` joins the system part when the input is Japanese.  A variable may
take its choices ``from`` another template (``[vars.style] from = "translate_en"``).
"""

from __future__ import annotations

import base64
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from daemon.errors import ConfigError, UserInputError
from daemon.tomlfile import TomlDoc, check_keys, expect_type, load_toml

KINDS = ("text", "image", "chain", "conversation")
_TOP_KEYS = ("name", "title", "description", "kind", "system", "user", "vars", "options", "steps")
_CONVERSATION_KEYS = ("answer", "final", "japanese", "max_questions")
_VAR_KEYS = ("default", "description", "choices", "from")
# Sampling options a template (or ``--set``) may give, with their types.
OPTION_TYPES: dict[str, type] = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "min_p": float,
    "repeat_penalty": float,
    "max_tokens": int,
    "seed": int,
    "stop": list,
    # Reasoning models on Ollama: off unless a template turns it on (other backends
    # ignore it; <think> blocks are stripped either way).
    "think": bool,
}
INPUT_VAR = "input"
ANSWER_VAR = "answer"
MAX_QUESTIONS = (5, 20)  # the default, the most a template may ask for


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None = None
    description: str = ""
    # value → the text substituted for it; None means free text.
    choices: Mapping[str, str] | None = None
    # ``from = "translate_en"``: the choices (and default) are that template's variable of
    # the same name, linked when the folders load (:func:`load_templates`).
    shared_from: str | None = None

    def resolve(self, value: str | None, template: str) -> str:
        """The text substituted for this variable, or a named error."""
        if self.shared_from is not None:
            raise ConfigError(
                f"Template '{template}': ${self.name} takes its choices from "
                f"'{self.shared_from}', which is not loaded."
            )
        if value is None:
            value = self.default
        if value is None:
            raise UserInputError(
                f"Template '{template}': variable ${self.name} has no value; "
                f"pass --set {self.name}=… or give it a default."
            )
        if self.choices is None:
            return value
        if value not in self.choices:
            known = ", ".join(self.choices)
            raise UserInputError(
                f"Template '{template}': {self.name} must be one of {known}, not '{value}'."
            )
        return self.choices[value]


@dataclass(frozen=True)
class Template:
    name: str
    kind: str
    system: str
    user: str
    description: str = ""
    variables: Mapping[str, Variable] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    origin: Path | None = None
    # A few words for notifications, the tray and the result window ("Translate to a
    # prompt"); without one, the action's name.
    title: str = ""
    # kind = "chain": the actions run in order, each one's result feeding the next.
    steps: tuple[str, ...] = ()
    # kind = "conversation" (daemon.conversation): each answer's user turn (holds
    # $answer), the request for the final result, the system addition for Japanese
    # input, and how many questions at most before the app asks for the result.
    answer: str = ""
    final: str = ""
    japanese: str = ""
    max_questions: int = 0


@dataclass(frozen=True)
class Rendered:
    """What goes to the engine: chat messages and sampling options."""

    messages: list[dict[str, Any]]
    options: dict[str, Any]


def placeholders(text: str, where: str) -> list[str]:
    """Names of the ``$var`` / ``${var}`` placeholders in ``text``."""
    names: list[str] = []
    for match in string.Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            line = text.count("\n", 0, match.start()) + 1
            raise ConfigError(
                f"{where}: a lone '$' on line {line} of the text; write $$ for a dollar sign."
            )
        name = match.group("named") or match.group("braced")
        if name and name not in names:
            names.append(name)
    return names


def _parse_variable(doc: TomlDoc, name: str, raw: Any) -> Variable:
    if not isinstance(raw, dict):
        expect_type(doc, name, raw, (str, int, float))
        return Variable(name=name, default=str(raw))
    doc = doc.within(f"vars.{name}")
    check_keys(doc, raw, _VAR_KEYS, f"[vars.{name}]")
    shared_from = raw.get("from")
    if shared_from is not None:
        expect_type(doc, "from", shared_from, str)
        if "choices" in raw:
            raise ConfigError(
                f"{doc.where('from')}: ${name} takes its choices from '{shared_from}'; "
                "drop its own choices or the from key."
            )
    default = raw.get("default")
    if default is not None:
        default = str(expect_type(doc, "default", default, (str, int, float)))
    choices = raw.get("choices")
    if choices is not None:
        expect_type(doc, "choices", choices, dict)
        for key, text in choices.items():
            expect_type(doc, key, text, str)
        if default is not None and default not in choices:
            raise ConfigError(
                f"{doc.where('default')}: default '{default}' of ${name} is not one of its "
                f"choices ({', '.join(choices)})."
            )
    description = str(expect_type(doc, "description", raw.get("description", ""), str))
    return Variable(name=name, default=default, description=description, choices=choices,
                    shared_from=shared_from)  # fmt: skip


def coerce_option(key: str, value: Any, where: str) -> Any:
    """Convert an option from TOML or ``--set`` text to its type."""
    wanted = OPTION_TYPES[key]
    try:
        if wanted is list:
            if isinstance(value, str):
                return [value] if value else []
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ValueError
        if wanted is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ValueError
        if isinstance(value, bool):
            raise ValueError
        if wanted is int and isinstance(value, float):
            raise ValueError
        return wanted(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float(10**400)
        kind = {float: "a number", int: "an integer", list: "a list of strings",
                bool: "true or false"}[wanted]  # fmt: skip
        raise ConfigError(f"{where}: option '{key}' must be {kind}, not {value!r}.") from None


def parse_template(doc: TomlDoc) -> Template:
    """Build a template from a parsed file; every problem names the file."""
    data = doc.data
    kind = data.get("kind", "text")
    conversation = kind == "conversation"
    check_keys(doc, data, _TOP_KEYS + (_CONVERSATION_KEYS if conversation else ()))
    stem = doc.path.stem
    name = expect_type(doc, "name", data.get("name", stem), str)
    if name != stem:
        raise ConfigError(
            f"{doc.where('name')}: name '{name}' differs from the file name; "
            f"rename the file to {name}.toml or drop the name key."
        )
    kind = expect_type(doc, "kind", kind, str)
    if kind not in KINDS:
        raise ConfigError(
            f"{doc.where('kind')}: kind must be 'text', 'image', 'chain' or 'conversation', "
            f"not '{kind}'."
        )
    if kind == "chain":
        return _parse_chain(doc, name)
    system = expect_type(doc, "system", data.get("system", ""), str)
    if "user" not in data:
        raise ConfigError(f"{doc.path}: missing the 'user' part (the text that holds $input).")
    user = expect_type(doc, "user", data["user"], str)
    vars_doc = doc.within("vars")
    variables = {
        key: _parse_variable(vars_doc, key, raw)
        for key, raw in expect_type(doc, "vars", data.get("vars", {}), dict).items()
    }
    for special in (INPUT_VAR, ANSWER_VAR) if conversation else (INPUT_VAR,):
        if special in variables:
            raise ConfigError(
                f"{vars_doc.where(special)}: ${special} is filled in by yomitori; remove it."
            )
    parts = {"system": system, "user": user}
    if conversation:
        parts.update(_conversation_parts(doc))
    used = {key: placeholders(text, f"{doc.path} [{key}]") for key, text in parts.items()}
    if INPUT_VAR in used["system"]:
        raise ConfigError(
            f"{doc.where('system')}: put $input in the user part; the system part stays fixed "
            "so the model can reuse it between requests."
        )
    filled = {"user": (INPUT_VAR,), "final": (INPUT_VAR,), "answer": (ANSWER_VAR,)}
    for key, names in used.items():
        for var in names:
            if var in variables or var in filled.get(key, ()):
                continue
            if var == INPUT_VAR or (conversation and var == ANSWER_VAR):
                raise ConfigError(f"{doc.where(key)}: ${var} cannot be used in the {key} part.")
            raise ConfigError(
                f"{doc.where(key)}: variable ${var} has no value: declare it under [vars] with "
                "a default."
            )
    if kind in ("text", "conversation") and INPUT_VAR not in used["user"]:
        raise ConfigError(f"{doc.where('user')}: the user part must contain $input.")
    if conversation and ANSWER_VAR not in used["answer"]:
        raise ConfigError(f"{doc.where('answer')}: the answer part must contain $answer.")
    raw_options = expect_type(doc, "options", data.get("options", {}), dict)
    options_doc = doc.within("options")
    check_keys(options_doc, raw_options, OPTION_TYPES, "[options]")
    options = {
        key: coerce_option(key, value, options_doc.where(key)) for key, value in raw_options.items()
    }
    description = expect_type(doc, "description", data.get("description", ""), str)
    return Template(
        name=name,
        kind=kind,
        system=system,
        user=user,
        description=description,
        title=_title(doc),
        variables=variables,
        options=options,
        origin=doc.path,
        answer=parts.get("answer", ""),
        final=parts.get("final", ""),
        japanese=parts.get("japanese", ""),
        max_questions=_max_questions(doc) if conversation else 0,
    )


def _conversation_parts(doc: TomlDoc) -> dict[str, str]:
    """The texts only a conversation has: ``final`` is required, the others have defaults."""
    data = doc.data
    if not str(data.get("final", "")).strip():
        raise ConfigError(
            f"{doc.where('final')}: a conversation needs a 'final' part: the request for the "
            "result that yomitori sends when the questions end."
        )
    return {
        "answer": expect_type(doc, "answer", data.get("answer", f"${ANSWER_VAR}"), str),
        "final": expect_type(doc, "final", data["final"], str),
        "japanese": expect_type(doc, "japanese", data.get("japanese", ""), str),
    }


def _max_questions(doc: TomlDoc) -> int:
    default, most = MAX_QUESTIONS
    value = expect_type(doc, "max_questions", doc.data.get("max_questions", default), int)
    if not 1 <= value <= most:
        raise ConfigError(
            f"{doc.where('max_questions')}: max_questions must be 1 to {most}, not {value}."
        )
    return int(value)


def _parse_chain(doc: TomlDoc, name: str) -> Template:
    check_keys(doc, doc.data, ("name", "title", "description", "kind", "steps"), "a chain")
    steps = expect_type(doc, "steps", doc.data.get("steps"), list)
    if len(steps) < 2 or not all(isinstance(s, str) and s for s in steps):
        raise ConfigError(f"{doc.where('steps')}: steps must list two or more action names.")
    if name in steps:
        raise ConfigError(f"{doc.where('steps')}: a chain cannot contain itself.")
    description = expect_type(doc, "description", doc.data.get("description", ""), str)
    return Template(name=name, kind="chain", system="", user="", description=description,
                    origin=doc.path, steps=tuple(steps), title=_title(doc))  # fmt: skip


def _title(doc: TomlDoc) -> str:
    title = expect_type(doc, "title", doc.data.get("title", ""), str).strip()
    if len(title) > 60 or "\n" in title:
        raise ConfigError(f"{doc.where('title')}: title must be one short line (60 characters "
                          "at most); the description can say more.")  # fmt: skip
    return title


def load_template(path: Path) -> Template:
    return parse_template(load_toml(path))


@dataclass
class TemplateSet:
    """Templates by name, plus the files that failed (name → message)."""

    templates: dict[str, Template] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Template:
        if name in self.templates:
            return self.templates[name]
        if name in self.errors:
            raise ConfigError(self.errors[name])
        known = ", ".join(sorted(self.templates)) or "none"
        raise UserInputError(f"Unknown action '{name}' (known: {known}).")


def load_templates(folders: Iterable[Path]) -> TemplateSet:
    """Load every ``*.toml`` of each folder in order; later folders override.

    A broken file is recorded and skipped: the others still load, and a broken
    override leaves the earlier (shipped) template of that name in place.
    """
    result = TemplateSet()
    # Each name's good files, in override order: a file whose ``from`` cannot be linked
    # gives way to the one it overrides.
    candidates: dict[str, list[Template]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                template = load_template(path)
            except ConfigError as err:
                result.errors[path.stem] = str(err)
                continue
            candidates.setdefault(template.name, []).append(template)
            result.templates[template.name] = template
            result.errors.pop(template.name, None)
    for name, versions in candidates.items():
        if not any(v.shared_from for v in versions[-1].variables.values()):
            continue
        del result.templates[name]
        for template in reversed(versions):
            try:
                result.templates[name] = link_shared(template, candidates)
                break
            except ConfigError as err:
                result.errors.setdefault(name, str(err))
    return result


def link_shared(template: Template, sources: Mapping[str, Sequence[Template]]) -> Template:
    """``template`` with each ``from`` variable replaced by the one it names.

    ``sources``: each name's templates as parsed, in override order.  The variable comes
    from the last of them that has it (a user's translate_en without ``$style`` leaves the
    shipped choices in use); linking the parsed files keeps the outcome independent of
    the order they load in, and a variable that is shared itself is refused as a source.
    """
    variables = dict(template.variables)
    for name, variable in template.variables.items():
        source = variable.shared_from
        if source is None:
            continue
        where = f"{_from_line(template, name)}: ${name}"
        found = [v.variables[name] for v in sources.get(source, ()) if name in v.variables]
        shared = found[-1] if found else None
        if shared is None or shared.shared_from is not None:
            what = f"has no variable ${name}" if source in sources else "is not a template"
            if shared is not None:
                what = f"takes ${name} from '{shared.shared_from}' itself; name that one"
            raise ConfigError(f"{where} takes its choices from '{source}', which {what}.")
        default = variable.default if variable.default is not None else shared.default
        if shared.choices is not None and default is not None and default not in shared.choices:
            raise ConfigError(
                f"{where}: default '{default}' is not one of the choices of '{source}' "
                f"({', '.join(shared.choices)})."
            )
        variables[name] = replace(
            shared, default=default, description=variable.description or shared.description
        )
    return replace(template, variables=variables)


def _from_line(template: Template, variable: str) -> str:
    """``path, line N`` of a variable's ``from`` key (read again: only errors need it)."""
    if template.origin is None:
        return f"Template '{template.name}'"
    return load_toml(template.origin).within(f"vars.{variable}").where("from")


def split_pairs(
    name: str, variables: Iterable[str], pairs: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Sort ``--set`` pairs for action ``name`` into its variables and sampling options."""
    known = list(variables)
    values: dict[str, str] = {}
    options: dict[str, Any] = {}
    for key, value in pairs.items():
        if key in known:
            values[key] = str(value)
        elif key in OPTION_TYPES:
            raw: Any = value.split("|") if key == "stop" and isinstance(value, str) else value
            options[key] = coerce_option(key, raw, "--set")
        else:
            raise UserInputError(
                f"Unknown key '{key}' for '{name}' (variables: {', '.join(known) or 'none'}; "
                f"options: {', '.join(OPTION_TYPES)})."
            )
    return values, options


def split_overrides(
    template: Template, pairs: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Sort ``--set`` pairs into the template's variables and sampling options."""
    return split_pairs(template.name, template.variables, pairs)


def image_data_url(image: bytes) -> str:
    """A PNG/JPEG/WebP as the ``data:`` URL vision chat handlers take."""
    mime = "image/png"
    if image[:3] == b"\xff\xd8\xff":
        mime = "image/jpeg"
    elif image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        mime = "image/webp"
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def resolve_values(template: Template, values: Mapping[str, str] | None) -> dict[str, str]:
    """Each variable's text for these ``--set`` values (defaults for the rest)."""
    given = dict(values or {})
    for key in given:
        if key not in template.variables:
            raise UserInputError(f"Unknown variable '{key}' for '{template.name}'.")
    return {
        name: var.resolve(given.get(name), template.name)
        for name, var in template.variables.items()
    }


def fill(text: str, mapping: Mapping[str, str]) -> str:
    """``text`` with its placeholders replaced (the parser made sure each has a value)."""
    return string.Template(text).substitute(mapping)


def render(
    template: Template,
    text: str | None = None,
    image: bytes | None = None,
    values: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Rendered:
    """Fill the template; the fixed system part always comes first."""
    mapping = {**resolve_values(template, values), INPUT_VAR: text or ""}
    system = fill(template.system, mapping)
    user_text = fill(template.user, mapping)
    messages: list[dict[str, Any]] = []
    if system.strip():
        messages.append({"role": "system", "content": system})
    if image is not None:
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_data_url(image)}},
                    {"type": "text", "text": user_text},
                ],
            }
        )
    else:
        messages.append({"role": "user", "content": user_text})
    merged = dict(template.options)
    merged.update(options or {})
    return Rendered(messages=messages, options=merged)
