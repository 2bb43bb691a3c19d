"""Where every tensor lives: Hugging Face checkpoint names -> npdistil names -> typed weights.

DistilBERT, BERT, RoBERTa (XLM-RoBERTa, CamemBERT) and MPNet hold the same weights under
different names (MPNet one more: its relative position bias); ``NAMES`` says, for each model
type, what the checkpoint calls each part, and ``_encoder_table`` / ``_head_tables`` turn that
into one table giving, for every tensor of npdistil's file, which checkpoint tensors it comes
from, their shapes, and how they are laid out for NumPy: PyTorch stores a Linear's weight as
[out, in] for ``x @ W.T``; npdistil stores it once as [in, out] for ``x @ W``, and puts q, k and
v side by side so that one matmul makes all three. Conversion checks every shape while copying;
loading checks them again, so a renamed or mis-shaped tensor fails at load time, naming the
tensor, never in the middle of a forward pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from ..errors import CheckpointError
from ..model.config import EncoderConfig
from ..model.numerics import Int8Array, LayerNorm, Linear, Matrix
from ..model.transformer import (
    Block,
    Embeddings,
    MaskedLMHead,
    Pooler,
    QuestionAnsweringHead,
    SequenceClassificationHead,
    TokenClassificationHead,
    Weights,
)

__all__ = ["HEAD_KINDS", "NAMES", "Heads", "from_hf_state_dict", "build_weights", "build_heads"]

# Buffers some checkpoints carry that are not weights.
_IGNORED_SUFFIXES = ("position_ids", "token_type_ids")

HEAD_KINDS = (
    "pooler",
    "masked_lm",
    "sequence_classification",
    "multiple_choice",
    "token_classification",
    "question_answering",
)


class Names(NamedTuple):
    """What one model type's checkpoints call each part (Linear and LayerNorm names without
    their ``.weight`` / ``.bias``)."""

    prefix: str  # the encoder's prefix in task models (the base model has none)
    word: str
    position: str
    token_type: str | None  # None: no token-type embeddings
    embeddings_norm: str
    layer: str  # the prefix of block i, with "{i}"
    qkv: tuple[str, str, str]
    out: str
    attention_norm: str
    ffn_in: str
    ffn_out: str
    output_norm: str
    relative_bias: str | None  # MPNet's [buckets, H] relative position bias; None: none
    pooler: str | None  # None: no pooler
    # Heads (no prefix). The MLM decoder's bias may be saved under either name.
    mlm_transform: str
    mlm_norm: str
    mlm_bias: tuple[str, ...]
    mlm_decoder: str  # the decoder's weight: tied to the word embeddings, or its own
    # After mlm_transform: None is the config's activation (DistilBERT, BERT); RoBERTa's and
    # MPNet's LM heads call gelu whatever the config says.
    mlm_activation: str | None
    # The sequence classifier: [CLS] -> seq_pre -> activation -> seq_classifier. seq_pre None
    # is the pooler (BERT); RoBERTa and MPNet have a head of their own, dense -> out_proj.
    seq_pre: str | None
    seq_classifier: str
    choice_pre: str | None  # the same for multiple choice (its classifier is "classifier")
    classifier_activation: str  # after seq_pre / choice_pre (or the pooler)


NAMES = {
    "distilbert": Names(
        prefix="distilbert.",
        word="embeddings.word_embeddings.weight",
        position="embeddings.position_embeddings.weight",
        token_type=None,
        embeddings_norm="embeddings.LayerNorm",
        layer="transformer.layer.{i}.",
        qkv=("attention.q_lin", "attention.k_lin", "attention.v_lin"),
        out="attention.out_lin",
        attention_norm="sa_layer_norm",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        output_norm="output_layer_norm",
        relative_bias=None,
        pooler=None,
        mlm_transform="vocab_transform",
        mlm_norm="vocab_layer_norm",
        mlm_bias=("vocab_projector.bias",),
        mlm_decoder="vocab_projector.weight",
        mlm_activation=None,
        seq_pre="pre_classifier",
        seq_classifier="classifier",
        choice_pre="pre_classifier",
        classifier_activation="relu",
    ),
    "bert": Names(
        prefix="bert.",
        word="embeddings.word_embeddings.weight",
        position="embeddings.position_embeddings.weight",
        token_type="embeddings.token_type_embeddings.weight",
        embeddings_norm="embeddings.LayerNorm",
        layer="encoder.layer.{i}.",
        qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
        out="attention.output.dense",
        attention_norm="attention.output.LayerNorm",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
        output_norm="output.LayerNorm",
        relative_bias=None,
        pooler="pooler.dense",
        mlm_transform="cls.predictions.transform.dense",
        mlm_norm="cls.predictions.transform.LayerNorm",
        mlm_bias=("cls.predictions.bias", "cls.predictions.decoder.bias"),
        mlm_decoder="cls.predictions.decoder.weight",
        mlm_activation=None,
        seq_pre=None,
        seq_classifier="classifier",
        choice_pre=None,
        classifier_activation="tanh",
    ),
}
# RoBERTa: BERT's encoder under "roberta.", a head of its own for sequences and the LM head's.
NAMES["roberta"] = NAMES["bert"]._replace(
    prefix="roberta.",
    mlm_transform="lm_head.dense",
    mlm_norm="lm_head.layer_norm",
    mlm_bias=("lm_head.bias", "lm_head.decoder.bias"),
    mlm_decoder="lm_head.decoder.weight",
    mlm_activation="gelu",
    seq_pre="classifier.dense",
    seq_classifier="classifier.out_proj",
)
# transformers' XLM-RoBERTa and CamemBERT are RoBERTa's code under other names.
NAMES["xlm-roberta"] = NAMES["camembert"] = NAMES["roberta"]
# MPNet: RoBERTa's heads; its attention is "attention.attn.{q,k,v,o}" and it has no token types.
NAMES["mpnet"] = NAMES["roberta"]._replace(
    prefix="mpnet.",
    token_type=None,
    qkv=("attention.attn.q", "attention.attn.k", "attention.attn.v"),
    out="attention.attn.o",
    attention_norm="attention.LayerNorm",
    relative_bias="encoder.relative_attention_bias.weight",
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


def _encoder_table(c: EncoderConfig) -> dict[str, Source]:
    n, d, f = NAMES[c.model_type], c.dim, c.hidden_dim
    table = {
        "embeddings.word": Source((n.word,), (c.vocab_size, d), False),
        "embeddings.position": Source((n.position,), (c.max_position_embeddings, d), False),
        **_norm("embeddings.norm", n.embeddings_norm, d),
    }
    if n.token_type is not None:
        table["embeddings.token_type"] = Source((n.token_type,), (c.type_vocab_size, d), False)
    for i in range(c.n_layers):
        hf = n.layer.format(i=i)
        qkv = tuple(hf + name for name in n.qkv)
        table[f"blocks.{i}.qkv.weight"] = Source(tuple(f"{n}.weight" for n in qkv), (d, d), True)
        table[f"blocks.{i}.qkv.bias"] = Source(tuple(f"{n}.bias" for n in qkv), (d,), True)
        table |= _linear(f"blocks.{i}.out", hf + n.out, d, d)
        table |= _norm(f"blocks.{i}.attention_norm", hf + n.attention_norm, d)
        table |= _linear(f"blocks.{i}.ffn_in", hf + n.ffn_in, d, f)
        table |= _linear(f"blocks.{i}.ffn_out", hf + n.ffn_out, f, d)
        table |= _norm(f"blocks.{i}.output_norm", hf + n.output_norm, d)
    if n.relative_bias is not None:
        shape = (c.relative_attention_num_buckets, c.n_heads)
        table["relative_attention_bias"] = Source((n.relative_bias,), shape, False)
    return table


def _head_tables(c: EncoderConfig, n_labels: int, mlm_bias: str) -> dict[str, dict[str, Source]]:
    n, d = NAMES[c.model_type], c.dim

    def projected(pre: str | None, classifier: str) -> dict[str, Source]:
        head = _linear("heads.classifier", classifier, d, n_labels)
        if pre is None:  # BERT: the pooler's projection (stored once, as the pooler head)
            return head
        return _linear("heads.pre_classifier", pre, d, d) | head  # a projection of its own

    return {
        "pooler": _linear("heads.pooler", n.pooler, d, d) if n.pooler else {},
        "masked_lm": {
            **_linear("heads.mlm.transform", n.mlm_transform, d, d),
            **_norm("heads.mlm.norm", n.mlm_norm, d),
            "heads.mlm.projector.bias": Source((mlm_bias,), (c.vocab_size,), False),
        },
        "sequence_classification": projected(n.seq_pre, n.seq_classifier),
        "multiple_choice": projected(n.choice_pre, "classifier"),
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


def _has(names: set[str], *parts: str | None) -> bool:
    """Whether the checkpoint has a tensor of any of the named parts (Linear, norm or plain)."""
    return any(
        p is not None and (p in names or f"{p}.weight" in names or f"{p}.bias" in names)
        for p in parts
    )


def _detect_heads(names: set[str], config: EncoderConfig) -> list[str]:
    n = NAMES[config.model_type]
    arch = " ".join(config.architectures)
    heads = []
    if _has(names, n.pooler):
        heads.append("pooler")
    mlm_parts = (n.mlm_transform, n.mlm_norm, *n.mlm_bias)
    if any(name.startswith(mlm_parts) for name in names):
        heads.append("masked_lm")
    own_head = n.seq_classifier != "classifier"  # RoBERTa, MPNet: classifier.out_proj
    if own_head and _has(names, n.seq_classifier):
        heads.append("sequence_classification")
    elif _has(names, "classifier"):
        # The classifier's input says which: [CLS] through a projection (DistilBERT's
        # pre_classifier, the pooler) for sequences or choices (RoBERTa, MPNet: choices only),
        # every token for token classification.
        projected = _has(names, n.choice_pre or n.pooler)
        if "MultipleChoice" in arch or (own_head and projected):
            heads.append("multiple_choice")
        elif "TokenClassification" in arch:
            heads.append("token_classification")
        elif "SequenceClassification" in arch or projected:
            heads.append("sequence_classification")
        else:
            heads.append("token_classification")
    if _has(names, "qa_outputs"):
        heads.append("question_answering")
    for kind, pre in (("sequence_classification", n.seq_pre), ("multiple_choice", n.choice_pre)):
        if kind in heads and pre is None and "pooler" not in heads:
            raise CheckpointError(
                f"a {config.family} {kind.replace('_', ' ')} head needs the pooler "
                f"({n.pooler}), which is missing"
            )
    return heads


def from_hf_state_dict(
    state_dict: Mapping[str, np.ndarray], config: EncoderConfig, source: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Map a transformers state dict to npdistil's tensors (float32, laid out for NumPy).

    Returns the tensors and the task heads found. Raises CheckpointError, naming ``source`` and
    the tensor, for a missing, mis-shaped, non-float or non-finite tensor.
    """
    names = NAMES[config.model_type]
    hf: dict[str, np.ndarray] = {}
    for name, array in state_dict.items():
        key = _canonical_name(name)
        key = key[len(names.prefix) :] if key.startswith(names.prefix) else key
        if key in hf:
            raise CheckpointError(f"{source}: tensor {name!r} appears twice")
        hf[key] = array

    try:
        heads = _detect_heads(set(hf), config)
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    n_labels = _n_labels(hf, config, names.seq_classifier, source)
    mlm_bias = next((b for b in names.mlm_bias if b in hf), names.mlm_bias[0])
    table = _encoder_table(config)
    tables = _head_tables(config, n_labels, mlm_bias)
    for head in heads:
        table |= tables[head]

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

    if "masked_lm" in heads:
        used.update(b for b in names.mlm_bias if b in hf)  # both names: one tied parameter
        if names.mlm_decoder in hf:
            used.add(names.mlm_decoder)
            projector = _checked_projector(hf[names.mlm_decoder], names.mlm_decoder, config, source)
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


