"""Every engine, and every fake standing in for one, has the whole Engine protocol with
the protocol's signatures: checked member by member at run time (no type checker runs
in the suite, so an identity function proved nothing)."""

from __future__ import annotations

import inspect

import pytest

from daemon.engine import Engine

MEMBERS = ("spec", "loaded", "load", "generate", "cancel", "unload", "stats")


def engine_classes() -> list[type]:
    from fakes import FakeEngine

    from daemon.engine.client import WorkerEngine
    from daemon.engine.ollama import OllamaEngine
    from daemon.engine.openai import OpenAIEngine
    from daemon.engine.server import ManagedServerEngine

    # The tests' one fake engine (tests/fakes.py) is checked like the real ones.
    return [WorkerEngine, OpenAIEngine, OllamaEngine, ManagedServerEngine, FakeEngine]


def parameters(function: object) -> list[str]:
    return [p.name for p in inspect.signature(function).parameters.values()]


def test_the_protocol_lists_what_the_runner_uses():
    declared = {n for n in vars(Engine) if not n.startswith("_")}
    assert declared == set(MEMBERS)


@pytest.mark.parametrize("cls", engine_classes(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_engine_has_every_member_with_the_protocols_signature(cls):
    for name in MEMBERS:
        wanted = vars(Engine)[name]
        got = inspect.getattr_static(cls, name, None)
        assert got is not None, f"{cls.__name__} lacks {name}"
        if isinstance(wanted, property):
            assert isinstance(got, property), f"{cls.__name__}.{name} must be a property"
            continue
        assert callable(got), f"{cls.__name__}.{name} must be a method"
        assert parameters(got) == parameters(wanted), (cls.__name__, name, parameters(got))


def test_the_check_catches_a_missing_member():
    class Broken:
        def load(self, spec):  # wrong: no generate, loaded not a property…
            return 0.0

    with pytest.raises(AssertionError):
        test_engine_has_every_member_with_the_protocols_signature(Broken)
