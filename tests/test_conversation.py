"""daemon/conversation.py (the prompt builder's engine) with a scripted fake engine:
the exact messages of every turn, GO, Japanese input, cancel, one turn at a time; the
conversation template format; ``yomitori do`` driving it (in process, and once with the
tiny real model)."""

from __future__ import annotations

import io
import json
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_model, run_cli
from fakes import FakeEngine
from xdesktop import wait_for

from daemon import cli, pipeline, runner
from daemon.actions import Payload
from daemon.conversation import GO_WORDS, Conversation, is_go, split_question
from daemon.engine import Generation
from daemon.errors import Cancelled, ConfigError, EngineError, UserInputError
from daemon.models import ModelSpec
from daemon.prompts import Template, TemplateSet, load_template, load_templates, render
from daemon.textproc import has_japanese

SHIPPED = Path(__file__).resolve().parents[1] / "prompts"

BUILDER = """
    kind = "conversation"
    max_questions = 3
    system = "Ask about the picture. $style"
    japanese = "Ask in Japanese."
    user = "Idea: $input"
    answer = "$answer (next)"
    final = "Write the prompt. $style"
    [vars.style]
    default = "prose"
    choices = { prose = "Use sentences.", tags = "Use tags." }
    [options]
    temperature = 0.5
    max_tokens = 99
"""


def ScriptedEngine(*replies: str | Generation | BaseException) -> FakeEngine:
    """The shared fake: each generate streams the next reply in pieces of four characters
    (or raises it, or returns it whole); "What else?" once they run out."""
    return FakeEngine(default_text="What else?", load_s=0.5, piece_chars=4).then(*replies)


def write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def builder(tmp_path: Path, body: str = BUILDER) -> Template:
    return load_template(write(tmp_path, "pb", body))


@pytest.fixture
def spec(tmp_path: Path) -> ModelSpec:
    return ModelSpec(name="fake", path=tmp_path / "fake.gguf")


def conversation(tmp_path: Path, spec: ModelSpec, *replies: Any, **kwargs: Any
                 ) -> tuple[Conversation, ScriptedEngine]:  # fmt: skip
    engine = ScriptedEngine(*replies)
    return Conversation(builder(tmp_path), engine, spec, **kwargs), engine


SYSTEM = {"role": "system", "content": "Ask about the picture. Use sentences."}


# --- the messages of each turn ---------------------------------------------------


def test_start_sends_system_and_opening_turn(tmp_path, spec):
    conv, engine = conversation(tmp_path, spec, "What style?\nExamples: anime / photo / oil")
    turn = conv.start("a cat on a roof")
    assert engine.calls == [
        ([SYSTEM, {"role": "user", "content": "Idea: a cat on a roof"}],
         {"temperature": 0.5, "max_tokens": 99}),
    ]  # fmt: skip
    assert not turn.is_final and turn.kind == "question" and turn.number == 1
    assert turn.text == "What style?\nExamples: anime / photo / oil"
    assert turn.question == "What style?"
    assert turn.choices == ("anime", "photo", "oil")
    assert conv.japanese is False
    assert engine.loads == [spec]


def test_each_answer_sends_the_whole_history(tmp_path, spec):
    conv, engine = conversation(tmp_path, spec, "Q1?", "Q2?", "Q3?")
    conv.start("a cat")
    second = conv.answer("night")
    third = conv.answer("watercolour")
    assert (second.number, third.number) == (2, 3)
    assert engine.calls[2][0] == [
        SYSTEM,
        {"role": "user", "content": "Idea: a cat"},
        {"role": "assistant", "content": "Q1?"},
        {"role": "user", "content": "night (next)"},
        {"role": "assistant", "content": "Q2?"},
        {"role": "user", "content": "watercolour (next)"},
    ]
    assert conv.messages[-1] == {"role": "assistant", "content": "Q3?"}
    assert len(engine.loads) == 1, "a resident model is not loaded again"