def _checked_projector(
    projector: np.ndarray, name: str, config: EncoderConfig, source: str
) -> np.ndarray:
    if tuple(projector.shape) != (config.vocab_size, config.dim):
        raise CheckpointError(
            f"{source}: tensor {name!r} has shape {tuple(projector.shape)}, "
            f"expected {(config.vocab_size, config.dim)}"
        )
    return _as_float32(name, projector, source)


def _n_labels(
    hf: Mapping[str, np.ndarray], config: EncoderConfig, seq_classifier: str, source: str
) -> int:
    name = next((f"{c}.weight" for c in (seq_classifier, "classifier") if f"{c}.weight" in hf), "")
    if not name:
        return len(config.id2label) or 2
    n = int(hf[name].shape[0])
    if config.id2label and len(config.id2label) != n and n != 1:
        raise CheckpointError(
            f"{source}: {name!r} has {n} outputs but config.id2label names "
            f"{len(config.id2label)} labels"
        )
    return n


# ---- npdistil tensors -> typed weights ---------------------------------------------------------


class Heads(NamedTuple):
    pooler: Pooler | None = None
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

    def matrix(self, name: str, shape: tuple[int, int]) -> Matrix:
        """A big matrix: float32, or stored small (int8 with ``<name>.scale``, or float16)."""
        array = self.tensors.get(name)
        if array is not None and array.dtype == np.float16 and tuple(array.shape) == shape:
            return array
        if array is not None and array.dtype == np.int8 and tuple(array.shape) == shape:
            scale = self.tensors.get(f"{name}.scale")
            channels = [(1, shape[1]), (shape[0], 1)]  # per column ([in, out]) or per row ([V, D])
            if scale is None or scale.dtype != np.float32 or tuple(scale.shape) not in channels:
                raise CheckpointError(
                    f"{self.source}: int8 tensor {name!r} needs a float32 scale of shape "
                    f"{channels[0]} or {channels[1]} ({name + '.scale'!r})"
                )
            return Int8Array(array, scale)
        return self.get(name, shape)

    def linear(self, name: str, n_in: int, n_out: int) -> Linear:
        return Linear(
            self.matrix(f"{name}.weight", (n_in, n_out)), self.get(f"{name}.bias", (n_out,))
        )

    def norm(self, name: str, d: int) -> LayerNorm:
        return LayerNorm(self.get(f"{name}.weight", (d,)), self.get(f"{name}.bias", (d,)))


