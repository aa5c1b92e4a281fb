"""Read TOML files with errors that name the file, the line and the key."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from daemon.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

_LINE_RE = re.compile(r"at line (\d+), column (\d+)")
_HEADER_RE = re.compile(r"^\s*\[\[?([^\[\]]+)\]\]?\s*(?:#.*)?$")


@dataclass(frozen=True)
class TomlDoc:
    """A parsed file and its text, kept so later checks can point at lines."""

    path: Path
    text: str
    data: dict[str, Any]
    # 0-based [start, end) line ranges that look-ups search; None: the whole file.
    scope: tuple[tuple[int, int], ...] | None = None

    def within(self, table: str) -> TomlDoc:
        """The same file, with line look-ups limited to ``[table]`` and its sub-tables.

        Without this, a key that several tables share (``default`` of two
        variables, ``path`` of two models) would be reported at its first line.
        """
        lines = self.text.splitlines()
        ranges: list[tuple[int, int]] = []
        start: int | None = None
        for number, line in enumerate(lines):
            match = _HEADER_RE.match(line)
            if match is None:
                continue
            header = re.sub(r"""[\s"']""", "", match.group(1))
            inside = header == table or header.startswith(f"{table}.")
            if inside and start is None:
                start = number
            elif not inside and start is not None:
                ranges.append((start, number))
                start = None
        if start is not None:
            ranges.append((start, len(lines)))
        return replace(self, scope=tuple(ranges)) if ranges else self

    def line_of(self, key: str) -> int | None:
        """The first line (1-based) where ``key = …`` or ``[….key]`` appears."""
        pattern = re.compile(
            rf"""^\s*(?:["']?{re.escape(key)}["']?\s*=|\[+[^\]]*\b{re.escape(key)}\b[^\]]*\]+)"""
        )
        lines = self.text.splitlines()
        for start, end in self.scope or ((0, len(lines)),):
            for number in range(start, end):
                if pattern.match(lines[number]):
                    return number + 1
        return None

    def where(self, key: str | None = None) -> str:
        """``path`` or ``path, line N`` for messages."""
        line = self.line_of(key) if key else None
        return f"{self.path}, line {line}" if line else str(self.path)


def load_toml(path: Path) -> TomlDoc:
    """Parse ``path``; a syntax error names the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}).") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the file ({err.strerror}).") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        match = _LINE_RE.search(message)
        reason = _LINE_RE.sub("", message).strip().rstrip("()").strip()
        if match:
            raise ConfigError(
                f"{path}, line {match.group(1)}, column {match.group(2)}: invalid TOML: {reason}."
            ) from None
        raise ConfigError(f"{path}: invalid TOML: {reason}.") from None
    except ValueError:  # tomllib lets int()'s own error through for a number of 4300+ digits
        raise ConfigError(f"{path}: invalid TOML: a number with too many digits.") from None
    return TomlDoc(path=path, text=text, data=data)


class Problems:
    """Every problem in a set of files, so all are reported at once, not one per try."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, message: str) -> None:
        if message not in self.items:
            self.items.append(message)

    def add_error(self, err: ConfigError) -> None:
        for message in getattr(err, "problems", None) or [str(err)]:
            self.add(message)

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Run a check; a ConfigError it raises is kept and the caller goes on."""
        try:
            yield
        except ConfigError as err:
            self.add_error(err)

    def raise_if_any(self) -> None:
        if self.items:
            raise problems_error(self.items)


def problems_error(items: list[str]) -> ConfigError:
    """One error for several problems: one per line, each naming its file and line."""
    if len(items) == 1:
        error = ConfigError(items[0])
    else:
        error = ConfigError(f"{len(items)} problems:\n" + "\n".join(items))
    error.problems = list(items)  # type: ignore[attr-defined]
    return error


def check_keys(
    doc: TomlDoc, table: Mapping[str, Any], allowed: Iterable[str], context: str = ""
) -> None:
    """Raise naming the first key of ``table`` that is not in ``allowed``."""
    allowed_set = set(allowed)
    for key in table:
        if key not in allowed_set:
            known = ", ".join(sorted(allowed_set))
            inside = f" in {context}" if context else ""
            raise ConfigError(
                f"{doc.where(key)}: unknown key '{key}'{inside} (known keys: {known})."
            )


def expect_type(doc: TomlDoc, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    """Return ``value`` if it has the wanted type, else raise naming the key."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; a TOML boolean is never a valid number here.
    is_bool_for_number = isinstance(value, bool) and bool not in kinds
    if is_bool_for_number or not isinstance(value, kinds):
        names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise ConfigError(f"{doc.where(key)}: '{key}' must be {names}, not {value!r}.")
    return value


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}
