"""Error types that carry a message a user can act on.

Stages raise these; the loop at the top (the CLI, later the daemon's action
runner) catches them once and shows ``str(err)`` — never a traceback.
"""

from __future__ import annotations


class YomitoriError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing sentence."""

    exit_code = 1


class UserInputError(YomitoriError):
    """The user asked for something that cannot work as given (CLI exit 2)."""

    exit_code = 2


class ConfigError(UserInputError):
    """A config or template file is malformed; the message names file and line."""


class ModelError(UserInputError):
    """A model is missing, misnamed or not a GGUF file."""


class NoModelConfigured(ModelError):
    """Nothing names a model: no models.toml entry, --model or YOMITORI_MODEL."""


class EngineError(YomitoriError):
    """The model worker failed while loading or generating."""


class WorkerCrashed(EngineError):
    """The worker process died; the next request starts a fresh one."""


class Cancelled(YomitoriError):
    """The running generation was cancelled by the user."""

    exit_code = 130
