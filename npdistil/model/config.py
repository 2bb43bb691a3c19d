"""The model configuration: one frozen dataclass with the Hugging Face field names.

DistilBERT, BERT, RoBERTa (XLM-RoBERTa, CamemBERT) and MPNet run the same forward pass; what
differs between them is data. The fields carry DistilBERT's ``config.json`` names (``dim``,
``n_heads``, ...); the other families' ``config.json`` say the same things under BERT's names
(``hidden_size``, ``num_attention_heads``, ...), mapped onto these fields by ``from_dict`` and
back by ``to_dict``. BERT adds token-type ("segment") embeddings (``type_vocab_size`` > 0) and a
pooler; RoBERTa numbers positions from ``pad_token_id + 1``; MPNet does too, has no token
types, and adds a relative position bias to every layer's attention scores
(``relative_attention_num_buckets``). Their tensors have other names (weights/layout.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["EncoderConfig", "DistilBertConfig", "MODEL_TYPES"]

MODEL_TYPES = ("distilbert", "bert", "roberta", "xlm-roberta", "camembert", "mpnet")
# How people write each family's name (Model's repr, messages).
FAMILY_NAMES = {
    "distilbert": "DistilBERT",
    "bert": "BERT",
    "roberta": "RoBERTa",
    "xlm-roberta": "XLM-RoBERTa",
    "camembert": "CamemBERT",
    "mpnet": "MPNet",
}
# Families whose positions count from the padding token's id + 1, as fairseq numbered them:
# transformers' create_position_ids_from_input_ids (RoBERTa's and MPNet's embeddings).
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")
# MPNet's encoder calls its bucket function with num_buckets=32, whatever the config holds.
MPNET_BUCKETS = 32
# Activations npdistil implements, by their Hugging Face names.
ACTIVATIONS = ("gelu", "relu")
# transformers' problem types of a sequence classifier (None: decided by the number of labels).
PROBLEM_TYPES = (None, "single_label_classification", "multi_label_classification", "regression")

# BERT's config.json name -> the field it fills (the same meaning under DistilBERT's name).
_BERT_NAMES = {
    "vocab_size": "vocab_size",
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "intermediate_size": "hidden_dim",
    "max_position_embeddings": "max_position_embeddings",
    "hidden_act": "activation",
    "pad_token_id": "pad_token_id",
    "layer_norm_eps": "layer_norm_eps",
    "type_vocab_size": "type_vocab_size",
    "relative_attention_num_buckets": "relative_attention_num_buckets",
}
# BERT config.json values npdistil cannot run, by field: the only value it accepts.
_BERT_REQUIRED = {
    "position_embedding_type": "absolute",  # relative_key(_query) adds distance terms to scores
    "is_decoder": False,  # a decoder masks future tokens
    "add_cross_attention": False,
}


@dataclass(frozen=True)
class EncoderConfig:
    """Shape and behaviour of an encoder of any family npdistil runs; defaults are those of
    ``distilbert-base-cased``.

    >>> EncoderConfig().head_dim
    64
    >>> EncoderConfig.from_dict({"model_type": "bert", "hidden_size": 384,
    ...     "num_attention_heads": 12, "num_hidden_layers": 6}).n_heads
    12
    """

    model_type: str = "distilbert"  # one of MODEL_TYPES: the tensor names and the heads
    vocab_size: int = 28996  # cased WordPiece vocabulary
    dim: int = 768  # D, the model width (BERT: hidden_size)
    # Half of BERT-base's 12 (BERT: num_hidden_layers). The "distil" in the name is how it was
    # trained, by knowledge distillation from BERT-base, not this halving
    # (docs/distilbert-and-bert.md).
    n_layers: int = 6
    n_heads: int = 12  # H; each head is dim / n_heads = 64 wide (num_attention_heads)
    hidden_dim: int = 3072  # F, the feed-forward width, 4 * dim (BERT: intermediate_size)
    # Rows of the position table: the longest input, in tokens, [CLS] and [SEP] included, for
    # DistilBERT and BERT; RoBERTa and MPNet skip the first pad_token_id + 1 rows (514 rows:
    # 512 tokens). ``max_tokens`` is what fits.
    max_position_embeddings: int = 512
    sinusoidal_pos_embds: bool = False  # False: learned position table (all released checkpoints)
    activation: str = "gelu"  # HF "gelu" is the exact erf form, not tanh (BERT: hidden_act)
    pad_token_id: int = 0
    # Not in DistilBERT's config.json: transformers hard-codes eps 1e-12 for its LayerNorms.
    # BERT's config.json has it (1e-12 in every released checkpoint).
    layer_norm_eps: float = 1e-12
    # Token-type ("segment") embeddings: 2 in BERT (sentence A and B of a pair), 0 in DistilBERT,
    # which has none.
    type_vocab_size: int = 0
    # MPNet's relative position bias: distances between query and key fall into this many
    # buckets, each with a learned bias per head added to the scores (T5's scheme); 0: none.
    relative_attention_num_buckets: int = 0
    # Task heads: the label names of classification heads, by index.
    id2label: dict[int, str] = field(default_factory=dict, hash=False, compare=False)
    # How a sequence classifier's logits become scores: "single_label_classification" (softmax),
    # "multi_label_classification" (sigmoid per label) or "regression" (the raw value); None
    # lets the number of labels decide, as transformers' text-classification pipeline does.
    problem_type: str | None = None
    architectures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(
                f"config: model_type is {self.model_type!r}; npdistil runs {MODEL_TYPES} "
                "checkpoints"
            )
        for name in (
            "vocab_size",
            "dim",
            "n_layers",
            "n_heads",
            "hidden_dim",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(
                    f"config field {name!r} must be a positive integer, got {value!r}"
                )
        if self.dim % self.n_heads:
            raise ConfigError(f"config: dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"config: activation {self.activation!r} is not supported (only {ACTIVATIONS})"
            )
        if not isinstance(self.sinusoidal_pos_embds, bool):
            raise ConfigError("config field 'sinusoidal_pos_embds' must be true or false")
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ConfigError(f"config field 'layer_norm_eps' must be in (0, 1), got {eps!r}")
        types = self.type_vocab_size
        if not isinstance(types, int) or isinstance(types, bool) or types < 0:
            raise ConfigError(
                f"config field 'type_vocab_size' must be a non-negative integer, got {types!r}"
            )
        if self.model_type in ("distilbert", "mpnet") and types:
            raise ConfigError(
                f"config: {self.family} has no token-type embeddings (type_vocab_size 0)"
            )
        buckets = self.relative_attention_num_buckets
        if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 0:
            raise ConfigError(
                "config field 'relative_attention_num_buckets' must be a non-negative integer, "
                f"got {buckets!r}"
            )
        if self.model_type == "mpnet" and buckets != MPNET_BUCKETS:
            raise ConfigError(
                f"config: relative_attention_num_buckets is {buckets}, but transformers computes "
                f"{MPNET_BUCKETS} buckets whatever the config says (MPNetEncoder): npdistil runs "
                f"MPNet with {MPNET_BUCKETS}"
            )
        if self.model_type != "mpnet" and buckets:
            raise ConfigError(f"config: {self.family} has no relative position bias")
        if self.max_tokens < 1:
            raise ConfigError(
                f"config: max_position_embeddings {self.max_position_embeddings} leaves no "
                f"position for a token (positions start at {self.position_offset})"
            )
        if self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(
                f"config: problem_type {self.problem_type!r} is not one of {PROBLEM_TYPES}"
            )

    @property
    def family(self) -> str:
        """The model family as people write it: "DistilBERT", "BERT", "RoBERTa", "MPNet", ...

        >>> EncoderConfig(model_type="bert").family
        'BERT'
        """
        return FAMILY_NAMES[self.model_type]

    @property
    def position_offset(self) -> int:
        """The position-table row of a sequence's first token: 0, or for RoBERTa and MPNet the
        padding index + 1 (pads themselves take the padding index's row).

        >>> EncoderConfig(model_type="roberta", pad_token_id=1).position_offset
        2
        """
        return self.padding_idx + 1 if self.model_type in OFFSET_POSITIONS else 0

    @property
    def padding_idx(self) -> int:
        """The token id whose tokens are padding when positions are counted (RoBERTa, MPNet):
        ``pad_token_id``; MPNet's embeddings hard-code 1 (transformers' MPNetEmbeddings)."""
        return 1 if self.model_type == "mpnet" else self.pad_token_id

    @property
    def max_tokens(self) -> int:
        """The longest input the position table allows, special tokens included: 512 for
        distilbert-base-cased (512 rows) and for roberta-base (514 rows, from row 2)."""
        return self.max_position_embeddings - self.position_offset

    @property
    def head_dim(self) -> int:
        """Dh, the width of one attention head."""
        return self.dim // self.n_heads

    @property
    def label2id(self) -> dict[str, int]:
        """Label name -> index, the inverse of ``id2label``."""
        return {name: i for i, name in self.id2label.items()}

    @property
    def attention_scale(self) -> float:
        """Scores are divided by sqrt(Dh), as in "Attention is all you need"."""
        return 1.0 / math.sqrt(self.head_dim)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> EncoderConfig:
        """Build from a Hugging Face ``config.json`` dict (DistilBERT's names, or BERT's for
        every other family), refusing what npdistil cannot run with a ConfigError naming the
        field."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        model_type = data.get("model_type")
        if model_type == "distilbert":
            skip = ("id2label", "architectures", "problem_type")
            known = {f for f in cls.__dataclass_fields__ if f not in skip}
            kwargs: dict[str, Any] = {k: data[k] for k in known if k in data}
        elif model_type in MODEL_TYPES:
            kwargs = _bert_fields(data, model_type, source)
        else:
            raise ConfigError(
                f"{source}: model_type is {model_type!r}; npdistil runs "
                f"{', '.join(FAMILY_NAMES.values())} checkpoints (model_type one of "
                f"{', '.join(repr(t) for t in MODEL_TYPES)})"
            )
        kwargs["model_type"] = model_type
        labels = data.get("id2label") or {}
        try:
            kwargs["id2label"] = {int(k): str(v) for k, v in labels.items()}
        except (AttributeError, ValueError) as exc:
            raise ConfigError(f"{source}: id2label must map integers to names") from exc
        kwargs["architectures"] = tuple(data.get("architectures") or ())
        kwargs["problem_type"] = data.get("problem_type")
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_json_file(cls, path: str | Path) -> EncoderConfig:
        """Read a ``config.json``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable JSON config ({exc})") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The Hugging Face ``config.json`` form, in the names of its ``model_type``;
        ``from_dict(config.to_dict()) == config``."""
        data = asdict(self)
        data["architectures"] = list(self.architectures)
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        if self.model_type == "distilbert":
            del data["type_vocab_size"]
            return data
        out = {hf: data.pop(ours) for hf, ours in _BERT_NAMES.items()}
        out |= {k: data[k] for k in ("model_type", "architectures", "id2label", "problem_type")}
        if self.model_type == "mpnet":
            del out["type_vocab_size"]
        else:
            del out["relative_attention_num_buckets"]
            out["position_embedding_type"] = "absolute"
        return out


