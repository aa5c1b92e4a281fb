"""A tiny, randomly initialised vision projector (mmproj GGUF) for the tiny text model.

llama.cpp's multimodal path (``mtmd``: projector loading, image preprocessing,
image encoding, image tokens in the prompt) needs a real mmproj file, and no real
one fits gemma-3-270m.  :func:`write_tiny_mmproj` writes one: the Gemma 3 projector
layout (a SigLIP-style ViT, average pooling, RMS norm and a projection into the
text model's embedding width) with small deterministic weights.  What it "sees"
is meaningless; every step that handles the image is the real one.

The layout follows llama.cpp's ``tools/mtmd`` (``clip-impl.h`` names the keys and
tensors, ``models/siglip.cpp`` builds the Gemma 3 graph).  Numpy shapes are
PyTorch-style ``(out, in)``; GGUF stores them reversed, which is what ggml expects.

:func:`with_chat_template` copies a GGUF with a chat template added: llama-cpp-python's
``MTMDChatHandler`` builds the prompt from the model's ``tokenizer.chat_template``,
and the tiny model's file has none.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gguf

# The Gemma turn format, written for these tests: the system text opens the first
# user turn (Gemma has no system role).  MTMDChatHandler hands the template every
# image part as a text part holding llama.cpp's media marker, which mtmd then
# replaces with <start_of_image>, the image's embeddings and <end_of_image>.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- set ns.system = message['content'] | trim + '\n\n' -%}"
    "{%- else -%}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\n' }}"
    "{{ ns.system }}{%- set ns.system = '' -%}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}{{ item['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def text_embedding_width(reader: gguf.GGUFReader) -> int:
    """``<arch>.embedding_length`` of a text model (640 for gemma-3-270m): the width
    the projector must output."""
    arch = reader.get_field("general.architecture")
    assert arch is not None, "not a model GGUF: no general.architecture"
    field = reader.get_field(f"{arch.contents()}.embedding_length")
    assert field is not None, "no embedding_length in the model GGUF"
    return int(field.contents())


def image_tokens(image_size: int = 224, patch_size: int = 14, merge: int = 4) -> int:
    """How many embeddings (prompt positions) one image becomes with these settings."""
    side = image_size // patch_size // merge
    return side * side


def write_tiny_mmproj(
    path: Path,
    n_embd: int,
    *,
    image_size: int = 224,
    patch_size: int = 14,
    merge: int = 4,
    hidden: int = 64,
    ffn: int = 128,
    blocks: int = 2,
    heads: int = 4,
    seed: int = 0,
    with_vision: bool = True,
) -> Path:
    """Write a Gemma 3 vision projector whose output width is ``n_embd``.

    ``image_size / patch_size`` patches per side are average-pooled ``merge`` × ``merge``,
    so an image becomes :func:`image_tokens` embeddings.  ``with_vision=False`` leaves out
    ``clip.has_vision_encoder`` (a file llama.cpp must refuse).
    """
    import gguf
    import numpy as np

    patches = image_size // patch_size
    if patches * patch_size != image_size or patches % merge:
        raise ValueError(
            f"image_size {image_size} must be a multiple of patch_size {patch_size}, "
            f"with the patches per side ({patches}) a multiple of merge {merge}"
        )
    if hidden % heads or ffn == hidden:
        # ffn == hidden would make llama.cpp's legacy up/down swap check ambiguous.
        raise ValueError("hidden must divide into heads, and ffn must differ from hidden")
    rng = np.random.RandomState(seed)

    def matrix(*shape: int, scale: float = 0.02) -> Any:
        return (rng.standard_normal(shape) * scale).astype(np.float16)

    def vector(size: int, value: float = 0.0) -> Any:
        return np.full(size, value, dtype=np.float32)

    writer = gguf.GGUFWriter(str(path), arch="clip")
    writer.add_string("general.name", "yomitori test projector (random weights)")
    writer.add_string("clip.projector_type", "gemma3")
    if with_vision:
        writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", hidden)
    writer.add_uint32("clip.vision.feed_forward_length", ffn)
    writer.add_uint32("clip.vision.block_count", blocks)
    writer.add_uint32("clip.vision.projection_dim", n_embd)
    writer.add_uint32("clip.vision.attention.head_count", heads)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    if merge != 4:  # llama.cpp's default for gemma3; real files leave the key out
        writer.add_uint32("clip.vision.projector.scale_factor", merge)

    # Patch embedding: a conv with kernel = stride = patch_size, (out, in, kh, kw).
    writer.add_tensor("v.patch_embd.weight", matrix(hidden, 3, patch_size, patch_size, scale=0.1))
    writer.add_tensor("v.patch_embd.bias", vector(hidden))
    position = rng.standard_normal((patches * patches, hidden)) * 0.02
    writer.add_tensor("v.position_embd.weight", position.astype(np.float32))
    for block in range(blocks):
        prefix = f"v.blk.{block}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{prefix}.{name}.weight", matrix(hidden, hidden, scale=0.1))
            writer.add_tensor(f"{prefix}.{name}.bias", vector(hidden))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{prefix}.{name}.weight", vector(hidden, 1.0))
            writer.add_tensor(f"{prefix}.{name}.bias", vector(hidden))
        writer.add_tensor(f"{prefix}.ffn_up.weight", matrix(ffn, hidden, scale=0.1))
        writer.add_tensor(f"{prefix}.ffn_up.bias", vector(ffn))
        writer.add_tensor(f"{prefix}.ffn_down.weight", matrix(hidden, ffn, scale=0.1))
        writer.add_tensor(f"{prefix}.ffn_down.bias", vector(hidden))
    writer.add_tensor("v.post_ln.weight", vector(hidden, 1.0))
    writer.add_tensor("v.post_ln.bias", vector(hidden))
    # Gemma 3's projector: RMS norm, then (vision width → text width).
    writer.add_tensor("mm.soft_emb_norm.weight", vector(hidden, 1.0))
    writer.add_tensor("mm.input_projection.weight", matrix(hidden, n_embd, scale=hidden**-0.5))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def with_chat_template(
    reader: gguf.GGUFReader, target: Path, template: str = GEMMA_TEMPLATE
) -> Path:
    """Copy the GGUF behind ``reader`` to ``target`` with ``tokenizer.chat_template`` set."""
    import gguf

    arch = reader.get_field("general.architecture")
    assert arch is not None, "not a model GGUF: no general.architecture"
    writer = gguf.GGUFWriter(str(target), arch=str(arch.contents()))
    for field in reader.fields.values():
        # The writer adds the architecture and the GGUF.* header values itself.
        if field.name.startswith("GGUF.") or field.name in (
            "general.architecture",
            "tokenizer.chat_template",
        ):
            continue
        kind = field.types[0]
        sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_type)
    writer.add_chat_template(template)
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
            tensor.tensor_type,
        )  # fmt: skip
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data)
    writer.close()
    return target
