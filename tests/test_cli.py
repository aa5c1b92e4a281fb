"""``yomitori do`` and friends, run as a user runs them (a subprocess)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, needs_model, run_cli
from PIL import Image


def png(width: int = 32, height: int = 32) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
TIMING_KEYS = {"load_s", "ttft_s", "total_s", "prompt_tokens", "reused_tokens", "completion_tokens"}


def assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@needs_model
def test_do_json_with_the_tiny_model():
    done = run_cli(
        "do",
        "translate_en",
        "--model",
        "tiny",
        "--text",
        "夕焼けの海",
        "--set",
        "max_tokens=12",
        "--set",
        "style=tags",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout.strip().splitlines()[-1])
    assert data["action"] == "translate_en" and data["model"] == "tiny"
    assert data["text"].strip()
    assert set(data["timings"]) >= TIMING_KEYS
    assert data["timings"]["completion_tokens"] >= 1
    assert data["timings"]["load_s"] > 0


@needs_model
def test_do_reads_stdin_and_prints_plain_text():
    done = run_cli(
        "do",
        "variations",
        "--model",
        "tiny",
        "--stdin",
        "--set",
        "count=2",
        "--set",
        "max_tokens=8",
        stdin="a castle in the clouds\n",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert not done.stdout.lstrip().startswith("{")


@needs_model
def test_do_streams_to_a_terminal():
    """On a tty the text appears while the model is still writing."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daemon",
            "do",
            "translate_en",
            "--model",
            "tiny",
            "--text",
            "森の中の小さな家",
            "--set",
            "max_tokens=150",
            "--set",
            "temperature=0",
        ],
        stdout=follower,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=os.environ.copy(),
    )
    os.close(follower)
    arrivals: list[float] = []
    output = b""
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        arrivals.append(time.perf_counter())
        output += data
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    os.close(leader)
    assert output.strip()
    assert len(arrivals) >= 2, "a terminal should receive the text in pieces"


def test_unknown_action_is_exit_2():
    assert_one_line_error(run_cli("do", "nope", "--text", "x"), "Unknown action 'nope'")


def test_missing_model_file_names_the_path(tmp_path):
    missing = tmp_path / "models" / "absent.gguf"
    assert_one_line_error(
        run_cli("do", "translate_en", "--model", str(missing), "--text", "x"),
        str(missing),
        "not found",
    )


def test_not_a_gguf(tmp_path):
    fake = tmp_path / "model.safetensors.gguf"
    fake.write_bytes(b"\x00" * 64)
    assert_one_line_error(
        run_cli("do", "translate_en", "--model", str(fake), "--text", "x"), "not a GGUF file"
    )


