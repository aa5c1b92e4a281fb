"""The reference for the in-process worker: raw llama-cpp-python in this process, loaded
the way the worker loaded it (which is why this module may import llama_cpp).  With a GPU
build both hold a copy of the model while the bench runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from daemon.engine.llama import NO_SYSTEM_ROLE, fold_system
from daemon.models import ModelSpec


class RawLlama:
    def __init__(self, spec: ModelSpec, info: dict[str, Any]) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(spec.path),
            n_ctx=info.get("n_ctx", spec.n_ctx),
            n_gpu_layers=info.get("n_gpu_layers", 0),
            flash_attn=bool(info.get("flash_attn")),
            n_threads=info.get("threads"),
            n_threads_batch=info.get("threads"),
            chat_format=spec.chat_format,
            verbose=False,
        )
        # The format the worker settled on (a GGUF without a template gets its family's).
        chosen = info.get("chat_format")
        if chosen and chosen != "mtmd" and not spec.chat_format:
            self.llm.chat_format = chosen

    def stream(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> Iterator[str]:
        if self.llm.chat_format in NO_SYSTEM_ROLE:
            messages = fold_system(messages)
        for chunk in self.llm.create_chat_completion(messages, stream=True, **options):
            piece = chunk["choices"][0].get("delta", {}).get("content")
            if piece:
                yield piece

    def close(self) -> None:
        self.llm.close()
