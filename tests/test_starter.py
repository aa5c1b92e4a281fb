"""The commented starter hotkeys.toml and models.toml written on first run."""

from __future__ import annotations

import re
from pathlib import Path

from daemon import platform
from daemon.config import load_config
from daemon.models import load_models
from daemon.starter import HOTKEYS, MODELS, write_starters

SHIPPED = platform.defaults_dir() / "hotkeys.toml"


def uncomment(text: str, start: str) -> str:
    """The commented block that starts with ``start``, uncommented (up to a blank line)."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(f"# {start}"))
    block = []
    for line in lines[first:]:
        if re.match(r"^#\s{3,}#", line):  # a comment's second line
            continue
        if not line.startswith("# "):
            break
        block.append(re.sub(r"^# ", "", line))
    return "\n".join(block) + "\n"


def test_starters_are_written_once_and_never_over_a_users_file(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    written = write_starters(folder)
    assert sorted(p.name for p in written) == ["hotkeys.toml", "models.toml"]
    assert (folder / "hotkeys.toml").read_text(encoding="utf-8") == HOTKEYS
    (folder / "models.toml").write_text("# mine\n", encoding="utf-8")
    (folder / "hotkeys.toml").unlink()
    assert [p.name for p in write_starters(folder)] == ["hotkeys.toml"]
    assert (folder / "models.toml").read_text(encoding="utf-8") == "# mine\n"
    assert write_starters(folder) == []


def test_the_starters_change_nothing(tmp_path: Path) -> None:
    write_starters(tmp_path)
    assert load_config([SHIPPED, tmp_path / "hotkeys.toml"]).bindings == (
        load_config([SHIPPED]).bindings
    )
    assert load_config([SHIPPED, tmp_path / "hotkeys.toml"]).settings == (
        load_config([SHIPPED]).settings
    )
    assert load_models(tmp_path).models == {}


def test_each_commented_example_is_valid_once_uncommented(tmp_path: Path) -> None:
    settings = uncomment(HOTKEYS, "keep_alive").replace('"30m"', '"10m"')
    binding = "[[binding]]\n" + uncomment(HOTKEYS, 'hotkey = "<alt>+<shift>+<cmd>+t"')
    user = tmp_path / "hotkeys.toml"
    user.write_text("[settings]\n" + settings + "\n" + binding, encoding="utf-8")
    config = load_config([SHIPPED, user])
    assert config.settings.keep_alive_s == 600
    mine = config.bindings[-1]
    assert (mine.hotkey, mine.action, mine.source, mine.output) == (
        "<alt>+<shift>+<cmd>+t", "translate_en", "selection", ("paste",))  # fmt: skip
    off = "[[binding]]\n" + uncomment(HOTKEYS, 'hotkey = "<alt>+<shift>+<cmd>+i"')
    user.write_text(off, encoding="utf-8")
    assert "<alt>+<shift>+<cmd>+i" not in [b.hotkey for b in load_config([SHIPPED, user]).bindings]
    for section in ("qwen3-vl]", "qwen3-server]", "ollama-vl]", "studio]"):
        (tmp_path / "models.toml").write_text(uncomment(MODELS, f"[models.{section}"), "utf-8")
        (spec,) = load_models(tmp_path).models.values()
        assert spec.name == section.rstrip("]")
