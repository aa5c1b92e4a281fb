"""daemon/textproc.py: strip_think and its streaming twin ThinkFilter; clean_prompt."""

from __future__ import annotations

import itertools

import pytest

from daemon.textproc import CLOSE, OPEN, ThinkFilter, _partial_suffix, clean_prompt, strip_think


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain answer", "plain answer"),
        ("  padded answer \n\n", "padded answer"),
        ("<think>hmm</think>answer", "answer"),
        ("<think>\nline one\nline two\n</think>\n\nanswer\n", "answer"),
        ("a<think>x</think>b<think>y</think>c", "abc"),
        ("<think>one</think>first <think>two</think>second", "first second"),
        ("answer<think>never closed", "answer"),
        ("answer\n<think>never\nclosed\n", "answer"),
        ("<think>only thinking", ""),
        ("<think>only thinking</think>", ""),
        ("reasoning shown already</think>answer", "answer"),
        ("multi\nline reasoning\n</think>\n answer ", "answer"),
        ("why</think>ans<think>more</think>wer", "answer"),
        ("", ""),
        ("a < b and c > d", "a < b and c > d"),
        ("<thinking>is not a tag</thinking>", "<thinking>is not a tag</thinking>"),
    ],
)
def test_strip_think(raw, clean):
    assert strip_think(raw) == clean


def test_strip_think_keeps_inner_whitespace():
    assert strip_think("one\n<think>x</think>\ntwo") == "one\n\ntwo"


def run_filter(chunks):
    """Feed ``chunks`` one by one; return the visible text and the filter."""
    think = ThinkFilter()
    out = [think.feed(chunk) for chunk in chunks]
    out.append(think.flush())
    return "".join(out), think


# Texts whose tags come in open/close pairs (or an unclosed block at the end):
# the streamed output must equal strip_think's answer, up to trailing space.
PAIRED = [
    "plain answer",
    "<think>hmm</think>answer",
    "<think>\nlet me see\n</think>\n\nThe answer.\n",
    "a<think>x</think>b<think>y</think>c",
    "start <think>mid</think> end",
    "answer<think>never closed",
    "<think>only thinking</think>",
    "<think>only thinking",
    "x<<think>y</think>>z",
    "a </thin b <thin c",
    "<think><think></think>after",
    "tag at end <think>",
    "ends with a partial <thi",
    "ends with a partial close </thi",
    "<think>a</thi</think>b",
    "  <think> </think>  spaced  ",
]


def three_way_splits(text):
    """Every way to cut ``text`` into three chunks (empty chunks included)."""
    cuts = itertools.combinations_with_replacement(range(len(text) + 1), 2)
    return [[text[:a], text[a:b], text[b:]] for a, b in cuts]


@pytest.mark.parametrize("text", PAIRED)
def test_filter_matches_strip_think_at_every_single_split(text):
    expected = strip_think(text)
    for cut in range(len(text) + 1):
        got, think = run_filter([text[:cut], text[cut:]])
        assert got.rstrip() == expected, (text, cut)
        assert got == got.lstrip()
        assert not think.shown_reasoning


@pytest.mark.parametrize("text", PAIRED)
def test_filter_matches_strip_think_char_by_char(text):
    got, _ = run_filter(list(text))
    assert got.rstrip() == strip_think(text)


@pytest.mark.parametrize(
    "text",
    ["<think>hmm</think>answer", "a<think>x</think>b", "x</thi<think>y</think>z", " <<think>>"],
)
def test_filter_matches_strip_think_at_every_three_way_split(text):
    expected = strip_think(text)
    for chunks in three_way_splits(text):
        got, _ = run_filter(chunks)
        assert got.rstrip() == expected, (text, chunks)


def test_three_way_splits_cut_inside_both_tags():
    splits = three_way_splits("<think>hmm</think>answer")
    assert ["<th", "ink>hmm</", "think>answer"] in splits
    assert ["", "<think>hmm</think>", "answer"] in splits
    assert len(splits) == 25 * 26 // 2


