"""daemon/chords.py: pynput hotkey syntax parsed and formatted without pynput."""

from __future__ import annotations

import pytest

from daemon.chords import (
    MODIFIERS,
    NAMED_KEYS,
    ChordError,
    format_chord,
    modifiers_of,
    parse_chord,
)


def canonical(text: str) -> str:
    return format_chord(parse_chord(text))


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("<ctrl>+<alt>+t", {"ctrl", "alt", "t"}),
        ("<ctrl>+<alt>+<esc>", {"ctrl", "alt", "esc"}),
        ("<shift>+<cmd>+<72>", {"shift", "cmd", "vk72"}),
        ("<alt_gr>+q", {"alt_gr", "q"}),
        ("<ctrl>+<shift>+<page_down>", {"ctrl", "shift", "page_down"}),
        ("<ctrl>+1", {"ctrl", "1"}),
        ("<ctrl>+/", {"ctrl", "/"}),
        ("<f9>", {"f9"}),
    ],
)
def test_parse_gives_canonical_key_names(text, keys):
    chord = parse_chord(text)
    assert isinstance(chord, frozenset)
    assert chord == frozenset(keys)


@pytest.mark.parametrize(
    ("text", "formatted"),
    [
        ("<ctrl>+<alt>+t", "<ctrl>+<alt>+t"),
        ("<alt>+<ctrl>+t", "<ctrl>+<alt>+t"),
        ("t+<alt>+<ctrl>", "<ctrl>+<alt>+t"),
        ("<CTRL>+<Alt>+T", "<ctrl>+<alt>+t"),
        (" <ctrl> + <alt> + t ", "<ctrl>+<alt>+t"),
        ("<cmd>+<shift>+<alt_gr>+<alt>+<ctrl>+x", "<ctrl>+<alt>+<alt_gr>+<shift>+<cmd>+x"),
        ("<shift>+<ctrl>+<F12>", "<ctrl>+<shift>+<f12>"),
        ("<esc>+<alt>+<ctrl>", "<ctrl>+<alt>+<esc>"),
        ("<shift>+<cmd>+<72>", "<shift>+<cmd>+<72>"),
        ("<cmd>+<shift>+<072>", "<shift>+<cmd>+<72>"),
        ("<ctrl>+<space>", "<ctrl>+<space>"),
        ("<f9>", "<f9>"),
    ],
)
def test_format_is_stable_and_canonical(text, formatted):
    assert canonical(text) == formatted
    # Formatting is a fixed point: the canonical text parses to the same chord.
    assert parse_chord(formatted) == parse_chord(text)
    assert canonical(formatted) == formatted


@pytest.mark.parametrize(
    ("left", "right", "both"),
    [
        ("ctrl_l", "ctrl_r", "ctrl"),
        ("alt_l", "alt_r", "alt"),
        ("shift_l", "shift_r", "shift"),
        ("cmd_l", "cmd_r", "cmd"),
    ],
)
def test_left_and_right_modifiers_fold(left, right, both):
    # <f9> can stand alone, so even a lone shift makes a valid chord with it.
    expected = parse_chord(f"<{both}>+<f9>")
    assert parse_chord(f"<{left}>+<f9>") == expected
    assert parse_chord(f"<{right}>+<f9>") == expected
    assert canonical(f"<{left}>+<f9>") == f"<{both}>+<f9>"
    assert canonical(f"<{right}>+<f9>") == f"<{both}>+<f9>"


def test_shift_alone_does_not_make_a_letter_safe():
    with pytest.raises(ChordError, match="no modifier"):
        parse_chord("<shift>+k")


def test_alt_gr_stays_apart_from_alt():
    assert parse_chord("<alt_gr>+q") != parse_chord("<alt>+q")
    assert canonical("<alt_gr>+<alt>+q") == "<alt>+<alt_gr>+q"


def test_modifier_table_folds_to_five_modifiers():
    assert set(MODIFIERS.values()) == {"ctrl", "alt", "alt_gr", "shift", "cmd"}
    assert not set(MODIFIERS) & NAMED_KEYS


