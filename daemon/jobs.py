"""A job — what one hotkey, tray click or ``yomitori trigger`` asks for — and the two ends
of it that touch the desktop: reading its source and delivering its result.

The desktop comes in through :class:`DesktopIO`, so this runs and is tested headless.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.actions import ActionResult, Payload
from daemon.errors import UserInputError, YomitoriError

log = logging.getLogger(__name__)


class DesktopIO(Protocol):
    """The desktop as the loop needs it; ``chord`` is the hotkey that started the job."""

    def read_clipboard(self) -> str: ...

    def write_clipboard(self, text: str) -> None: ...

    def copy_selection(self, chord: str | None) -> str: ...

    def paste(self, text: str, chord: str | None, keep: bool) -> None:
        """Type ``text`` into the focused window; keep it on the clipboard or restore."""

    def notify(self, title: str, body: str, tag: str | None = None) -> None:
        """Show a notification; one with the ``tag`` of an earlier one replaces it
        (where the notifier can), so a job's "queued" note becomes its result."""

    def capture_region(self, repeat: bool = False) -> bytes:
        """PNG of a region the user selects (or the last one); raises Cancelled on Esc."""

    def read_clipboard_image(self) -> bytes | None: ...

    def window(self, message: dict[str, Any]) -> None:
        """Drive a result window (``{"do": "open" | "text" | "done" | "failed" | "ask",
        "tag", …}``, see daemon/sources/result_window.py); what the user does there
        comes back to :meth:`daemon.service.Service.window_event`."""


@dataclass
class Job:
    action: str
    source: str = "clipboard"
    outputs: tuple[str, ...] = ("clipboard", "notify")
    vars: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    chord: str | None = None
    origin: str = "hotkey"
    text: str | None = None  # given directly (``yomitori trigger --text``)
    future: Future[ActionResult] | None = None
    tag: str | None = None  # its notifications replace each other (set when taken)
    started: float = 0.0  # time.monotonic() when it was taken


def read_source(io: DesktopIO, job: Job) -> Payload:
    """The job's input, read before any model loads (a missing input costs no load)."""
    if job.text is not None:
        return Payload(text=job.text, source="text")
    if job.source == "clipboard":
        text = io.read_clipboard()
        if not text.strip():
            raise UserInputError("The clipboard holds no text: copy some text first.")
        return Payload(text=text, source="clipboard")
    if job.source == "selection":
        text = io.copy_selection(job.chord)
        if not text.strip():
            raise UserInputError("No text is selected: select some text first.")
        return Payload(text=text, source="selection")
    if job.source in ("region", "last_region"):
        image = io.capture_region(repeat=job.source == "last_region")
        return Payload(image=image, source=job.source)
    if job.source == "clipboard_image":
        image = io.read_clipboard_image()
        if not image:
            raise UserInputError("The clipboard holds no image: copy an image first.")
        return Payload(image=image, source="clipboard_image")
    raise UserInputError(f"Unknown source '{job.source}'.")


def deliver(
    io: DesktopIO,
    job: Job,
    result: ActionResult,
    notify_chars: int,
    title: str | None = None,
    history: bool = False,
) -> str:
    """The result to the job's outputs; where it went ("copied", "pasted", "" for a
    notification alone).  A failed clipboard is said, never fatal."""
    went = []
    title = title or job.action
    try:
        if "paste" in job.outputs:
            io.paste(result.text, job.chord, keep="clipboard" in job.outputs)
            went.append("pasted")
            if "clipboard" in job.outputs:
                went.append("copied")
        elif "clipboard" in job.outputs:
            io.write_clipboard(result.text)
            went.append("copied")
        if "window" in job.outputs and not went:
            went.append("shown")
    except YomitoriError as err:
        # The result is not lost: history keeps it, a trigger caller gets it.
        log.warning("%s: result not delivered: %s", job.action, err)
        io.notify(f"{title}: result not delivered", str(err), tag=job.tag)
        went = []
    where = " and ".join(went)
    if "notify" in job.outputs:
        body = result.text
        if len(body) > notify_chars:
            if "copied" in went:
                rest = "the whole result is on the clipboard"
            elif history:
                rest = "yomitori history has all of it"
            else:
                rest = "the notification shows only the start"
            body = f"{body[: max(1, notify_chars - 1)].rstrip()}…\n({rest})"
        io.notify(f"{title} — {where}" if where else title, body, tag=job.tag)
    return where


def job_from_binding(binding: Any) -> Job:
    return Job(action=binding.action, source=binding.source, outputs=tuple(binding.output),
               vars=dict(binding.vars), model=binding.model, chord=binding.hotkey)  # fmt: skip