def test_filter_holds_back_partial_open_tag():
    think = ThinkFilter()
    assert think.feed("answer <thi") == "answer "
    assert think.feed("nk>secret") == ""
    assert think.feed("</th") == ""
    assert think.feed("ink> more") == " more"
    assert think.flush() == ""


def test_filter_releases_partial_tag_that_was_not_a_tag():
    think = ThinkFilter()
    assert think.feed("a <thi") == "a "
    assert think.feed("s is fine") == "<this is fine"


def test_filter_flush_releases_held_text_outside_block():
    think = ThinkFilter()
    assert think.feed("x <") == "x "
    assert think.flush() == "<"


def test_filter_flush_drops_unclosed_block():
    think = ThinkFilter()
    assert think.feed("ok<think>still thinking </thi") == "ok"
    assert think.flush() == ""


def test_filter_strips_leading_whitespace_only_once():
    think = ThinkFilter()
    assert think.feed("<think>x</think>") == ""
    assert think.feed("\n\n") == ""
    assert think.feed("  hello") == "hello"
    assert think.feed("  world") == "  world"


@pytest.mark.parametrize(
    "chunks",
    [
        ["reasoning</think>answer"],
        ["reasoning</th", "ink>answer"],
        ["reason", "ing<", "/think>", "answer"],
    ],
)
def test_stray_close_sets_shown_reasoning(chunks):
    got, think = run_filter(chunks)
    assert think.shown_reasoning
    # What was shown cannot be taken back; the caller reprints strip_think's text.
    assert got == "reasoninganswer"
    assert strip_think("".join(chunks)) == "answer"


def test_paired_tags_do_not_set_shown_reasoning():
    _, think = run_filter(["<think>a</think>b<think>c</think>d"])
    assert not think.shown_reasoning


def test_close_after_a_closed_block_is_stray():
    _, think = run_filter(["<think>a</think>b</think>c"])
    assert think.shown_reasoning


@pytest.mark.parametrize(
    ("text", "tag", "size"),
    [
        ("abc<", OPEN, 1),
        ("abc<thin", OPEN, 5),
        ("abc<think", OPEN, 6),
        ("abc", OPEN, 0),
        ("abc</", CLOSE, 2),
        ("abc<", CLOSE, 1),
        ("<think>", OPEN, 0),  # a whole tag is not a partial one
        ("", OPEN, 0),
    ],
)
def test_partial_suffix(text, tag, size):
    assert _partial_suffix(text, tag) == size


# --- clean_prompt: a final answer as one paragraph of prompt ------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("A cat on a roof.", "A cat on a roof."),
        ('Sure! Here is your prompt:\n\n"A cat on a roof at night."\n\nThis sets the mood.',
         "A cat on a roof at night."),
        ("Here is the prompt: A black cat on a roof.", "A black cat on a roof."),
        ("Prompt: a cat, night, moon,\nroof, watercolor", "a cat, night, moon, roof, watercolor"),
        ("**Final Prompt:** A cat sleeping\non a windowsill in the rain.",
         "A cat sleeping on a windowsill in the rain."),
        ("<think>plan</think>“A fox in the snow.”", "A fox in the snow."),
        ("1girl, red dress\nbeach\nsunset", "1girl, red dress, beach, sunset"),
        ("```\nA cat, moon\n```", "A cat, moon"),
        ("Okay.\n\nA lighthouse in a storm.", "A lighthouse in a storm."),
        ("A dragon.\nIt breathes fire.", "A dragon. It breathes fire."),
        ("「夜の猫」", "夜の猫"),
        ("", ""),
    ],
)  # fmt: skip
def test_clean_prompt(raw, clean):
    assert clean_prompt(raw) == clean


def test_clean_prompt_keeps_a_lone_line_it_would_otherwise_drop():
    assert clean_prompt("Here you go:") == "Here you go:"