@pytest.mark.parametrize(
    ("text", "code"), [("<72>", 72), ("<0>", 0), ("<065>", 65), ("<255>", 255)]
)
def test_vk_codes(text, code):
    chord = parse_chord(f"<ctrl>+{text}")
    assert chord == frozenset({"ctrl", f"vk{code}"})
    assert canonical(f"<ctrl>+{text}") == f"<ctrl>+<{code}>"


def test_vk_code_differs_from_the_digit_key():
    assert parse_chord("<ctrl>+<7>") != parse_chord("<ctrl>+7")


@pytest.mark.parametrize(
    "text", [*(f"<f{n}>" for n in range(1, 25)), "<pause>", "<print_screen>", "<scroll_lock>"]
)
def test_function_and_spare_keys_allowed_alone(text):
    assert canonical(text) == text
    assert modifiers_of(parse_chord(text)) == frozenset()


@pytest.mark.parametrize(
    "text", ["t", "T", "1", "<space>", "<esc>", "<enter>", "<tab>", "<backspace>", "<72>", "<up>"]
)
def test_typing_keys_alone_refused(text):
    with pytest.raises(ChordError, match="no modifier"):
        parse_chord(text)


@pytest.mark.parametrize(
    "text", ["<ctrl>", "<ctrl>+<alt>", "<ctrl_l>+<shift_r>", "<cmd>+<alt_gr>", "<shift>"]
)
def test_only_modifiers_refused(text):
    with pytest.raises(ChordError, match="only modifiers"):
        parse_chord(text)


@pytest.mark.parametrize(
    "text", ["<ctrl>+a+b", "<ctrl>+<alt>+t+<f1>", "<f1>+<f2>", "<ctrl>+<esc>+<72>", "a+b"]
)
def test_two_non_modifier_keys_refused(text):
    with pytest.raises(ChordError, match="more than one non-modifier key"):
        parse_chord(text)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("<ctrl>+<bogus>", "<bogus>"),
        ("<ctrl>+<control>", "<control>"),
        ("<ctrl>+<f25>", "<f25>"),
        ("<ctrl>+<escape>", "<escape>"),
        ("<ctrl>+<>", "<>"),
        ("<ctrl>+<-1>", "<-1>"),
        ("<win>+t", "<win>"),
    ],
)
def test_unknown_names_refused(text, name):
    with pytest.raises(ChordError, match="unknown key") as info:
        parse_chord(text)
    assert name in str(info.value)


@pytest.mark.parametrize("text", ["<ctrl>+tt", "<ctrl>+ctrl", "<ctrl>+<alt", "<ctrl>+f9>"])
def test_bare_words_refused(text):
    with pytest.raises(ChordError, match="is not a key"):
        parse_chord(text)


@pytest.mark.parametrize("text", ["<ctrl>++t", "+t", "<ctrl>+", "<ctrl>+ +t", "+"])
def test_empty_parts_refused(text):
    with pytest.raises(ChordError, match="empty key"):
        parse_chord(text)


@pytest.mark.parametrize("text", ["", "   ", None, 5])
def test_empty_or_non_text_refused(text):
    with pytest.raises(ChordError, match="cannot be empty"):
        parse_chord(text)


@pytest.mark.parametrize(
    "text",
    [
        "<ctrl>+<ctrl>+t",
        "<ctrl_l>+<ctrl_r>+t",
        "<ctrl>+<ctrl_l>+t",
        "<ctrl>+t+T",
        "<ctrl>+<72>+<072>",
        "<f9>+<F9>",
    ],
)
def test_duplicates_refused(text):
    with pytest.raises(ChordError, match="twice"):
        parse_chord(text)


def test_errors_are_value_errors_quoting_the_text():
    with pytest.raises(ValueError, match=r"'<ctrl>\+<alt>'"):
        parse_chord("<ctrl>+<alt>")


def test_modifiers_of():
    assert modifiers_of(parse_chord("<ctrl_r>+<shift>+<f5>")) == frozenset({"ctrl", "shift"})
    assert modifiers_of(parse_chord("<alt_gr>+<cmd>+<72>")) == frozenset({"alt_gr", "cmd"})
    assert modifiers_of(parse_chord("<f5>")) == frozenset()
    assert isinstance(modifiers_of(parse_chord("<ctrl>+t")), frozenset)