def test_image_to_a_text_action(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(PNG_1PX)
    assert_one_line_error(run_cli("do", "translate_en", "--image", str(image)), "text action")


def test_text_to_an_image_action():
    assert_one_line_error(run_cli("do", "caption", "--text", "x"), "needs an image")


@needs_model
def test_image_action_without_a_vision_model(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(png())
    assert_one_line_error(
        run_cli("do", "caption", "--model", "tiny", "--image", str(image)), "vision model", "mmproj"
    )


def test_unknown_set_key():
    assert_one_line_error(
        run_cli("do", "translate_en", "--text", "x", "--set", "colour=red"), "Unknown key 'colour'"
    )


def test_set_without_equals_and_bad_choice():
    assert_one_line_error(
        run_cli("do", "translate_en", "--text", "x", "--set", "style"), "KEY=VALUE"
    )
    assert_one_line_error(
        run_cli("do", "translate_en", "--text", "x", "--set", "style=anime"), "prose", "tags"
    )


def test_unknown_model_name():
    assert_one_line_error(
        run_cli("do", "translate_en", "--model", "qwen-huge", "--text", "x"),
        "Unknown model 'qwen-huge'",
    )


def test_missing_image_file(tmp_path):
    assert_one_line_error(
        run_cli("do", "caption", "--image", str(tmp_path / "none.png")), "Cannot read image"
    )


def test_usage_error_is_one_line():
    assert_one_line_error(run_cli("do", "translate_en"), "one of the arguments")


def test_no_model_configured_says_what_to_do():
    done = run_cli("do", "translate_en", "--text", "x")
    assert_one_line_error(done, "No model configured", "models.toml", "--model")


def test_no_vision_model_configured_says_so_for_an_image_action(tmp_path):
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(image)
    done = run_cli("do", "caption", "--image", str(image))
    assert_one_line_error(done, "'caption' needs a vision model and none is configured",
                          "mmproj", "models.toml", "--model")  # fmt: skip


def test_env_model_path_is_used(tmp_path):
    missing = tmp_path / "from-env.gguf"
    done = run_cli("do", "translate_en", "--text", "x", env={"YOMITORI_MODEL": str(missing)})
    assert_one_line_error(done, str(missing))


@needs_model
def test_models_toml_default_and_listing(config_dir, tiny_spec):
    (config_dir / "models.toml").write_text(
        f'default = "mini"\n[models.mini]\npath = "{tiny_spec.path.as_posix()}"\nn_ctx = 1024\n',
        encoding="utf-8",
    )
    try:
        listing = run_cli("models")
        assert listing.returncode == 0
        assert "* mini:" in listing.stdout and "[ok]" in listing.stdout
        done = run_cli("do", "translate_en", "--text", "bird", "--set", "max_tokens=4", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1])["model"] == "mini"
    finally:
        (config_dir / "models.toml").unlink()


def test_broken_models_toml_names_file_and_line(config_dir):
    (config_dir / "models.toml").write_text(
        'default = "a"\n[models.a]\npath = \n', encoding="utf-8"
    )
    try:
        done = run_cli("do", "translate_en", "--text", "x")
        assert_one_line_error(done, "models.toml", "line 3")
    finally:
        (config_dir / "models.toml").unlink()


def test_user_template_overrides_and_broken_ones_do_not_hide_others(config_dir):
    prompts = config_dir / "prompts"
    prompts.mkdir(exist_ok=True)
    (prompts / "haiku.toml").write_text(
        'description = "mine"\nuser = "Haiku: $input"\n', encoding="utf-8"
    )
    (prompts / "translate_en.toml").write_text(
        'user = "$input"\nsystem = "oops\n', encoding="utf-8"
    )
    try:
        listing = run_cli("templates")
        assert listing.returncode == 0
        assert "haiku" in listing.stdout and str(prompts / "haiku.toml") in listing.stdout
        assert "variations" in listing.stdout and "shipped" in listing.stdout
        assert any(line.split()[:3] == ["ocr", "image", "built-in"]
                   for line in listing.stdout.splitlines())  # fmt: skip
        assert "translate_en.toml, line 2" in listing.stderr
        # The broken override warns and the shipped template still works.
        done = run_cli("do", "translate_en", "--model", "no-such-model", "--text", "x")
        assert "warning" in done.stderr and "line 2" in done.stderr
        assert "Unknown model" in done.stderr
    finally:
        for path in prompts.iterdir():
            path.unlink()


def test_paths_and_version():
    done = run_cli("paths")
    assert done.returncode == 0
    assert os.environ["YOMITORI_CONFIG_DIR"] in done.stdout
    assert run_cli("--version").stdout.startswith("yomitori ")


def test_python_dash_m_and_console_script_agree():
    script = Path(sys.executable).with_name("yomitori")
    if not script.exists():
        pytest.skip("the yomitori console script is not installed next to this Python")
    done = subprocess.run([str(script), "templates"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "translate_en" in done.stdout


@needs_model
def test_input_longer_than_the_context_is_a_clear_error():
    done = run_cli(
        "do", "translate_en", "--model", "tiny", "--stdin", stdin="長い文章です。" * 1500
    )
    assert done.returncode == 1
    assert "too long" in done.stderr and "n_ctx" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@needs_model
def test_ctrl_c_cancels_and_leaves_no_worker_behind():
    import signal

    import psutil

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daemon",
            "do",
            "variations",
            "--model",
            "tiny",
            "--text",
            "a ship",
            "--set",
            "max_tokens=3000",
            "--set",
            "count=50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=os.environ.copy(),
    )
    me = psutil.Process(proc.pid)
    workers: list[psutil.Process] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not workers:
        workers = [c for c in me.children() if "daemon.engine.worker" in " ".join(c.cmdline())]
        time.sleep(0.05)
    assert workers, "the worker process should have started"
    time.sleep(1.5)  # loading and generating
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Cancelled" in err and "Traceback" not in err
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "the worker must exit with the command"


@needs_model
def test_models_marks_what_do_would_use(config_dir):
    """Nothing configured: no model is marked as the default (do says none is
    configured); with YOMITORI_MODEL, that model is the one marked."""
    (config_dir / "models.toml").unlink(missing_ok=True)
    listing = run_cli("models")
    assert listing.returncode == 0
    assert not any(line.startswith("*") for line in listing.stdout.splitlines()), listing.stdout
    assert "No default" in listing.stdout
    done = run_cli("do", "translate_en", "--text", "x")
    assert done.returncode == 2 and "No model configured" in done.stderr
    (config_dir / "models.toml").write_text(
        'default = "a"\n[models.a]\npath = "a.gguf"\n', encoding="utf-8"
    )
    try:
        marked = run_cli("models", env={"YOMITORI_MODEL": "tiny"})
        stars = [line for line in marked.stdout.splitlines() if line.startswith("*")]
        assert len(stars) == 1 and stars[0].startswith("* tiny:"), marked.stdout
    finally:
        (config_dir / "models.toml").unlink()


def test_a_closed_pipe_is_silent():
    """`yomitori templates | head -0`: the reader went away before the output."""
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "templates"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()
    _out, err = proc.communicate(timeout=60)
    assert err.decode() == "", err.decode()
    assert proc.returncode == 141


def test_status_prints_words():
    from daemon.cli_daemon import status_lines

    lines = status_lines({
        "state": "idle", "model": None, "loaded": False, "paused": True, "queue": 0,
        "engines": [{"backend": "ollama", "model": "llava", "loaded": True,
                     "url": "http://127.0.0.1:11434", "on_gpu": "partly",
                     "vram_bytes": 2 * 2**30, "size_bytes": 4 * 2**30}],
        "remote": [],
        "hotkeys_taken": ["<alt>+<shift>+<cmd>+t (translate_en): another program holds it"],
        "last_error": None, "uptime_s": 3725.0,
    })  # fmt: skip
    text = "\n".join(lines)
    assert "[" not in text and "None" not in text and "False" not in text and "True" not in text
    assert "model: none" in lines and "loaded: no" in lines and "paused: yes" in lines
    assert (
        "engine: ollama, llava, loaded, http://127.0.0.1:11434, on GPU: partly (2.0 of 4.0 GiB)"
        in lines
    )
    taken = "<alt>+<shift>+<cmd>+t (translate_en): another program holds it"
    assert f"hotkey not available: {taken}" in lines
    assert "uptime: 1 h 2 min" in lines
    assert status_lines({"engines": []}) == ["engine: none yet"]


def test_bindings_shows_the_effective_set_and_where_each_comes_from(config_dir: Path) -> None:
    (config_dir / "hotkeys.toml").write_text(
        '[[binding]]\nhotkey = "<f8>"\naction = "translate_en"\noutput = ["paste"]\n\n'
        '[[binding]]\nhotkey = "<alt>+<shift>+<cmd>+c"\nenabled = false\n',
        encoding="utf-8",
    )
    done = run_cli("bindings", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {row["hotkey"]: row for row in report["bindings"]}
    mine = rows["<f8>"]
    assert mine["from"] == f"{config_dir / 'hotkeys.toml'}, line 1"
    assert mine["output"] == ["paste"]
    (replaced,) = mine["replaces"]
    assert replaced.startswith("<alt>+<shift>+<cmd>+t translate_en")
    assert (
        "<alt>+<shift>+<cmd>+t" not in rows and "<alt>+<shift>+<cmd>+c" not in rows
    )  # replaced, off
    assert rows["<alt>+<shift>+<cmd>+r"]["from"] == "shipped"
    assert report["problems"] == []
    text = run_cli("bindings")
    assert text.returncode == 0
    line = next(line for line in text.stdout.splitlines() if line.startswith("<f8>"))
    assert "translate_en" in line and "clipboard → paste" in line and "line 1" in line
    assert "(replaces <alt>+<shift>+<cmd>+t translate_en (shipped, line" in text.stdout


def test_bindings_lists_every_problem_and_exits_non_zero(config_dir: Path) -> None:
    (config_dir / "hotkeys.toml").write_text(
        '[[binding]]\nhotkey = "<f8>"\naction = "translate_en"\nvars = { style = "haiku" }\n\n'
        '[[binding]]\nhotkey = "<f9>"\naction = "nope"\n',
        encoding="utf-8",
    )
    done = run_cli("bindings")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{config_dir / 'hotkeys.toml'}, line 4: Template 'translate_en': style must be" in (
        done.stderr
    )
    assert f"{config_dir / 'hotkeys.toml'}, line 6: unknown action 'nope'." in done.stderr
    # What can work is still shown.
    assert "<alt>+<shift>+<cmd>+r" in done.stdout and "<f8>" not in done.stdout


def test_every_subcommand_and_option_has_help_text() -> None:
    import argparse

    from daemon.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for command, sub in action.choices.items():
                    if not helps.get(command):
                        missing.append(f"{name} {command}")
                    walk(sub, f"{name} {command}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "yomitori")
    assert missing == []
