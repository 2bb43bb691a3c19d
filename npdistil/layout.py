"""Where every tensor lives: Hugging Face checkpoint names -> npdistil names -> typed weights.

One table, ``_encoder_table`` (and ``_HEAD_TABLES`` for the task heads), says for every tensor
of npdistil's file which checkpoint tensors it comes from, their shapes, and how they are laid
out for NumPy: PyTorch stores a Linear's weight as [out, in] for ``x @ W.T``; npdistil stores it
once as [in, out] for ``x @ W``, and puts q, k and v side by side so that one matmul makes all
three. Conversion checks every shape while copying; loading checks them again, so a renamed or
mis-shaped tensor fails at load time, naming the tensor, never in the middle of a forward pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .config import DistilBertConfig
from .errors import CheckpointError
from .model import (
    Block,
    Embeddings,
    MaskedLMHead,
    QuestionAnsweringHead,
    SequenceClassificationHead,
    TokenClassificationHead,
    Weights,
)
from .numerics import LayerNorm, Linear

__all__ = ["HEAD_KINDS", "Heads", "from_hf_state_dict", "build_weights", "build_heads"]

# Buffers some checkpoints carry that are not weights.
_IGNORED_SUFFIXES = ("position_ids",)
# Task models (DistilBertFor...) keep the encoder under this prefix; DistilBertModel has none.
_ENCODER_PREFIX = "distilbert."

HEAD_KINDS = (
    "masked_lm",
    "sequence_classification",
    "multiple_choice",
    "token_classification",
    "question_answering",
)


class Source(NamedTuple):
    """How one npdistil tensor is made from checkpoint tensors."""

    hf_names: tuple[str, ...]  # one, or several laid side by side (q, k, v)
    hf_shape: tuple[int, ...]  # the shape of each of them in the checkpoint
    linear: bool  # a torch Linear tensor: weights transposed to [in, out], biases concatenated


def _linear(npd: str, hf: str, n_in: int, n_out: int) -> dict[str, Source]:
    return {
        f"{npd}.weight": Source((f"{hf}.weight",), (n_out, n_in), True),
        f"{npd}.bias": Source((f"{hf}.bias",), (n_out,), True),
    }


def _norm(npd: str, hf: str, d: int) -> dict[str, Source]:
    return {
        f"{npd}.weight": Source((f"{hf}.weight",), (d,), False),
        f"{npd}.bias": Source((f"{hf}.bias",), (d,), False),
    }


def _encoder_table(c: DistilBertConfig) -> dict[str, Source]:
    d, f = c.dim, c.hidden_dim
    table = {
        "embeddings.word": Source(("embeddings.word_embeddings.weight",), (c.vocab_size, d), False),
        "embeddings.position": Source(
            ("embeddings.position_embeddings.weight",), (c.max_position_embeddings, d), False
        ),
        **_norm("embeddings.norm", "embeddings.LayerNorm", d),
    }
    for i in range(c.n_layers):
        hf = f"transformer.layer.{i}."
        qkv = tuple(f"{hf}attention.{n}_lin" for n in "qkv")
        table[f"blocks.{i}.qkv.weight"] = Source(tuple(f"{n}.weight" for n in qkv), (d, d), True)
        table[f"blocks.{i}.qkv.bias"] = Source(tuple(f"{n}.bias" for n in qkv), (d,), True)
        table |= _linear(f"blocks.{i}.out", f"{hf}attention.out_lin", d, d)
        table |= _norm(f"blocks.{i}.attention_norm", f"{hf}sa_layer_norm", d)
        table |= _linear(f"blocks.{i}.ffn_in", f"{hf}ffn.lin1", d, f)
        table |= _linear(f"blocks.{i}.ffn_out", f"{hf}ffn.lin2", f, d)
        table |= _norm(f"blocks.{i}.output_norm", f"{hf}output_layer_norm", d)
    return table


def _head_tables(c: DistilBertConfig, n_labels: int) -> dict[str, dict[str, Source]]:
    d = c.dim
    return {
        "masked_lm": {
            **_linear("heads.mlm.transform", "vocab_transform", d, d),
            **_norm("heads.mlm.norm", "vocab_layer_norm", d),
            "heads.mlm.projector.bias": Source(("vocab_projector.bias",), (c.vocab_size,), False),
        },
        "sequence_classification": {
            **_linear("heads.pre_classifier", "pre_classifier", d, d),
            **_linear("heads.classifier", "classifier", d, n_labels),
        },
        "token_classification": _linear("heads.classifier", "classifier", d, n_labels),
        "question_answering": _linear("heads.qa_outputs", "qa_outputs", d, 2),
    }


# An MLM projector not tied to the word embeddings is kept as [V, D], like the embeddings.
_UNTIED_PROJECTOR = "heads.mlm.projector.weight"


def sinusoidal_table(n_pos: int, dim: int) -> np.ndarray:  # -> [P, D]
    """Fixed positions of "Attention is all you need": sin on even dims, cos on odd ones."""
    pos = np.arange(n_pos, dtype=np.float64)[:, None]
    j = np.arange(dim)
    angle = pos / np.power(10000.0, 2 * (j // 2) / dim)  # [P, D], computed in float64 as HF does
    return np.where(j % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)


def _canonical_name(name: str) -> str:
    # Very old checkpoints name LayerNorm parameters gamma/beta.
    if name.endswith(".gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith(".beta"):
        return name[: -len("beta")] + "bias"
    return name


def _as_float32(name: str, array: np.ndarray, source: str) -> np.ndarray:
    if array.dtype.kind != "f":
        raise CheckpointError(f"{source}: tensor {name!r} has dtype {array.dtype}, not a float")
    array = np.asarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise CheckpointError(f"{source}: tensor {name!r} has {bad} NaN or infinite values")
    return array


def _detect_heads(names: set[str], config: DistilBertConfig) -> list[str]:
    heads = []
    if any(
        n.startswith(("vocab_transform.", "vocab_layer_norm.", "vocab_projector.")) for n in names
    ):
        heads.append("masked_lm")
    if "pre_classifier.weight" in names or "pre_classifier.bias" in names:
        arch = " ".join(config.architectures)
        heads.append("multiple_choice" if "MultipleChoice" in arch else "sequence_classification")
    elif "classifier.weight" in names or "classifier.bias" in names:
        heads.append("token_classification")
    if "qa_outputs.weight" in names or "qa_outputs.bias" in names:
        heads.append("question_answering")
    return heads


def from_hf_state_dict(
    state_dict: Mapping[str, np.ndarray], config: DistilBertConfig, source: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Map a transformers state dict to npdistil's tensors (float32, laid out for NumPy).

    Returns the tensors and the task heads found. Raises CheckpointError, naming ``source`` and
    the tensor, for a missing, mis-shaped, non-float or non-finite tensor.
    """
    hf: dict[str, np.ndarray] = {}
    for name, array in state_dict.items():
        key = _canonical_name(name)
        key = key[len(_ENCODER_PREFIX) :] if key.startswith(_ENCODER_PREFIX) else key
        if key in hf:
            raise CheckpointError(f"{source}: tensor {name!r} appears twice")
        hf[key] = array

    heads = _detect_heads(set(hf), config)
    n_labels = _n_labels(hf, config, source)
    table = _encoder_table(config)
    tables = _head_tables(config, n_labels)
    for head in heads:
        table |= tables["sequence_classification" if head == "multiple_choice" else head]

    used: set[str] = set()
    out: dict[str, np.ndarray] = {}
    for npd_name, src in table.items():
        parts = []
        for hf_name in src.hf_names:
            if hf_name not in hf:
                if npd_name == "embeddings.position" and config.sinusoidal_pos_embds:
                    break  # fixed table, made below
                raise CheckpointError(f"{source}: missing tensor {hf_name!r}")
            array = hf[hf_name]
            if tuple(array.shape) != src.hf_shape:
                raise CheckpointError(
                    f"{source}: tensor {hf_name!r} has shape {tuple(array.shape)}, "
                    f"expected {src.hf_shape} for this config"
                )
            parts.append(_as_float32(hf_name, array, source))
            used.add(hf_name)
        if not parts:
            out[npd_name] = sinusoidal_table(config.max_position_embeddings, config.dim)
        elif src.linear and npd_name.endswith(".weight"):
            out[npd_name] = np.concatenate([p.T for p in parts], axis=1)  # [out, in] -> [in, out]
        else:
            out[npd_name] = np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])

    if "masked_lm" in heads and "vocab_projector.weight" in hf:
        used.add("vocab_projector.weight")
        projector = hf["vocab_projector.weight"]
        if tuple(projector.shape) != (config.vocab_size, config.dim):
            raise CheckpointError(
                f"{source}: tensor 'vocab_projector.weight' has shape {tuple(projector.shape)}, "
                f"expected {(config.vocab_size, config.dim)}"
            )
        projector = _as_float32("vocab_projector.weight", projector, source)
        if not np.array_equal(projector, out["embeddings.word"]):  # untied: keep its own copy
            out[_UNTIED_PROJECTOR] = projector

    unused = sorted(n for n in hf if n not in used and not n.endswith(_IGNORED_SUFFIXES))
    if unused:
        shown = ", ".join(repr(n) for n in unused[:5]) + (" ..." if len(unused) > 5 else "")
        warnings.warn(
            f"{source}: ignoring {len(unused)} tensors npdistil does not use: {shown}",
            stacklevel=2,
        )
    return out, heads