def _bert_fields(data: dict[str, Any], model_type: str, source: str) -> dict[str, Any]:
    """A ``config.json`` in BERT's names (BERT, RoBERTa, XLM-R, CamemBERT, MPNet), under the
    dataclass's field names."""
    for name, required in _BERT_REQUIRED.items():
        value = data.get(name, required)
        if value != required:
            raise ConfigError(
                f"{source}: {name} {value!r} is not supported (npdistil runs {name} {required!r})"
            )
    act = data.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ConfigError(f"{source}: hidden_act {act!r} is not supported (only {ACTIVATIONS})")
    kwargs = {ours: data[hf] for hf, ours in _BERT_NAMES.items() if hf in data}
    # transformers' config defaults (BertConfig, RobertaConfig, MPNetConfig, ...), for fields a
    # config.json may leave out.
    kwargs.setdefault("vocab_size", _DEFAULT_VOCAB.get(model_type, 30522))
    kwargs.setdefault("dim", 768)
    kwargs.setdefault("n_layers", 12)
    kwargs.setdefault("n_heads", 12)
    kwargs.setdefault("hidden_dim", 3072)
    if model_type == "mpnet":  # no token types; its relative bias has 32 buckets by default
        kwargs.setdefault("relative_attention_num_buckets", MPNET_BUCKETS)
        kwargs["type_vocab_size"] = data.get("type_vocab_size", 0)
    else:
        kwargs.setdefault("type_vocab_size", 2)
        if "relative_attention_num_buckets" in kwargs:
            raise ConfigError(
                f"{source}: relative_attention_num_buckets is an MPNet field; {model_type} has "
                "no relative position bias"
            )
    if model_type in OFFSET_POSITIONS:  # their configs' default padding token: <pad> = 1
        kwargs.setdefault("pad_token_id", 1)
    return kwargs


_DEFAULT_VOCAB = {"roberta": 50265, "mpnet": 30527}


# The name npdistil had when it ran DistilBERT only; the same class.
DistilBertConfig = EncoderConfig