def test_go_sends_the_final_request_alone(tmp_path, spec):
    conv, engine = conversation(tmp_path, spec, "Q1?", "A cat sleeping on a roof.")
    conv.start("a cat")
    final = conv.answer("GO")
    assert engine.calls[-1][0] == [
        SYSTEM,
        {"role": "user", "content": "Idea: a cat"},
        {"role": "assistant", "content": "Q1?"},
        {"role": "user", "content": "Write the prompt. Use sentences."},
    ]
    assert final.is_final and final.text == "A cat sleeping on a roof." and final.number == 1
    assert conv.done and conv.final is final
    assert conv.transcript() == [{"question": "Q1?", "choices": [], "answer": "GO"}]


def test_the_app_asks_for_the_result_after_max_questions(tmp_path, spec):
    conv, engine = conversation(tmp_path, spec, "Q1?", "Q2?", "Q3?", "Final prompt.")
    turn = conv.start("a cat")
    for answer in ("night", "ink", "calm"):
        turn = conv.answer(answer)
    assert turn.is_final and turn.number == 3
    # The last answer and the request share one user turn: roles keep alternating.
    assert engine.calls[-1][0][-1] == {
        "role": "user",
        "content": "calm (next)\n\nWrite the prompt. Use sentences.",
    }
    roles = [m["role"] for m in engine.calls[-1][0]]
    assert roles == ["system"] + ["user", "assistant"] * 3 + ["user"]
    with pytest.raises(UserInputError, match="ended"):
        conv.answer("more")


def test_finish_skips_the_remaining_questions(tmp_path, spec):
    conv, engine = conversation(tmp_path, spec, "Q1?", "A prompt.")
    conv.start("a cat")
    assert conv.finish().is_final
    assert engine.calls[-1][0][-1]["content"] == "Write the prompt. Use sentences."
    assert conv.answers == [""]


def test_japanese_input_adds_the_language_instruction(tmp_path, spec):
    conv, engine = conversation(tmp_path, spec, "時間帯は？\n例: 朝 / 昼 / 夜", "A cat at night.")
    turn = conv.start("屋根の上の猫")
    system = engine.calls[0][0][0]
    assert system == {
        "role": "system",
        "content": "Ask about the picture. Use sentences.\n\nAsk in Japanese.",
    }
    assert conv.japanese is True
    assert turn.choices == ("朝", "昼", "夜")
    conv.answer("おまかせ")
    # The same system part every turn (the model reuses its cache), the final in English.
    assert engine.calls[1][0][0] == system
    assert engine.calls[1][0][-1]["content"] == "Write the prompt. Use sentences."


def test_kanji_alone_is_japanese_and_english_is_not(tmp_path, spec):
    conv, engine = conversation(tmp_path, spec, "Q?")
    conv.start("猫")
    assert "Japanese" in engine.calls[0][0][0]["content"]
    conv2, engine2 = conversation(tmp_path, spec, "Q?")
    conv2.start("a cat named Tama")
    assert "Japanese" not in engine2.calls[0][0][0]["content"]


def test_values_and_options_apply_to_every_turn(tmp_path, spec):
    conv, engine = conversation(tmp_path, spec, "Q1?", "cat, roof", values={"style": "tags"},
                                options={"temperature": 0.1})  # fmt: skip
    conv.start("a cat")
    conv.answer("go")
    assert engine.calls[0][0][0]["content"] == "Ask about the picture. Use tags."
    assert engine.calls[1][0][-1]["content"] == "Write the prompt. Use tags."
    assert all(options == {"temperature": 0.1, "max_tokens": 99} for _, options in engine.calls)


def test_bad_value_fails_before_any_model_work(tmp_path, spec):
    engine = ScriptedEngine()
    with pytest.raises(UserInputError, match="prose, tags"):
        Conversation(builder(tmp_path), engine, spec, values={"style": "poem"})
    assert engine.loads == [] and engine.calls == []