def _n_labels(hf: Mapping[str, np.ndarray], config: DistilBertConfig, source: str) -> int:
    if "classifier.weight" not in hf:
        return len(config.id2label) or 2
    n = int(hf["classifier.weight"].shape[0])
    if config.id2label and len(config.id2label) != n and n != 1:
        raise CheckpointError(
            f"{source}: 'classifier.weight' has {n} outputs but config.id2label names "
            f"{len(config.id2label)} labels"
        )
    return n


# ---- npdistil tensors -> typed weights ---------------------------------------------------------


class Heads(NamedTuple):
    masked_lm: MaskedLMHead | None = None
    sequence_classification: SequenceClassificationHead | None = None
    multiple_choice: SequenceClassificationHead | None = None
    token_classification: TokenClassificationHead | None = None
    question_answering: QuestionAnsweringHead | None = None


class _Checked:
    """Takes tensors by npdistil name, checking each against the layout's expected shape."""

    def __init__(self, tensors: Mapping[str, np.ndarray], source: str) -> None:
        self.tensors, self.source = tensors, source

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.tensors:
            raise CheckpointError(f"{self.source}: missing tensor {name!r}")
        array = self.tensors[name]
        if tuple(array.shape) != shape or array.dtype != np.float32:
            raise CheckpointError(
                f"{self.source}: tensor {name!r} is {array.dtype}{list(array.shape)}, "
                f"expected float32{list(shape)}"
            )
        return array

    def linear(self, name: str, n_in: int, n_out: int) -> Linear:
        return Linear(self.get(f"{name}.weight", (n_in, n_out)), self.get(f"{name}.bias", (n_out,)))

    def norm(self, name: str, d: int) -> LayerNorm:
        return LayerNorm(self.get(f"{name}.weight", (d,)), self.get(f"{name}.bias", (d,)))


