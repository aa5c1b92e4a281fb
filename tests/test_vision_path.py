"""The real llama.cpp vision path, end to end, on the tiny model and a generated projector.

No real vision model fits gemma-3-270m, so :mod:`mmproj` writes a Gemma 3 projector
with random weights and the text model's embedding width.  The captions are
gibberish; everything that carries the image is real: llama-cpp-python's
MTMDChatHandler, mtmd's projector loading, preprocessing and image encoding, the
image embeddings in the prompt, generation, and yomitori's timings and errors.

The tiny model's GGUF has no chat template, which MTMDChatHandler requires, so the
tests use a copy with a Gemma-style one (``mmproj.with_chat_template``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, needs_model, run_cli
from mmproj import image_tokens

from daemon.errors import ModelError
from daemon.models import ModelSpec
from daemon.prompts import image_data_url

pytestmark = needs_model

IMAGE_TOKENS = image_tokens()  # 224 px, 14 px patches, 4 × 4 pooling: 16
IMAGE_TOKENS_FINE = image_tokens(merge=2)  # 2 × 2 pooling: 64
MAX_IMAGE_SIDE = 512
OCR_MAX_TOKENS = 32
CAPTION_MAX_TOKENS = 24  # gibberish is no better for being long
CAPTION = ("--set", f"max_tokens={CAPTION_MAX_TOKENS}")


@pytest.fixture(scope="session")
def vision_config(vision_files, tiny_spec, tmp_path_factory) -> Path:
    """A config folder of its own: the models, max_image_side, a shorter vision OCR."""
    folder = tmp_path_factory.mktemp("vision-config")
    model = vision_files["model"].as_posix()
    lines = []
    for name, mmproj in (
        ("vision", "mmproj"),
        ("vision_fine", "mmproj_fine"),
        ("wide", "wide"),
        ("no_vision", "no_vision"),
        ("truncated", "truncated"),
    ):
        lines += [f"[models.{name}]", f'path = "{model}"',
                  f'mmproj = "{vision_files[mmproj].as_posix()}"', "n_ctx = 2048"]  # fmt: skip
    lines += ["[models.no_template]", f'path = "{Path(tiny_spec.path).as_posix()}"',
              f'mmproj = "{vision_files["mmproj"].as_posix()}"']  # fmt: skip
    (folder / "models.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "hotkeys.toml").write_text(
        f"[settings]\nmax_image_side = {MAX_IMAGE_SIDE}\n", encoding="utf-8"
    )
    shipped = (ROOT / "prompts" / "ocr_vlm.toml").read_text(encoding="utf-8")
    assert "max_tokens = 1024" in shipped
    (folder / "prompts").mkdir()
    (folder / "prompts" / "ocr_vlm.toml").write_text(
        shipped.replace("max_tokens = 1024", f"max_tokens = {OCR_MAX_TOKENS}"), encoding="utf-8"
    )
    return folder


def picture(path: Path, width: int = 224, height: int = 224) -> Path:
    """A PNG with some structure in every channel (gradients)."""
    from PIL import Image

    size = (width, height)
    channels = [
        Image.linear_gradient("L").resize(size),
        Image.radial_gradient("L").resize(size),
        Image.linear_gradient("L").rotate(90).resize(size),
    ]
    Image.merge("RGB", channels).save(path)
    return path


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={"YOMITORI_CONFIG_DIR": str(config)})


def do_json(config: Path, *args: str) -> dict[str, Any]:
    done = run(config, "do", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def captions(vision_config, tmp_path_factory) -> dict[str, Any]:
    """One 224 px picture captioned twice through the 16-token projector and once
    through the 64-token one (each run is a fresh CLI process and worker)."""
    image = picture(tmp_path_factory.mktemp("pictures") / "picture.png")
    args = ("caption", "--image", str(image), *CAPTION)
    return {
        "first": do_json(vision_config, *args, "--model", "vision"),
        "again": do_json(vision_config, *args, "--model", "vision"),
        "fine": do_json(vision_config, *args, "--model", "vision_fine"),
    }


def test_caption_runs_through_the_projector(captions):
    data = captions["first"]
    assert isinstance(data["text"], str) and data["text"].strip()
    timings = data["timings"]
    assert 0 < timings["completion_tokens"] <= CAPTION_MAX_TOKENS
    assert timings["image_encode_s"] > 0
    assert timings["prompt_eval_s"] > 0
    assert timings["image_side"] == 224
    # The handler evaluates the prompt from an empty cache, images included.
    assert timings["reused_tokens"] == 0
    assert timings["prompt_tokens"] > IMAGE_TOKENS


def test_image_embeddings_take_prompt_positions(captions):
    # Same text, same picture: the finer projector adds exactly its extra embeddings.
    coarse, fine = (captions[k]["timings"]["prompt_tokens"] for k in ("first", "fine"))
    assert fine - coarse == IMAGE_TOKENS_FINE - IMAGE_TOKENS


def test_same_image_same_caption(captions):
    # caption.toml samples at temperature 0.2; without a seed llama-cpp-python derives
    # each request's seed from the previous one, so a fresh worker's first request is
    # always sampled alike.
    assert captions["again"]["text"] == captions["first"]["text"]
    assert (
        captions["again"]["timings"]["completion_tokens"]
        == captions["first"]["timings"]["completion_tokens"]
    )


def test_large_image_is_downscaled_first(vision_config, captions, tmp_path):
    image = picture(tmp_path / "large.png", 3000, 2000)
    timings = do_json(vision_config, "caption", "--model", "vision", "--image", str(image),
                      *CAPTION)["timings"]  # fmt: skip
    assert timings["image_side"] == MAX_IMAGE_SIDE
    assert timings["image_encode_s"] > 0
    # The projector resizes every image to its own 224 px square: same token count.
    assert timings["prompt_tokens"] == captions["first"]["timings"]["prompt_tokens"]


def test_ocr_through_the_vision_model(vision_config, tmp_path):
    image = picture(tmp_path / "text.png", 320, 120)
    data = do_json(vision_config, "ocr", "--engine", "vlm", "--model", "vision",
                   "--image", str(image))  # fmt: skip
    assert isinstance(data["text"], str)
    timings = data["timings"]
    assert timings["image_encode_s"] > 0 and timings["ocr_s"] > 0
    assert timings["prompt_tokens"] > IMAGE_TOKENS
    assert 0 < timings["completion_tokens"] <= OCR_MAX_TOKENS


@pytest.mark.parametrize(
    ("model", "file"),
    [("wide", "wide"), ("no_vision", "no_vision"), ("truncated", "truncated")],
)
def test_broken_projector_is_a_one_line_model_error(vision_config, vision_files, model, file,
                                                    tmp_path):  # fmt: skip
    image = picture(tmp_path / "picture.png")
    done = run(vision_config, "do", "caption", "--model", model, "--image", str(image))
    assert done.returncode == ModelError.exit_code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(vision_files[file]) in lines[0]
    assert "vision projector" in lines[0]


def test_model_without_chat_template_says_so(vision_config, tmp_path):
    # MTMDChatHandler builds the prompt from the GGUF's chat template only.
    image = picture(tmp_path / "picture.png")
    done = run(vision_config, "do", "caption", "--model", "no_template", "--image", str(image))
    assert done.returncode == 2  # said at load, as something the user can fix
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "has no chat template, which image actions need" in lines[0]
    assert Path(lines[0].split("model file ")[1].split(" has no")[0]).name == Path(
        vision_config.joinpath("models.toml").read_text().split("[models.no_template]")[1]
        .split('"')[1]).name  # fmt: skip
    assert "chat_format" in lines[0]


def test_resident_worker_survives_a_bad_projector(vision_files, tmp_path):
    from daemon.engine.client import WorkerEngine

    def spec(mmproj: str) -> ModelSpec:
        return ModelSpec(name=mmproj, path=vision_files["model"], mmproj=vision_files[mmproj],
                         n_ctx=2048)  # fmt: skip

    data = picture(tmp_path / "picture.png").read_bytes()
    system = {"role": "system", "content": "You describe pictures."}
    ask = "Describe this picture."
    with_image = [system, {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_data_url(data)}},
        {"type": "text", "text": ask},
    ]}]  # fmt: skip
    text_only = [system, {"role": "user", "content": ask}]
    options = {"max_tokens": 8, "temperature": 0}

    engine = WorkerEngine(log_path=tmp_path / "worker.log")
    try:
        with pytest.raises(ModelError, match=r"mmproj-wide\.gguf"):
            engine.load(spec("wide"))
        assert engine.load(spec("mmproj")) > 0
        first = engine.generate(with_image, options)
        second = engine.generate(with_image, options)
        plain = engine.generate(text_only, options)
        again = engine.generate(text_only, options)
        engine.generate(with_image, options)
        after_image = engine.generate(text_only, options)
    finally:
        engine.unload()
    fresh = WorkerEngine(log_path=tmp_path / "fresh.log")
    try:
        fresh.load(spec("mmproj"))
        alone = fresh.generate(text_only, options)
    finally:
        fresh.unload()
    for result in (first, second):
        assert result.completion_tokens > 0
        assert result.extra["image_encode_s"] > 0
        assert result.reused_tokens == 0  # the handler always starts from an empty cache
    assert second.prompt_tokens == first.prompt_tokens
    assert "image_encode_s" not in plain.extra
    # The image adds its embeddings plus <start_of_image> and <end_of_image>.
    assert abs(first.prompt_tokens - plain.prompt_tokens - (IMAGE_TOKENS + 2)) <= 1
    # Text-only requests bypass the vision handler, so they reuse the cached prompt: all
    # of it when it repeats, the text before the image after an image request.
    assert again.reused_tokens == again.prompt_tokens - 1
    assert 0 < after_image.reused_tokens < after_image.prompt_tokens - 1
    # Nothing of the image's positions leaks into what is reused: same answer as a
    # worker that never saw an image.
    assert plain.text == again.text == after_image.text == alone.text