def test_the_final_prompt_is_cleaned(tmp_path, spec):
    raw = ('<think>plan it</think>Sure! Here is your prompt:\n\n"A black cat on a moonlit\n'
           'roof, watercolour."\n\nThis prompt sets a calm mood.')  # fmt: skip
    conv, _ = conversation(tmp_path, spec, "Q1?", raw)
    conv.start("a cat")
    assert conv.answer("GO").text == "A black cat on a moonlit roof, watercolour."


def test_streaming_shows_the_pieces_without_reasoning(tmp_path, spec):
    conv, _ = conversation(tmp_path, spec, "<think>hmm</think>What mood?")
    pieces: list[str] = []
    turn = conv.start("a cat", on_text=pieces.append)
    assert "".join(pieces) == "What mood?" and len(pieces) >= 2
    assert turn.text == "What mood?"
    assert conv.messages[-1]["content"] == "What mood?", "no reasoning in the history"


# --- GO and Japanese detection ------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    ["GO", "go", "Go", " go! ", "ＧＯ", "「GO」", "GO。", "", "   ", "おまかせ", "お任せ",
     "おまかせで", "ゴー", "ｺﾞｰ", "以上", "done"],
)  # fmt: skip
def test_go_words(answer):
    assert is_go(answer)


@pytest.mark.parametrize("answer", ["golden", "no", "猫", "going home", "おまかせしない", "夜"])
def test_answers_that_are_not_go(answer):
    assert not is_go(answer)


def test_go_words_are_folded_already():
    assert all(word == word.casefold() and word.strip() == word for word in GO_WORDS)


@pytest.mark.parametrize(
    ("text", "japanese"),
    [("猫", True), ("ねこ", True), ("ネコ", True), ("ﾈｺ", True), ("a 猫 cat", True),
     ("人々", True), ("cat", False), ("café", False), ("고양이", False), ("", False)],
)  # fmt: skip
def test_has_japanese(text, japanese):
    assert has_japanese(text) is japanese


@pytest.mark.parametrize(
    ("text", "question", "choices"),
    [
        ("What style?\nExamples: anime / oil painting / photo", "What style?",
         ("anime", "oil painting", "photo")),
        ("画風は？\n例：アニメ／油絵／写真", "画風は？", ("アニメ", "油絵", "写真")),
        ("What style? (anime / photo / ink)", "What style?", ("anime", "photo", "ink")),
        ("Which season?\n- spring\n- summer\n- autumn", "Which season?",
         ("spring", "summer", "autumn")),
        ("Which season?\nExamples:\n1. spring\n2. winter", "Which season?", ("spring", "winter")),
        ("Just a question with no examples?", "Just a question with no examples?", ()),
        ("Q?\nExamples: " + " / ".join(["x"] * 9), "Q?\nExamples: " + " / ".join(["x"] * 9), ()),
    ],
)  # fmt: skip
def test_split_question(text, question, choices):
    assert split_question(text) == (question, choices)


# --- errors, cancel, one turn at a time ----------------------------------------


def test_order_of_calls_is_checked(tmp_path, spec):
    conv, _ = conversation(tmp_path, spec, "Q1?")
    with pytest.raises(UserInputError, match="not started"):
        conv.answer("night")
    with pytest.raises(UserInputError, match="empty"):
        conv.start("  ")
    conv.start("a cat")
    with pytest.raises(UserInputError, match="started already"):
        conv.start("a dog")


