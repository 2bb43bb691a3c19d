"""The DistilBERT configuration: one frozen dataclass with the Hugging Face field names."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["DistilBertConfig"]

# Activations npdistil implements, by their Hugging Face names.
ACTIVATIONS = ("gelu", "relu")


@dataclass(frozen=True)
class DistilBertConfig:
    """Shape and behaviour of a DistilBERT model; defaults are those of `distilbert-base-cased`.

    >>> DistilBertConfig().head_dim
    64
    """

    vocab_size: int = 28996  # cased WordPiece vocabulary
    dim: int = 768  # D, the model width
    # Half of BERT-base's 12. The "distil" in the name is how it was trained, by knowledge
    # distillation from BERT-base, not this halving (docs/distilbert-and-bert.md).
    n_layers: int = 6
    n_heads: int = 12  # H; each head is dim / n_heads = 64 wide
    hidden_dim: int = 3072  # F, the feed-forward width (4 * dim)
    max_position_embeddings: int = 512  # longest input, in tokens, [CLS] and [SEP] included
    sinusoidal_pos_embds: bool = False  # False: learned position table (all released checkpoints)
    activation: str = "gelu"  # HF "gelu" is the exact erf form, not the tanh approximation
    pad_token_id: int = 0
    # Not in config.json: transformers hard-codes eps 1e-12 for every DistilBERT LayerNorm.
    layer_norm_eps: float = 1e-12
    # Task heads: the label names of classification heads, by index.
    id2label: dict[int, str] = field(default_factory=dict, hash=False, compare=False)
    architectures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
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

    @property
    def head_dim(self) -> int:
        """Dh, the width of one attention head."""
        return self.dim // self.n_heads

    @property
    def attention_scale(self) -> float:
        """Scores are divided by sqrt(Dh), as in "Attention is all you need"."""
        return 1.0 / math.sqrt(self.head_dim)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> DistilBertConfig:
        """Build from a Hugging Face ``config.json`` dict, refusing anything not DistilBERT."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        model_type = data.get("model_type")
        if model_type != "distilbert":
            raise ConfigError(
                f"{source}: model_type is {model_type!r}, not 'distilbert'; npdistil runs only "
                "DistilBERT checkpoints"
            )
        known = {f for f in cls.__dataclass_fields__ if f not in ("id2label", "architectures")}
        kwargs: dict[str, Any] = {k: data[k] for k in known if k in data}
        labels = data.get("id2label") or {}
        try:
            kwargs["id2label"] = {int(k): str(v) for k, v in labels.items()}
        except (AttributeError, ValueError) as exc:
            raise ConfigError(f"{source}: id2label must map integers to names") from exc
        kwargs["architectures"] = tuple(data.get("architectures") or ())
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_json_file(cls, path: str | Path) -> DistilBertConfig:
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
        """The Hugging Face ``config.json`` form (with ``model_type``)."""
        data = asdict(self)
        data["architectures"] = list(self.architectures)
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        data["model_type"] = "distilbert"
        return data
