"""Prompt templates: ``prompts/*.toml`` files → :class:`Template` objects.

A template is a system part (fixed, comes first so llama.cpp reuses its KV
cache across requests) and a user part holding ``$input``.  Variables are
``$name`` placeholders with defaults; a variable with ``choices`` substitutes
the text of the chosen entry, so ``$style = "tags"`` can switch whole
instructions.  User files in ``<config>/prompts`` override shipped ones by name.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.errors import ConfigError, UserInputError
from daemon.tomlfile import TomlDoc, check_keys, expect_type, load_toml

KINDS = ("text", "image", "chain")
_TOP_KEYS = ("name", "title", "description", "kind", "system", "user", "vars", "options", "steps")
_VAR_KEYS = ("default", "description", "choices")
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


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None = None
    description: str = ""
    # value → the text substituted for it; None means free text.
    choices: Mapping[str, str] | None = None

    def resolve(self, value: str | None, template: str) -> str:
        """The text substituted for this variable, or a named error."""
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
    return Variable(name=name, default=default, description=description, choices=choices)


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
    check_keys(doc, data, _TOP_KEYS)
    stem = doc.path.stem
    name = expect_type(doc, "name", data.get("name", stem), str)
    if name != stem:
        raise ConfigError(
            f"{doc.where('name')}: name '{name}' differs from the file name; "
            f"rename the file to {name}.toml or drop the name key."
        )
    kind = expect_type(doc, "kind", data.get("kind", "text"), str)
    if kind not in KINDS:
        raise ConfigError(
            f"{doc.where('kind')}: kind must be 'text', 'image' or 'chain', not '{kind}'."
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
    if INPUT_VAR in variables:
        raise ConfigError(
            f"{vars_doc.where(INPUT_VAR)}: $input is filled from the source; remove it."
        )
    used = placeholders(system, f"{doc.path} [system]") + placeholders(user, f"{doc.path} [user]")
    for var in used:
        if var != INPUT_VAR and var not in variables:
            raise ConfigError(
                f"{doc.path}: variable ${var} has no value: declare it under [vars] with a default."
            )
    if INPUT_VAR in placeholders(system, str(doc.path)):
        raise ConfigError(
            f"{doc.where('system')}: put $input in the user part; the system part stays fixed "
            "so the model can reuse it between requests."
        )
    if kind == "text" and INPUT_VAR not in used:
        raise ConfigError(f"{doc.where('user')}: the user part must contain $input.")
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
    )


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
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                template = load_template(path)
            except ConfigError as err:
                result.errors[path.stem] = str(err)
                continue
            result.templates[template.name] = template
            result.errors.pop(template.name, None)
    return result


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


def render(
    template: Template,
    text: str | None = None,
    image: bytes | None = None,
    values: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Rendered:
    """Fill the template; the fixed system part always comes first."""
    given = dict(values or {})
    for key in given:
        if key not in template.variables:
            raise UserInputError(f"Unknown variable '{key}' for '{template.name}'.")
    mapping = {
        name: var.resolve(given.get(name), template.name)
        for name, var in template.variables.items()
    }
    mapping[INPUT_VAR] = text or ""
    system = string.Template(template.system).substitute(mapping)
    user_text = string.Template(template.user).substitute(mapping)
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