def build_weights(
    tensors: Mapping[str, np.ndarray], config: DistilBertConfig, source: str
) -> Weights:
    """The encoder's typed weights, viewing (not copying) the given arrays."""
    t = _Checked(tensors, source)
    d, f = config.dim, config.hidden_dim
    embeddings = Embeddings(
        word=t.get("embeddings.word", (config.vocab_size, d)),
        position=t.get("embeddings.position", (config.max_position_embeddings, d)),
        norm=t.norm("embeddings.norm", d),
    )
    blocks = tuple(
        Block(
            qkv=t.linear(f"blocks.{i}.qkv", d, 3 * d),
            out=t.linear(f"blocks.{i}.out", d, d),
            attention_norm=t.norm(f"blocks.{i}.attention_norm", d),
            ffn_in=t.linear(f"blocks.{i}.ffn_in", d, f),
            ffn_out=t.linear(f"blocks.{i}.ffn_out", f, d),
            output_norm=t.norm(f"blocks.{i}.output_norm", d),
        )
        for i in range(config.n_layers)
    )
    return Weights(embeddings, blocks)


def build_heads(
    tensors: Mapping[str, np.ndarray],
    config: DistilBertConfig,
    kinds: list[str],
    source: str,
) -> Heads:
    """The typed task heads named in ``kinds`` (from the file's metadata)."""
    t = _Checked(tensors, source)
    d = config.dim
    heads: dict[str, object] = {}
    for kind in kinds:
        if kind == "masked_lm":
            if _UNTIED_PROJECTOR in tensors:
                projector = t.get(_UNTIED_PROJECTOR, (config.vocab_size, d)).T  # [V, D] -> [D, V]
            else:
                projector = t.get("embeddings.word", (config.vocab_size, d)).T  # tied
            heads[kind] = MaskedLMHead(
                transform=t.linear("heads.mlm.transform", d, d),
                norm=t.norm("heads.mlm.norm", d),
                projector=Linear(
                    projector, t.get("heads.mlm.projector.bias", (config.vocab_size,))
                ),
            )
        elif kind in ("sequence_classification", "multiple_choice"):
            n = _labels_in(tensors, "heads.classifier.bias", source)
            heads[kind] = SequenceClassificationHead(
                pre_classifier=t.linear("heads.pre_classifier", d, d),
                classifier=t.linear("heads.classifier", d, n),
            )
        elif kind == "token_classification":
            n = _labels_in(tensors, "heads.classifier.bias", source)
            heads[kind] = TokenClassificationHead(t.linear("heads.classifier", d, n))
        elif kind == "question_answering":
            heads[kind] = QuestionAnsweringHead(t.linear("heads.qa_outputs", d, 2))
        else:
            raise CheckpointError(f"{source}: unknown task head {kind!r}")
    return Heads(**heads)  # type: ignore[arg-type]


def _labels_in(tensors: Mapping[str, np.ndarray], name: str, source: str) -> int:
    if name not in tensors or tensors[name].ndim != 1:
        raise CheckpointError(f"{source}: missing or malformed tensor {name!r}")
    return int(tensors[name].shape[0])
