"""The result window: a small always-on-top window near the pointer that streams a
result as it comes, shows what it came from, and has Copy, Paste, Retry and Close.

It lives in the overlay process, on the Tk thread that process already runs, never in
the daemon.  The daemon drives it with fire-and-forget ``{"op": "window", "do": …}``
messages, one window per job (its notification tag); what the user does comes back as
``{"ev": "window", "tag", "action": "copy" | "paste" | "retry" | "answer" | "closed" |
"refused", "text"}`` events.

* ``open``: title, the source (the text read, or a thumbnail PNG), a status line;
* ``text``: a streamed piece; ``done``: the final text, and ``items`` (variations) shown
  as a list where a click or the keys 1–9 copy one;
* ``ask``: a question with an answer field and a GO button (the prompt builder);
* ``failed``: the error, in words.

A window never opens over a fullscreen program (a game): the daemon is told
``refused`` and says the result in a notification instead.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import tkinter as tk
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]

WIDTH = 460
WRAP = 430
BODY_CHARS = 56
THUMB = (240, 120)
SOURCE_CHARS = 300
MAX_WINDOWS = 4  # older ones close when more are open
_ITEM = re.compile(r"^\s*(\d{1,2})[.)、:]\s*(.+?)\s*$")


def numbered_items(text: str) -> list[str]:
    """The entries of a numbered list ("1. …" per line, a wrapped entry joined), or []
    when ``text`` is not one (fewer than two entries, or numbers not counting from 1)."""
    items: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _ITEM.match(line)
        if match and int(match.group(1)) == len(items) + 1:
            items.append(match.group(2))
        elif match is None:
            if items:
                items[-1] += " " + line.strip()  # an entry wrapped onto the next line
            # else: a line before the list ("Here are four variations:")
        else:
            return []  # numbers out of order: not a list to pick from
    return items if len(items) >= 2 else []


def fullscreen_active() -> bool:
    """Whether the focused window is fullscreen (a game): then nothing pops over it."""
    try:
        from Xlib import X, display
    except ImportError:
        return False
    try:
        screen = display.Display()
    except Exception:  # no X display (Windows, macOS, Wayland without XWayland)
        return False
    try:
        root = screen.screen().root
        active = root.get_full_property(screen.intern_atom("_NET_ACTIVE_WINDOW"), X.AnyPropertyType)
        if active is None or not active.value or not active.value[0]:
            return False
        window = screen.create_resource_object("window", active.value[0])
        state = window.get_full_property(screen.intern_atom("_NET_WM_STATE"), X.AnyPropertyType)
        wanted = screen.intern_atom("_NET_WM_STATE_FULLSCREEN")
        return state is not None and wanted in list(state.value)
    except Exception:  # a window that went away meanwhile
        return False
    finally:
        screen.close()


class ResultWindow:
    """One job's window (Tk thread only)."""

    def __init__(
        self, root: tk.Misc, tag: str, send: Send, on_close: Callable[[str], None]
    ) -> None:
        self.tag = tag
        self._send = send
        self._on_close = on_close
        self.items: list[str] = []
        self.text = ""
        self.top = tk.Toplevel(root, class_="YomitoriResult")
        self.top.withdraw()
        self.top.title("yomitori")
        self.top.attributes("-topmost", True)
        self.top.protocol("WM_DELETE_WINDOW", lambda: self._button("close"))
        self.top.configure(padx=10, pady=8)
        self.heading = tk.Label(self.top, font=("TkDefaultFont", 11, "bold"), anchor="w")
        self.heading.pack(fill="x")
        self.source = tk.Label(self.top, anchor="w", justify="left", fg="#555555",
                               wraplength=WRAP)  # fmt: skip
        self.source.pack(fill="x", pady=(2, 6))
        self.body = tk.Text(self.top, width=BODY_CHARS, height=1, wrap="word", relief="flat",
                            font="TkDefaultFont", background=self.top.cget("background"),
                            borderwidth=0)  # fmt: skip
        self.body.pack(fill="both", expand=True)
        self.body.configure(state="disabled")
        self.list = tk.Frame(self.top)
        self.ask = tk.Frame(self.top)
        self.question = tk.Label(self.ask, anchor="w", justify="left", wraplength=WRAP)
        self.question.pack(fill="x")
        self.choices = tk.Frame(self.ask)
        self.choices.pack(fill="x", pady=(4, 0))
        row = tk.Frame(self.ask)
        row.pack(fill="x", pady=(4, 0))
        self.answer = tk.Entry(row)
        self.answer.pack(side="left", fill="x", expand=True)
        self.answer.bind("<Return>", lambda _e: self._answer(self.answer.get()))
        tk.Button(row, text="GO", command=lambda: self._answer("GO")).pack(side="left", padx=4)
        self.status = tk.Label(self.top, anchor="w", fg="#555555")
        self.status.pack(fill="x", pady=(6, 2))
        buttons = tk.Frame(self.top)
        buttons.pack(fill="x")
        self.buttons: dict[str, tk.Button] = {}
        for name, label in (("copy", "Copy"), ("paste", "Paste"), ("retry", "Retry"),
                            ("close", "Close")):  # fmt: skip
            button = tk.Button(buttons, text=label, command=lambda n=name: self._button(n))
            button.pack(side="left", padx=(0, 6))
            self.buttons[name] = button
        self.top.bind("<Escape>", lambda _e: self._button("close"))
        self.top.bind("<Control-c>", lambda _e: self._button("copy"))
        self.top.bind("<Control-r>", lambda _e: self._button("retry"))
        # Enter pastes where the user was (the answer field keeps its own Enter).
        self.top.bind("<Return>", lambda e: None if e.widget is self.answer
                      else self._button("paste"))  # fmt: skip
        for digit in range(1, 10):
            self.top.bind(str(digit), lambda _e, n=digit: self._pick(n))
        self._thumb: tk.PhotoImage | None = None

    # -- what the daemon says ------------------------------------------------------------
    def open(self, message: dict[str, Any]) -> None:
        self.heading.configure(text=str(message.get("title") or "yomitori"))
        self.top.title(f"yomitori — {message.get('title') or ''}")
        source = " ".join(str(message.get("source") or "").split())
        if len(source) > SOURCE_CHARS:
            source = source[: SOURCE_CHARS - 1] + "…"
        image = message.get("image")
        if image:
            self._thumb = _thumbnail(base64.b64decode(image))
        if self._thumb is not None:
            self.source.configure(image=self._thumb, text="")
        else:
            self.source.configure(text=source, image="")
        if not source and self._thumb is None:
            self.source.pack_forget()
        self.status.configure(text=str(message.get("status") or "Working…"))
        self._enable(done=False)
        self._place(offset=28 * int(message.get("_index") or 0))

    def set_source(self, text: str) -> None:
        if self._thumb is not None:
            return  # the picture says it
        text = " ".join(text.split())
        if len(text) > SOURCE_CHARS:
            text = text[: SOURCE_CHARS - 1] + "…"
        self.source.configure(text=text)
        if not self.source.winfo_ismapped():
            self.source.pack(fill="x", pady=(2, 6), after=self.heading)

    def append(self, piece: str) -> None:
        self.text += piece
        self._set_body(self.text)

    def done(self, text: str, items: list[str]) -> None:
        self.text = text
        self.items = [str(i) for i in items][:9] if items else numbered_items(text)[:9]
        self.ask.pack_forget()
        if self.items:
            self.body.pack_forget()
            self._show_items()
            self.status.configure(text="Click one, or press 1–9, to copy it.")
        else:
            self._set_body(text)
            self.status.configure(text=str(self.status_after or "Done."))
        self._enable(done=True)
        self._fit()

    status_after: str | None = None

    def failed(self, message: str) -> None:
        self.ask.pack_forget()
        self.status.configure(text=message, fg="#b02020", wraplength=WRAP, justify="left")
        self._enable(done=True, copy=bool(self.text))
        self._fit()

    def asking(self, question: str, choices: list[str] | None = None) -> None:
        self.text = ""
        self._set_body("")
        self.question.configure(text=question)
        for child in self.choices.winfo_children():
            child.destroy()
        for choice in (choices or [])[:6]:  # its example answers, one click each
            button = tk.Button(self.choices, text=choice, command=lambda c=choice: self._answer(c))
            button.pack(side="left", padx=(0, 4))
        self.ask.pack(fill="x", before=self.status)
        self.answer.delete(0, "end")
        self.answer.focus_set()
        self.status.configure(text="Answer in a word or two, or GO to write the prompt now.")

    def close(self) -> None:
        if self.top is None:
            return
        top, self.top = self.top, None  # type: ignore[assignment]
        top.destroy()
        self._on_close(self.tag)

    # -- the user ------------------------------------------------------------------------
    def _button(self, name: str) -> None:
        if name == "close":
            self.close()
            self._send({"ev": "window", "tag": self.tag, "action": "closed"})
            return
        if self.buttons[name].cget("state") == "disabled":
            return  # a key for a button that cannot be used now
        if name in ("copy", "paste") and not self.text:
            return
        if name == "paste":  # the window goes first, so the paste lands where the user was
            self.close()
        self._send({"ev": "window", "tag": self.tag, "action": name, "text": self.text})
        if name == "copy":
            self.status.configure(text="Copied.", fg="#555555")
        elif name == "retry":
            self.items = []
            self.list.pack_forget()
            self.body.pack(fill="both", expand=True, before=self.status)
            self.text = ""
            self._set_body("")
            self.status.configure(text="Working…", fg="#555555")
            self._enable(done=False)

    def _pick(self, number: int) -> None:
        if 1 <= number <= len(self.items):
            chosen = self.items[number - 1]
            self._send({"ev": "window", "tag": self.tag, "action": "copy", "text": chosen})
            self.status.configure(text=f"Copied {number}.", fg="#555555")

    def _answer(self, text: str) -> None:
        self.ask.pack_forget()
        self.status.configure(text="Working…")
        self._send({"ev": "window", "tag": self.tag, "action": "answer", "text": text})

    # -- drawing -------------------------------------------------------------------------
    def _set_body(self, text: str) -> None:
        self.body.configure(state="normal")
        self.body.delete("1.0", "end")
        self.body.insert("1.0", text)
        # Lines as wrapped at the body's width (the widget can only count once drawn).
        lines = sum(max(1, -(-len(line) // BODY_CHARS)) for line in text.split("\n"))
        self.body.configure(height=max(1, min(14, lines)), state="disabled")
        self._fit()

    def _show_items(self) -> None:
        for child in self.list.winfo_children():
            child.destroy()
        for number, item in enumerate(self.items, start=1):
            row = tk.Label(self.list, text=f"{number}  {item}", anchor="w", justify="left",
                           wraplength=WRAP, cursor="hand2", pady=3)  # fmt: skip
            row.bind("<Button-1>", lambda _e, n=number: self._pick(n))
            row.pack(fill="x")
        self.list.pack(fill="both", expand=True, before=self.status)

    def _enable(self, done: bool, copy: bool = True) -> None:
        for name in ("copy", "paste"):
            self.buttons[name].configure(state="normal" if done and copy else "disabled")
        self.buttons["retry"].configure(state="normal" if done else "disabled")

    def _place(self, offset: int = 0) -> None:
        """Near the pointer (each further window a step down and right), on top, with
        the keyboard."""
        top = self.top
        px, py = top.winfo_pointerxy()
        self._at = (px + 16 + offset, py + 16 + offset)
        self._fit()
        top.deiconify()
        top.lift()
        top.focus_force()

    def _fit(self) -> None:
        """Keep the whole window on the screen as its content grows."""
        top = self.top
        if top is None or not hasattr(self, "_at"):
            return
        top.update_idletasks()
        width, height = max(top.winfo_reqwidth(), WIDTH), top.winfo_reqheight()
        sw, sh = top.winfo_screenwidth(), top.winfo_screenheight()
        x = min(max(0, self._at[0]), max(0, sw - width - 8))
        y = min(max(0, self._at[1]), max(0, sh - height - 48))
        top.geometry(f"+{x}+{y}")


def _thumbnail(png: bytes) -> tk.PhotoImage | None:
    try:
        from PIL import Image

        image = Image.open(io.BytesIO(png))
        image.thumbnail(THUMB)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PPM")
        return tk.PhotoImage(data=buffer.getvalue(), format="ppm")
    except Exception:  # not an image Tk or PIL reads: the text says enough
        log.debug("thumbnail failed", exc_info=True)
        return None


class ResultWindows:
    """The open windows by job tag; ``handle`` runs each daemon message on the Tk thread."""

    def __init__(self, root: tk.Misc, send: Send) -> None:
        self.root = root
        self.send = send
        self.windows: dict[str, ResultWindow] = {}

    def handle(self, message: dict[str, Any]) -> None:
        tag = str(message.get("tag") or "")
        do = message.get("do")
        if do == "open":
            if tag not in self.windows and fullscreen_active():
                self.send({"ev": "window", "tag": tag, "action": "refused"})
                return
            new = tag not in self.windows
            window = self.windows.get(tag) or self._new(tag)
            window.status_after = message.get("status_after")
            window.open({**message, "_index": len(self.windows) - 1 if new else 0})
            return
        window = self.windows.get(tag)
        if window is None:
            return  # closed by the user meanwhile
        if do == "text":
            window.append(str(message.get("text") or ""))
        elif do == "done":
            window.status_after = message.get("status_after") or window.status_after
            if message.get("source"):  # what the OCR step read, once it has
                window.set_source(str(message["source"]))
            window.done(str(message.get("text") or ""), list(message.get("items") or []))
        elif do == "ask":
            window.asking(str(message.get("question") or ""),
                          [str(c) for c in message.get("choices") or []])  # fmt: skip
        elif do == "failed":
            window.failed(str(message.get("message") or "It failed."))
        elif do == "close":
            window.close()

    def _new(self, tag: str) -> ResultWindow:
        while len(self.windows) >= MAX_WINDOWS:
            self.windows[next(iter(self.windows))].close()
        window = ResultWindow(self.root, tag, self.send, self._closed)
        self.windows[tag] = window
        return window

    def _closed(self, tag: str) -> None:
        self.windows.pop(tag, None)

    def close_all(self) -> None:
        for window in list(self.windows.values()):
            window.close()
