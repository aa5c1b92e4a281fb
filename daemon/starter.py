"""The commented ``hotkeys.toml`` and ``models.toml`` written into the config folder on
first run, so a new user finds where to change things and what to write there.

Everything in them is a comment: they change nothing until the user uncomments a line.
An existing file is never touched.
"""

from __future__ import annotations

import logging
from pathlib import Path

from daemon import platform

log = logging.getLogger(__name__)

HOTKEYS = """\
# yomitori: your hotkeys and settings.  This file is read on top of the shipped defaults
# (`yomitori paths` shows where those are): write only what you want to change, then
# `yomitori reload`.  `yomitori bindings` shows the hotkeys in effect and where each comes
# from.

[settings]
# keep_alive = "30m"            # unload the model when unused this long (0: at once, -1: never)
# cancel_hotkey = "<alt>+<shift>+<cmd>+x"
# notify_chars = 160            # how much of a result a notification shows
# ocr_engine = "rapidocr"       # rapidocr | tesseract | vlm
# region_capture = "auto"       # auto | overlay | portal (Wayland)
# shipped_bindings = true       # false: only the bindings below

# A binding here adds a hotkey, or replaces the shipped binding on the same hotkey or with
# the same action and source.
#
# [[binding]]
# hotkey = "<alt>+<shift>+<cmd>+t"  # pynput syntax: <ctrl> <alt> <shift> <cmd> and a key
# action = "translate_en"       # `yomitori templates` lists the actions
# source = "selection"          # clipboard | selection | region | last_region |
#                               # clipboard_image
# output = ["paste"]            # clipboard | paste | notify
# vars = { style = "tags" }     # template variables and sampling options (max_tokens = "120")
# model = "qwen3-vl"            # a model from models.toml; omit for the default
#
# Switch a shipped binding off:
# [[binding]]
# hotkey = "<alt>+<shift>+<cmd>+i"
# enabled = false
"""

MODELS = """\
# yomitori: the models it can use.  Uncomment one section (or add one with
# `yomitori models add`, which keeps these comments; `yomitori models --discover` lists
# what your Ollama, LM Studio or llama-server already has).  `yomitori models` shows each
# model and whether it can run now.

# default = "qwen3-vl"

# A GGUF run in yomitori's own worker process; captions and vision OCR need the mmproj.
# [models.qwen3-vl]
# path = "~/models/Qwen3-VL-4B-Instruct-Q4_K_M.gguf"
# mmproj = "~/models/mmproj-Qwen3-VL-4B-Instruct-F16.gguf"
# n_ctx = 8192

# The same file run by a llama-server that yomitori starts and stops.
# [models.qwen3-server]
# backend = "llama-server"
# path = "~/models/Qwen3-VL-4B-Instruct-Q4_K_M.gguf"
# mmproj = "~/models/mmproj-Qwen3-VL-4B-Instruct-F16.gguf"

# A model in your Ollama.
# [models.ollama-vl]
# backend = "ollama"
# model = "qwen2.5vl:7b"

# LM Studio, or any OpenAI-compatible server on this machine.
# [models.studio]
# backend = "openai"
# url = "http://127.0.0.1:1234"
# model = "qwen2.5-vl-7b-instruct"
"""

STARTERS = {"hotkeys.toml": HOTKEYS, "models.toml": MODELS}


def write_starters(folder: Path | None = None) -> list[Path]:
    """Write each starter file that does not exist yet; the paths written."""
    folder = folder or platform.config_dir()
    written = []
    for name, text in STARTERS.items():
        path = folder / name
        if path.exists():
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with path.open("x", encoding="utf-8") as file:  # never over an existing one
                file.write(text)
        except OSError as err:  # a read-only config folder: run on without
            log.info("starter %s not written: %s", name, err.strerror)
            continue
        written.append(path)
    return written
