"""daemon/models.py: models.toml, choosing a model, checking GGUF files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from daemon import models
from daemon.errors import ConfigError, ModelError
from daemon.models import (
    TINY,
    ModelsConfig,
    ModelSpec,
    check_gguf,
    check_spec,
    load_models,
    resolve_model,
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("YOMITORI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("YOMITORI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("YOMITORI_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)


def write_models(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "models.toml"
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def models_error(folder: Path, body: str) -> str:
    path = write_models(folder, body)
    with pytest.raises(ConfigError) as info:
        load_models(folder)
    assert str(path) in str(info.value)
    return str(info.value)


def gguf(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 32)
    return path


# --- models.toml -----------------------------------------------------------


def test_no_models_file_gives_empty_config(tmp_path):
    config = load_models(tmp_path / "config")
    assert config.models == {}
    assert config.default is None
    assert config.path == tmp_path / "config" / "models.toml"


def test_load_models_defaults_to_config_dir(tmp_path):
    write_models(tmp_path / "config", '[models.m]\npath = "m.gguf"\n')
    config = load_models()
    assert set(config.models) == {"m"}
    assert config.path == tmp_path / "config" / "models.toml"


def test_parse_full_model_entry(tmp_path):
    folder = tmp_path / "config"
    path = write_models(
        folder,
        """
        default = "vl"

        [models.vl]
        path = "weights/vl.gguf"
        mmproj = "/abs/mmproj.gguf"
        n_ctx = 8192
        n_gpu_layers = -1
        flash_attn = true
        threads = 6
        chat_format = "chatml"
        """,
    )
    config = load_models(folder)
    assert config.default == "vl"
    spec = config.models["vl"]
    assert spec == ModelSpec(
        name="vl",
        path=folder / "weights" / "vl.gguf",
        mmproj=Path("/abs/mmproj.gguf"),
        n_ctx=8192,
        n_gpu_layers=-1,
        flash_attn=True,
        threads=6,
        chat_format="chatml",
        source=str(path),
    )
    assert spec.vision


def test_relative_paths_resolve_against_the_file_folder(tmp_path):
    folder = tmp_path / "config"
    write_models(folder, '[models.m]\npath = "sub/m.gguf"\nmmproj = "p.gguf"\n')
    spec = load_models(folder).models["m"]
    assert spec.path == folder / "sub" / "m.gguf"
    assert spec.mmproj == folder / "p.gguf"
    assert spec.path.is_absolute()


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "config"
    write_models(folder, '[models.m]\npath = "~/models/m.gguf"\n')
    spec = load_models(folder).models["m"]
    assert spec.path == tmp_path / "home" / "models" / "m.gguf"


def test_defaults_of_a_minimal_entry(tmp_path):
    folder = tmp_path / "config"
    write_models(folder, '[models.m]\npath = "m.gguf"\n')
    spec = load_models(folder).models["m"]
    assert spec.mmproj is None
    assert not spec.vision
    assert spec.n_ctx == 4096
    assert spec.n_gpu_layers is None
    assert spec.flash_attn is None


def test_unknown_model_key_named(tmp_path):
    message = models_error(
        tmp_path / "config",
        """
        [models.m]
        path = "m.gguf"
        ctx = 4096
        """,
    )
    assert "'ctx'" in message
    assert "[models.m]" in message
    assert "line 3" in message


def test_unknown_top_level_key_named(tmp_path):
    message = models_error(tmp_path / "config", 'defualt = "m"\n')
    assert "'defualt'" in message
    assert "line 1" in message


def test_missing_path_named(tmp_path):
    message = models_error(tmp_path / "config", "[models.nopath]\nn_ctx = 2048\n")
    assert "'nopath'" in message
    assert "path" in message
    assert "line 1" in message


@pytest.mark.parametrize(
    ("line", "key", "kind"),
    [
        ("path = 3", "path", "a string"),
        ('n_ctx = "big"', "n_ctx", "an integer"),
        ("n_ctx = 4096.0", "n_ctx", "an integer"),
        ("n_gpu_layers = true", "n_gpu_layers", "an integer"),
        ('flash_attn = "yes"', "flash_attn", "true or false"),
        ("threads = 1.5", "threads", "an integer"),
        ("chat_format = 1", "chat_format", "a string"),
    ],
)
def test_wrong_types_named(tmp_path, line, key, kind):
    body = f"[models.m]\n{line}\n"
    if key != "path":
        body += 'path = "m.gguf"\n'
    message = models_error(tmp_path / "config", body)
    assert f"'{key}'" in message
    assert kind in message
    assert "line 2" in message


def test_model_that_is_not_a_table_named(tmp_path):
    message = models_error(tmp_path / "config", '[models]\nm = "m.gguf"\n')
    assert "'m'" in message
    assert "a table" in message


def test_default_not_defined(tmp_path):
    message = models_error(
        tmp_path / "config",
        """
        default = "missing"
        [models.a]
        path = "a.gguf"
        """,
    )
    assert "'missing'" in message
    assert "(defined: a)" in message
    assert "line 1" in message


def test_default_may_be_tiny(tmp_path):
    write_models(tmp_path / "config", 'default = "tiny"\n')
    assert load_models(tmp_path / "config").default == TINY


def test_malformed_models_toml_names_line(tmp_path):
    message = models_error(tmp_path / "config", '[models.m]\npath = "m.gguf\n')
    assert "line 2" in message


# --- resolve_model ---------------------------------------------------------


def two_models(tmp_path: Path, default: str | None = None) -> ModelsConfig:
    a = ModelSpec(name="a", path=tmp_path / "a.gguf", source="x")
    b = ModelSpec(name="b", path=tmp_path / "b.gguf", source="x")
    return ModelsConfig(
        models={"a": a, "b": b}, default=default, path=tmp_path / "config" / "models.toml"
    )


def test_model_argument_wins_over_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("YOMITORI_MODEL", "b")
    config = two_models(tmp_path, default="b")
    assert resolve_model("a", config).name == "a"


def test_env_wins_over_default(tmp_path, monkeypatch):
    monkeypatch.setenv("YOMITORI_MODEL", "b")
    assert resolve_model(None, two_models(tmp_path, default="a")).name == "b"


def test_env_path(tmp_path, monkeypatch):
    monkeypatch.setenv("YOMITORI_MODEL", str(tmp_path / "env.gguf"))
    spec = resolve_model(None, two_models(tmp_path, default="a"))
    assert spec.path == tmp_path / "env.gguf"
    assert spec.name == "env"
    assert spec.source == "YOMITORI_MODEL"


def test_empty_env_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("YOMITORI_MODEL", "")
    assert resolve_model(None, two_models(tmp_path, default="a")).name == "a"


def test_default_used_without_argument_or_env(tmp_path):
    assert resolve_model(None, two_models(tmp_path, default="b")).name == "b"


def test_only_model_used_without_default(tmp_path):
    only = ModelSpec(name="solo", path=tmp_path / "solo.gguf")
    config = ModelsConfig(models={"solo": only})
    assert resolve_model(None, config) is only


def test_two_models_without_default_is_an_error(tmp_path):
    with pytest.raises(ModelError) as info:
        resolve_model(None, two_models(tmp_path))
    message = str(info.value)
    assert "No model configured" in message
    assert str(tmp_path / "config" / "models.toml") in message
    assert "--model" in message
    assert "YOMITORI_MODEL" in message


@pytest.mark.parametrize("has_tiny", [True, False])
def test_no_model_hint_mentions_tiny_when_available(tmp_path, monkeypatch, has_tiny):
    monkeypatch.setattr(models, "tiny_available", lambda: has_tiny)
    with pytest.raises(ModelError) as info:
        resolve_model(None, ModelsConfig(path=tmp_path / "models.toml"))
    assert ("--model tiny" in str(info.value)) is has_tiny


@pytest.mark.parametrize(
    "choice", ["some/dir/model.gguf", "model.GGUF", "~/m.gguf", "C:\\models\\m.bin"]
)
def test_path_argument_gives_spec(tmp_path, choice):
    spec = resolve_model(choice, ModelsConfig())
    assert spec.path == Path(choice).expanduser()
    assert spec.source == "--model"
    assert spec.name == Path(choice).expanduser().stem
    assert not spec.vision


def test_existing_file_without_gguf_suffix_is_a_path(tmp_path):
    (tmp_path / "weights").write_bytes(b"GGUF")
    spec = resolve_model("weights", ModelsConfig())
    assert spec.path == Path("weights")


def test_configured_name_wins_over_a_path_like_name(tmp_path):
    spec = ModelSpec(name="m.gguf", path=tmp_path / "elsewhere.gguf")
    config = ModelsConfig(models={"m.gguf": spec})
    assert resolve_model("m.gguf", config) is spec


def test_unknown_name_lists_configured(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "tiny_available", lambda: False)
    with pytest.raises(ModelError) as info:
        resolve_model("gpt", two_models(tmp_path))
    message = str(info.value)
    assert "'gpt'" in message
    assert "a, b" in message
    assert ".gguf" in message


def test_unknown_name_with_nothing_configured(monkeypatch):
    monkeypatch.setattr(models, "tiny_available", lambda: False)
    with pytest.raises(ModelError, match="configured: none"):
        resolve_model("gpt", ModelsConfig())


def test_tiny_without_package_is_a_model_error(monkeypatch):
    monkeypatch.setattr(models, "tiny_available", lambda: False)
    with pytest.raises(ModelError, match=r"yomitori\[tiny\]"):
        resolve_model(TINY, ModelsConfig())


# --- ModelSpec -------------------------------------------------------------


def test_load_key_ignores_name_and_source(tmp_path):
    one = ModelSpec(name="one", path=tmp_path / "m.gguf", source="models.toml")
    two = ModelSpec(name="two", path=tmp_path / "m.gguf", source="--model")
    assert one != two
    assert one.load_key() == two.load_key()
    hash(one.load_key())


@pytest.mark.parametrize(
    "change",
    [
        {"n_ctx": 8192},
        {"mmproj": Path("/p.gguf")},
        {"n_gpu_layers": 0},
        {"flash_attn": False},
        {"threads": 2},
        {"chat_format": "chatml"},
        {"path": Path("/other.gguf")},
    ],
)
def test_load_key_differs_on_load_settings(tmp_path, change):
    base = ModelSpec(name="m", path=tmp_path / "m.gguf")
    other = ModelSpec(**{"name": "m", "path": tmp_path / "m.gguf", **change})
    assert base.load_key() != other.load_key()


def test_wire_is_plain_data(tmp_path):
    spec = ModelSpec(name="m", path=tmp_path / "m.gguf", mmproj=tmp_path / "p.gguf")
    wire = spec.wire()
    assert wire["path"] == str(tmp_path / "m.gguf")
    assert wire["mmproj"] == str(tmp_path / "p.gguf")
    assert ModelSpec(name="m", path=tmp_path / "m.gguf").wire()["mmproj"] is None
    plain = (str, int, bool, type(None))
    assert all(isinstance(v, plain) for k, v in wire.items() if k != "settings")
    assert wire["settings"] == {} and wire["backend"] == "llama-cpp"


# --- check_gguf / check_spec -----------------------------------------------


def test_check_gguf_missing(tmp_path):
    with pytest.raises(ModelError) as info:
        check_gguf(tmp_path / "nope.gguf")
    assert "not found" in str(info.value)
    assert str(tmp_path / "nope.gguf") in str(info.value)


def test_check_gguf_directory(tmp_path):
    with pytest.raises(ModelError, match="folder"):
        check_gguf(tmp_path)


@pytest.mark.parametrize("content", [b"", b"GGU", b"PK\x03\x04safetensors", b"gguf....."])
def test_check_gguf_not_gguf(tmp_path, content):
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(ModelError) as info:
        check_gguf(path)
    assert "not a GGUF" in str(info.value)
    assert str(path) in str(info.value)


def test_check_gguf_accepts_magic(tmp_path):
    check_gguf(gguf(tmp_path / "m.gguf"))


def test_check_spec_checks_mmproj(tmp_path):
    model = gguf(tmp_path / "m.gguf")
    check_spec(ModelSpec(name="m", path=model))
    with pytest.raises(ModelError) as info:
        check_spec(ModelSpec(name="m", path=model, mmproj=tmp_path / "missing-mmproj.gguf"))
    assert "mmproj" in str(info.value)
    assert "missing-mmproj.gguf" in str(info.value)
    bad = tmp_path / "bad-mmproj.gguf"
    bad.write_bytes(b"nope")
    with pytest.raises(ModelError, match="not a GGUF"):
        check_spec(ModelSpec(name="m", path=model, mmproj=bad))
    check_spec(ModelSpec(name="m", path=model, mmproj=gguf(tmp_path / "p.gguf")))


def test_check_spec_checks_model_first(tmp_path):
    with pytest.raises(ModelError, match="Model file not found"):
        check_spec(ModelSpec(name="m", path=tmp_path / "m.gguf", mmproj=tmp_path / "p.gguf"))


def test_error_in_second_model_points_at_its_own_line(tmp_path):
    # Regression: the line was that of the first "n_ctx =" in the file.
    message = models_error(
        tmp_path / "config",
        """
        [models.one]
        path = "a.gguf"
        n_ctx = 2048

        [models.two]
        path = "b.gguf"
        n_ctx = "big"
        """,
    )
    assert "'n_ctx'" in message
    assert "line 7" in message


def test_missing_path_of_second_model_points_at_its_header(tmp_path):
    message = models_error(
        tmp_path / "config",
        """
        [models.one]
        path = "a.gguf"
        [models.two]
        n_ctx = 1024
        """,
    )
    assert "'two'" in message
    assert "line 3" in message


def test_quoted_model_name_with_dots(tmp_path):
    folder = tmp_path / "config"
    write_models(
        folder,
        """
        [models.a]
        threads = 2
        path = "a.gguf"
        [models."qwen2.5"]
        path = "q.gguf"
        threads = "many"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_models(folder)
    assert "line 6" in str(info.value)


# --- one resolution rule ---------------------------------------------------


def test_chosen_name_is_one_rule(tmp_path, monkeypatch):
    from daemon.models import chosen_name

    one = ModelsConfig(models={"a": ModelSpec(name="a", path=tmp_path / "a.gguf")})
    two = ModelsConfig(models={"a": ModelSpec(name="a", path=tmp_path / "a.gguf"),
                               "b": ModelSpec(name="b", path=tmp_path / "b.gguf")},
                       default="b")  # fmt: skip
    assert chosen_name(None, ModelsConfig()) == (None, "")  # tiny is never implied
    assert chosen_name(None, one) == ("a", "the only model")
    assert chosen_name(None, two) == ("b", "default")
    assert chosen_name("a", two) == ("a", "--model")
    monkeypatch.setenv("YOMITORI_MODEL", "tiny")
    assert chosen_name(None, two) == ("tiny", "YOMITORI_MODEL")
    assert chosen_name("a", two) == ("a", "--model")