def test_a_cancelled_turn_changes_nothing_and_can_be_retried(tmp_path, spec):
    conv, engine = conversation(tmp_path, spec, "Q1?", "Q2?")
    conv.start("a cat")
    before = conv.messages
    engine.block()
    failures: list[BaseException] = []

    def answer() -> None:
        try:
            conv.answer("night")
        except BaseException as err:
            failures.append(err)

    worker = threading.Thread(target=answer)
    worker.start()
    assert wait_for(lambda: engine.entered == 2, 5)  # the answer's turn, not the start's
    assert conv.running
    with pytest.raises(UserInputError, match="still running"):
        conv.answer("day")
    conv.cancel()
    worker.join(5)
    engine.release()
    assert engine.cancels == 1
    assert len(failures) == 1 and isinstance(failures[0], Cancelled)
    assert conv.messages == before and conv.answers == [] and len(conv.questions) == 1
    assert not conv.running
    assert conv.answer("night").text == "Q2?"
    assert conv.answers == ["night"]


def test_an_engine_error_keeps_the_history(tmp_path, spec):
    conv, _ = conversation(tmp_path, spec, "Q1?", EngineError("The worker crashed."), "Q2?")
    conv.start("a cat")
    with pytest.raises(EngineError):
        conv.answer("night")
    assert len(conv.messages) == 3 and conv.answers == []
    assert conv.answer("night").number == 2


def test_an_empty_reply_is_an_error(tmp_path, spec):
    conv, _ = conversation(tmp_path, spec, "<think>only thoughts</think>")
    with pytest.raises(EngineError, match="no text"):
        conv.start("a cat")
    assert not conv.started


def test_only_conversation_templates(tmp_path, spec):
    text = load_template(write(tmp_path, "tr", 'user = "$input"\n'))
    with pytest.raises(UserInputError, match="not a conversation"):
        Conversation(text, ScriptedEngine(), spec)


# --- the template format -----------------------------------------------------------


def error_of(tmp_path: Path, body: str) -> str:
    path = write(tmp_path, "pb", body)
    with pytest.raises(ConfigError) as info:
        load_template(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


def test_conversation_template_parts(tmp_path):
    template = builder(tmp_path)
    assert template.kind == "conversation"
    assert (template.answer, template.final, template.japanese) == (
        "$answer (next)", "Write the prompt. $style", "Ask in Japanese.")  # fmt: skip
    assert template.max_questions == 3
    # Rendering gives the opening turn (what `validate` checks values with).
    assert render(template, text="cat").messages[-1] == {"role": "user", "content": "Idea: cat"}


def test_defaults_of_answer_and_max_questions(tmp_path):
    template = builder(tmp_path, 'kind = "conversation"\nuser = "$input"\nfinal = "Write it."\n')
    assert template.answer == "$answer" and template.max_questions == 5
    assert template.japanese == ""


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ('kind = "conversation"\nuser = "$input"\n', ["'final'"]),
        ('kind = "conversation"\nuser = "$input"\nfinal = "  "\n', ["'final'", "line 3"]),
        ('kind = "conversation"\nuser = "hi"\nfinal = "go"\n', ["$input", "line 2"]),
        ('kind = "conversation"\nuser = "$input"\nfinal = "f"\nanswer = "ok"\n',
         ["$answer", "line 4"]),
        ('kind = "conversation"\nuser = "$input $answer"\nfinal = "f"\n',
         ["$answer", "user part", "line 2"]),
        ('kind = "conversation"\nuser = "$input"\nfinal = "f"\njapanese = "$input"\n',
         ["$input", "japanese part", "line 4"]),
        ('kind = "conversation"\nuser = "$input"\nfinal = "f $mood"\n', ["$mood", "line 3"]),
        ('kind = "conversation"\nuser = "$input"\nfinal = "f"\nmax_questions = 0\n',
         ["max_questions", "1 to 20", "line 4"]),
        ('kind = "conversation"\nuser = "$input"\nfinal = "f"\nmax_questions = 21\n',
         ["max_questions", "line 4"]),
        ('kind = "conversation"\nuser = "$input"\nfinal = "f"\nmax_questions = "five"\n',
         ["max_questions", "an integer", "line 4"]),
        ('kind = "conversation"\nuser = "$input"\nfinal = 3\n', ["'final'", "a string"]),
        ('kind = "conversation"\nuser = "$input"\nfinal = "f"\nfinish = "x"\n',
         ["unknown key 'finish'", "line 4"]),
        ('kind = "conversation"\nuser = "$input"\nfinal = "f"\n[vars]\nanswer = "x"\n',
         ["$answer", "line 5"]),
        # The conversation keys mean nothing to the other kinds.
        ('user = "$input"\nfinal = "f"\n', ["unknown key 'final'", "line 2"]),
        ('kind = "talk"\nuser = "$input"\n', ["'conversation'", "line 1"]),
    ],
)  # fmt: skip
def test_template_errors_name_file_line_and_key(tmp_path, body, needles):
    message = error_of(tmp_path, body)
    for needle in needles:
        assert needle in message, message


