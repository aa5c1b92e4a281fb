"""llama-cpp-python as the worker uses it: a Llama that counts tokens, times the image
pass and can be cancelled mid-prompt, and the chat-format choices around it (the
family format for a GGUF without a template, system prompts folded in where the
family has no system role, vision handlers by family).

Imported only inside the worker process (it loads llama_cpp lazily).
"""

from __future__ import annotations

import time
from typing import Any

# chat_format values (models.toml) that pick a family's own vision handler.
VISION_HANDLERS = {
    "qwen2.5-vl": "Qwen25VLChatHandler",
    "llava-1-5": "Llava15ChatHandler",
    "llava-1-6": "Llava16ChatHandler",
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",
    "moondream2": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
}


# GGUFs without a chat template (llama-cpp-python would fall back to Llama 2's format):
# the format of the family, by general.architecture prefix.
FAMILY_FORMATS = (("gemma", "gemma"), ("qwen", "chatml"))
# Formats that have no system role: the system prompt goes first in the first user turn,
# as these families' own templates do (llama-cpp-python's "gemma" drops it).
NO_SYSTEM_ROLE = frozenset({"gemma"})


class RequestCancelled(Exception):
    """Raised inside llama-cpp-python's generate loop to stop it."""


class ModelProblem(Exception):
    """Something about the model's files the user can fix: its text is shown as it is."""


def fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The system messages prepended to the first user message (text content)."""
    system = "\n\n".join(str(m["content"]) for m in messages if m.get("role") == "system")
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    if not system:
        return rest
    for message in rest:
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            message["content"] = f"{system}\n\n{message['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def check_vision_template(handler: Any, llm: Any, spec: dict[str, Any]) -> None:
    """The generic handler renders prompts with the GGUF's chat template: say so at load
    when there is none, not on the first image."""
    get_template = getattr(handler, "_get_chat_template", None)
    if get_template is None:
        return
    try:
        get_template(llm)
    except ValueError:
        raise ModelProblem(
            f"The model file {spec['path']} has no chat template, which image actions need: "
            "use a GGUF of this model that includes one, or set chat_format in models.toml "
            f"to the model's family ({', '.join(VISION_HANDLERS)})."
        ) from None


def make_llama(**kwargs: Any) -> Any:
    """A Llama that counts prompt/reused/generated tokens and can be cancelled.

    ``eval`` is the one method llama-cpp-python calls for the prompt (first
    call inside ``generate``) and for every generated token after it, so
    hooking it gives exact counts and a per-token cancellation point.  While
    the prompt is evaluated, llama.cpp's abort callback is armed too, so a long
    prompt is cancelled mid-batch; it is disarmed for the token loop, where a
    Python check per token costs nothing.

    A vision chat handler evaluates the prompt itself before ``generate``: it
    clears the cache, evaluates each text piece through ``eval`` and has mtmd
    encode each image and decode its embeddings between them.  ``generate``
    then finds the whole prompt cached.  Those ``eval`` calls are prompt
    evaluation, and the rest of the time before ``generate`` is the images'.
    """
    import llama_cpp

    class CountingLlama(llama_cpp.Llama):
        def begin_request(self, is_cancelled: Any) -> None:
            self._is_cancelled = is_cancelled
            self._counts = {"prompt_tokens": 0, "reused_tokens": 0, "completion_tokens": 0}
            self._generating = False
            self._prefilled = False  # a chat handler evaluated (part of) the prompt
            self._text_end: int | None = None  # where the handler's last text piece ended
            self._image_at: int | None = None  # the first position an image filled
            self._prompt_done = False
            self._prompt_eval_s = 0.0
            self._pre_eval_s = 0.0
            self._started = time.perf_counter()
            self._abort = llama_cpp.ggml_abort_callback(lambda _data: bool(is_cancelled()))

        def end_request(self) -> dict[str, Any]:
            counts = dict(self._counts)
            if self._prompt_done:
                counts["completion_tokens"] += 1  # the last token is sampled, never evaluated
            counts["prompt_eval_s"] = round(self._prompt_eval_s, 4)
            # With a vision handler: the time before generate() not spent evaluating
            # text, i.e. reading, encoding and decoding the images.
            counts["pre_eval_s"] = round(self._pre_eval_s, 4)
            self._is_cancelled = lambda: False
            if self._image_at is not None:
                # input_ids holds no tokens for image positions (mtmd wrote only the
                # cache), so only the text before the first image may be matched by
                # the next prompt: the system prompt is still reused.
                self.n_tokens = min(self.n_tokens, self._image_at)
            return counts

        def generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Any:
            self._generating = True
            self._note_image()
            return super().generate(tokens, *args, **kwargs)

        def _note_image(self) -> None:
            """Before each text piece of a handler's prompt (and before generate): did an
            image fill positions since the last piece?  The handler starts from 0."""
            if not self._prefilled:
                return
            end = self._text_end or 0
            if self.n_tokens != end and self._image_at is None:
                self._image_at = end

        def eval(self, tokens: Any) -> None:
            if self._is_cancelled():
                raise RequestCancelled
            if self._prompt_done:
                self._counts["completion_tokens"] += 1
                super().eval(tokens)
                return
            started = time.perf_counter()
            if not self._generating:
                # A chat handler's text piece, between or around the images.
                self._prefilled = True
                self._note_image()  # an image first, before any text: from position 0
                self._eval_prompt(tokens)
                self._text_end = self.n_tokens
                self._prompt_eval_s += time.perf_counter() - started
                return
            # The handler started from an empty cache: nothing of the prompt was reused.
            reused = 0 if self._prefilled else self.n_tokens
            self._pre_eval_s = started - self._started - self._prompt_eval_s
            self._eval_prompt(tokens)
            self._prompt_eval_s += time.perf_counter() - started
            self._prompt_done = True
            self._counts["reused_tokens"] = reused
            # Every position, image embeddings included.
            self._counts["prompt_tokens"] = self.n_tokens

        def _eval_prompt(self, tokens: Any) -> None:
            llama_cpp.llama_set_abort_callback(self._ctx.ctx, self._abort, None)
            try:
                super().eval(tokens)
            finally:
                llama_cpp.llama_set_abort_callback(self._ctx.ctx, _NO_ABORT, None)

    _NO_ABORT = llama_cpp.ggml_abort_callback(0)
    llm = CountingLlama(**kwargs)
    llm.begin_request(lambda: False)
    return llm