def build_weights(tensors: Mapping[str, np.ndarray], config: EncoderConfig, source: str) -> Weights:
    """The encoder's typed weights, viewing (not copying) the given arrays."""
    t = _Checked(tensors, source)
    d, f = config.dim, config.hidden_dim
    embeddings = Embeddings(
        word=t.matrix("embeddings.word", (config.vocab_size, d)),
        position=t.get("embeddings.position", (config.max_position_embeddings, d)),
        norm=t.norm("embeddings.norm", d),
        token_type=(
            t.get("embeddings.token_type", (config.type_vocab_size, d))
            if config.type_vocab_size
            else None
        ),
    )
    buckets = config.relative_attention_num_buckets
    relative = t.get("relative_attention_bias", (buckets, config.n_heads)) if buckets else None
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
    return Weights(embeddings, blocks, relative)


def build_heads(
    tensors: Mapping[str, np.ndarray],
    config: EncoderConfig,
    kinds: list[str],
    source: str,
) -> Heads:
    """The typed task heads named in ``kinds`` (from the file's metadata)."""
    t = _Checked(tensors, source)
    d = config.dim
    names = NAMES[config.model_type]
    heads: dict[str, object] = {}
    for kind in kinds:
        if kind == "pooler":
            heads[kind] = Pooler(t.linear("heads.pooler", d, d))
        elif kind == "masked_lm":
            if _UNTIED_PROJECTOR in tensors:
                projector = t.matrix(
                    _UNTIED_PROJECTOR, (config.vocab_size, d)
                ).T  # [V, D] -> [D, V]
            else:
                projector = t.matrix("embeddings.word", (config.vocab_size, d)).T  # tied
            heads[kind] = MaskedLMHead(
                transform=t.linear("heads.mlm.transform", d, d),
                norm=t.norm("heads.mlm.norm", d),
                projector=Linear(
                    projector, t.get("heads.mlm.projector.bias", (config.vocab_size,))
                ),
                activation=names.mlm_activation or config.activation,
            )
        elif kind in ("sequence_classification", "multiple_choice"):
            n = _labels_in(tensors, "heads.classifier.bias", source)
            own = names.seq_pre if kind == "sequence_classification" else names.choice_pre
            pre = "heads.pre_classifier" if own else "heads.pooler"
            heads[kind] = SequenceClassificationHead(
                pre_classifier=t.linear(pre, d, d),
                classifier=t.linear("heads.classifier", d, n),
                activation=names.classifier_activation,
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