def test_text_templates_may_still_use_a_variable_named_answer(tmp_path):
    path = write(tmp_path, "t", 'user = "$input $answer"\n[vars]\nanswer = "yes"\n')
    assert render(load_template(path), text="q").messages[-1]["content"] == "q yes"


# --- choices shared with another template (from = "…") ------------------------------

SHARED = """
    kind = "conversation"
    user = "$input"
    final = "Write it. $style"
    [vars.style]
    from = "tr"
"""
SOURCE = """
    system = "$style"
    user = "$input"
    [vars.style]
    description = "how"
    default = "prose"
    choices = { prose = "Sentences.", tags = "Tags." }
"""


def test_from_takes_the_other_templates_choices(tmp_path):
    write(tmp_path, "tr", SOURCE)
    write(tmp_path, "pb", SHARED)
    loaded = load_templates([tmp_path])
    assert loaded.errors == {}
    style = loaded.templates["pb"].variables["style"]
    assert style == loaded.templates["tr"].variables["style"]
    assert style.shared_from is None and style.default == "prose"


def with_override(tmp_path: Path, name: str, body: str) -> TemplateSet:
    """The shipped folder holds tr and pb (which takes $style from tr); mine holds ``name``."""
    write(tmp_path / "shipped", "tr", SOURCE)
    write(tmp_path / "shipped", "pb", SHARED)
    write(tmp_path / "mine", name, body)
    return load_templates([tmp_path / "shipped", tmp_path / "mine"])


def test_from_follows_a_users_override_of_the_source(tmp_path):
    loaded = with_override(tmp_path, "tr", SOURCE.replace("Tags.", "My tags."))
    assert loaded.templates["pb"].variables["style"].choices == {"prose": "Sentences.",
                                                                   "tags": "My tags."}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        (SHARED.replace('"tr"', '"nope"'), ["'nope'", "is not a template", "line 5"]),
        (SHARED.replace("style", "tone"), ["has no variable $tone", "line 5"]),
        (SHARED + '    default = "poem"\n', ["'poem'", "prose, tags", "line 5"]),
    ],
)
def test_from_problems_name_the_file_and_line(tmp_path, body, needles):
    write(tmp_path, "tr", SOURCE)
    path = write(tmp_path, "pb", body)
    loaded = load_templates([tmp_path])
    assert "pb" not in loaded.templates and "tr" in loaded.templates
    message = loaded.errors["pb"]
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_from_with_its_own_choices_is_refused(tmp_path):
    message = error_of(tmp_path, SHARED + '    choices = { a = "A" }\n')
    assert "from" in message and "line 5" in message


def test_from_a_variable_that_is_shared_itself_is_refused(tmp_path):
    write(tmp_path, "tr", SOURCE)
    write(tmp_path, "mid", SHARED)
    write(tmp_path, "pb", SHARED.replace('"tr"', '"mid"'))
    loaded = load_templates([tmp_path])
    assert "takes $style from 'tr' itself" in loaded.errors["pb"]


def test_a_broken_from_override_keeps_the_shipped_template(tmp_path):
    loaded = with_override(tmp_path, "pb", SHARED.replace('"tr"', '"nope"'))
    assert loaded.templates["pb"].origin == tmp_path / "shipped" / "pb.toml"
    assert "'nope'" in loaded.errors["pb"]


def test_a_source_override_without_the_variable_leaves_the_shipped_one(tmp_path):
    loaded = with_override(tmp_path, "tr", 'user = "Mine: $input"\n')
    assert loaded.errors == {}
    assert loaded.templates["tr"].origin == tmp_path / "mine" / "tr.toml"
    assert loaded.templates["pb"].variables["style"].choices == {"prose": "Sentences.",
                                                                   "tags": "Tags."}  # fmt: skip


def test_an_unlinked_variable_refuses_to_render(tmp_path):
    template = load_template(write(tmp_path, "pb", SHARED))
    with pytest.raises(ConfigError, match="not loaded"):
        render(template, text="x")


# --- the shipped prompt builder ------------------------------------------------------


def test_shipped_prompt_builder():
    loaded = load_templates([SHIPPED])
    template = loaded.templates["prompt_builder"]
    assert template.kind == "conversation" and template.title == "Build a prompt"
    assert template.japanese.strip() and template.final.strip()
    assert 3 <= template.max_questions <= 8
    # The style choices are translate_en's own, not a copy.
    assert template.variables["style"] == loaded.templates["translate_en"].variables["style"]
    assert "$style" in template.final


def test_shipped_prompt_builder_messages(spec):
    template = load_templates([SHIPPED]).templates["prompt_builder"]
    engine = ScriptedEngine("時間帯は？\n例: 朝 / 夜", "cat, night, rooftop")
    conv = Conversation(template, engine, spec, values={"style": "tags"})
    assert conv.start("猫").choices == ("朝", "夜")
    conv.answer("ＧＯ")
    system = engine.calls[0][0][0]["content"]
    assert system.endswith(template.japanese.strip())
    assert "猫" in engine.calls[0][0][1]["content"]
    final = engine.calls[1][0][-1]["content"]
    assert "English" in final
    assert template.variables["style"].choices["tags"].strip() in final


# --- pipeline and `yomitori do` --------------------------------------------------------


@pytest.fixture
def with_builder(tmp_path: Path) -> TemplateSet:
    write(tmp_path, "pb", BUILDER)
    write(tmp_path, "tr", SOURCE)
    write(tmp_path, "both", 'kind = "chain"\nsteps = ["tr", "pb"]\n')
    return load_templates([tmp_path])


def test_hotkeys_and_chains_refuse_a_conversation(with_builder):
    text = Payload(text="a cat")
    assert pipeline.is_conversation("pb", with_builder)
    assert not pipeline.is_conversation("tr", with_builder)
    assert not pipeline.is_conversation("ocr", with_builder)
    with pytest.raises(UserInputError, match="yomitori do pb"):
        pipeline.check_input("pb", with_builder, text)
    with pytest.raises(UserInputError, match="conversation"):
        pipeline.check_input("both", with_builder, text, conversation=True)
    pipeline.check_input("pb", with_builder, text, conversation=True)
    with pytest.raises(UserInputError, match="text action"):
        pipeline.check_input("pb", with_builder, Payload(image=b"x"), conversation=True)


@pytest.fixture
def scripted_do(monkeypatch, with_builder, spec):
    """``yomitori do`` in process on the scripted engine, with these templates."""
    engine = ScriptedEngine()
    engines = runner.Engines

    monkeypatch.setattr(cli, "load_templates", lambda folders: with_builder)
    monkeypatch.setattr(runner, "choose_model", lambda *args: spec)
    monkeypatch.setattr(runner, "Engines",
                        lambda keep_alive_s=None: engines(factory=lambda s: engine))  # fmt: skip
    return engine


def run_do(monkeypatch, capsys, *args: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8"))))
    code = cli.main(["do", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_do_with_answers_prints_json(monkeypatch, capsys, scripted_do):
    scripted_do.script.extend(["Q1?\nExamples: a / b", "Q2?", "Q3?", "A cat at night."])
    code, out, err = run_do(monkeypatch, capsys, "pb", "--text", "猫", "--answer", "夜",
                            "--answer", "ink", "--set", "style=tags", "--json")  # fmt: skip
    assert code == 0, err
    data = json.loads(out.strip().splitlines()[-1])
    assert data["text"] == "A cat at night." and data["action"] == "pb"
    assert data["japanese"] is True and data["questions"] == 3
    assert data["turns"] == [
        {"question": "Q1?\nExamples: a / b", "choices": ["a", "b"], "answer": "夜"},
        {"question": "Q2?", "choices": [], "answer": "ink"},
        {"question": "Q3?", "choices": [], "answer": ""},
    ]
    # The answers ran out: yomitori asked for the result itself (GO), not for a fourth.
    assert scripted_do.calls[-1][0][-1]["content"] == "Write the prompt. Use tags."
    assert out.count("\n") == 1, "nothing but the JSON line on stdout"


def test_do_reads_the_idea_and_answers_from_stdin_lines(monkeypatch, capsys, scripted_do):
    scripted_do.script.extend(["Q1?", "Q2?", "A prompt."])
    code, out, _ = run_do(monkeypatch, capsys, "pb", "--stdin", stdin="a cat\nnight\nGO\nlost\n")
    assert code == 0
    assert out == "A prompt.\n"
    sent = scripted_do.calls[-1][0]
    assert sent[1]["content"] == "Idea: a cat"
    answers = [m["content"] for m in sent[3::2]]
    assert answers == ["night (next)", "Write the prompt. Use sentences."]


def test_do_with_text_takes_answers_from_stdin_until_it_ends(monkeypatch, capsys, scripted_do):
    scripted_do.script.extend(["Q1?", "A prompt."])
    code, out, _ = run_do(monkeypatch, capsys, "pb", "--text", "a cat", stdin="")
    assert code == 0 and out == "A prompt.\n"
    assert scripted_do.calls[-1][0][-1]["content"] == "Write the prompt. Use sentences."


def test_do_refuses_answers_for_other_actions(monkeypatch, capsys, scripted_do):
    code, _, err = run_do(monkeypatch, capsys, "tr", "--text", "x", "--answer", "y")
    assert code == 2 and "--answer" in err and len(err.strip().splitlines()) == 1
    assert scripted_do.calls == []


def test_do_refuses_an_image_for_a_conversation(monkeypatch, capsys, scripted_do, tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    code, _, err = run_do(monkeypatch, capsys, "pb", "--image", str(tmp_path / "a.png"))
    assert code == 2 and "text action" in err
    assert scripted_do.calls == []


def test_templates_lists_the_prompt_builder():
    listing = run_cli("templates")
    assert listing.returncode == 0
    assert any(line.split()[:3] == ["prompt_builder", "conversation", "shipped"]
               for line in listing.stdout.splitlines()), listing.stdout  # fmt: skip


@needs_model
@pytest.mark.model
def test_do_prompt_builder_with_the_tiny_model():
    done = run_cli("do", "prompt_builder", "--model", "tiny", "--text", "屋根の上の猫", "--answer",
                   "夜", "--answer", "GO", "--set", "max_tokens=24", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout.strip().splitlines()[-1])
    assert data["action"] == "prompt_builder" and data["model"] == "tiny"
    assert data["japanese"] is True and data["questions"] == 2
    assert [t["answer"] for t in data["turns"]] == ["夜", "GO"]
    assert all(t["question"].strip() for t in data["turns"])
    assert data["text"].strip() and "\n" not in data["text"]
    assert data["timings"]["completion_tokens"] >= 1
