"""Looking inside a model: every stage of the forward pass, the weight tree, attention maps.

What ``npdistil trace``, ``npdistil info --tensors`` and ``npdistil attention`` print, as
functions:

- ``trace(model, text)``: one text through ``reference.forward``, with the shape, mean, standard
  deviation and largest magnitude of every intermediate result (``format_trace`` tabulates them);
- ``weight_tree(model)``: the typed weights as a tree, with shapes and parameter counts;
- ``attention_map(probs, tokens)``: one head's attention probabilities as a text heatmap, and
  ``attention_png(...)`` the heads of a layer as a PNG (needs matplotlib: ``npdistil[viz]``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .errors import InputError, NpdistilError
from .model import reference
from .weights.storage import replace_atomic

__all__ = [
    "Stage",
    "trace",
    "format_trace",
    "weight_tree",
    "attentions",
    "attention_map",
    "attention_png",
]


# ---- trace ---------------------------------------------------------------------------------------


class Stage(NamedTuple):
    """Statistics of one intermediate result over all its elements."""

    name: str  # "embeddings", "layer.0.attention.scores", ... (see reference.py)
    shape: tuple[int, ...]
    mean: float
    std: float
    max_abs: float  # the largest |x|: where float32 range or precision could run short


def trace(model: Any, text: str) -> list[Stage]:
    """Every stage of the forward pass of one text, in order.

    ``model`` is a loaded ``npdistil.Model`` (anything with ``tokenizer``, ``weights``
    and ``config``). The text runs through ``npdistil.reference`` (float64, no padding).
    """
    batch = model.tokenizer([text])
    stages: list[Stage] = []

    def record(name: str, x: np.ndarray) -> None:
        stages.append(Stage(name, x.shape, float(x.mean()), float(x.std()), float(np.abs(x).max())))

    reference.forward(model, batch.input_ids, batch.attention_mask, trace=record)
    return stages


def format_trace(stages: Sequence[Stage]) -> str:
    """The stages as a table: name, shape, mean, std, max |x|."""
    lines = [f"{'stage':<28} {'shape':<18} {'mean':>10} {'std':>10} {'max |x|':>10}"]
    for s in stages:
        shape = "[" + ", ".join(str(n) for n in s.shape) + "]"
        lines.append(f"{s.name:<28} {shape:<18} {s.mean:>+10.4f} {s.std:>10.4f} {s.max_abs:>10.4f}")
    return "\n".join(lines)


# ---- the weight tree -----------------------------------------------------------------------------


def _leaves(path: str, node: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(node, np.ndarray):
        return [(path, node)]
    if hasattr(node, "_fields"):
        items = [(f, v) for f, v in zip(node._fields, node, strict=True) if v is not None]
        return [leaf for f, v in items for leaf in _leaves(f"{path}.{f}", v)]
    if isinstance(node, tuple):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(f"{path}.{i}", v)]
    return []


def _memory(a: np.ndarray) -> tuple[int, int]:  # where an array's numbers are: tied weights
    return a.__array_interface__["data"][0], a.size  # (a table and its transpose) share it


def _shape(a: np.ndarray, owner: dict[tuple[int, int], str], path: str) -> str:
    first = owner.setdefault(_memory(a), path)
    shape = "[" + ", ".join(str(n) for n in a.shape) + "]"
    return shape if first == path else f"{shape} (tied: {first.removeprefix('weights.')})"


def _tree(path: str, node: Any, depth: int, owner: dict, lines: list[str]) -> None:
    pad, name = "  " * depth, path.rsplit(".", 1)[-1]
    column = f"{pad}{name:<{30 - len(pad)}}"
    if isinstance(node, np.ndarray):
        lines.append(f"{column} {_shape(node, owner, path)}")
    elif hasattr(node, "_fields") and all(isinstance(v, np.ndarray) for v in node):
        # A Linear or a LayerNorm: weight and bias on one line.
        fields = zip(node._fields, node, strict=True)
        parts = ", ".join(f"{f} {_shape(v, owner, f'{path}.{f}')}" for f, v in fields)
        lines.append(f"{column} {type(node).__name__}: {parts}")
    elif hasattr(node, "_fields"):
        lines.append(f"{pad}{name}")
        for field, value in zip(node._fields, node, strict=True):
            if value is not None:
                _tree(f"{path}.{field}", value, depth + 1, owner, lines)
    elif isinstance(node, tuple) and node:  # the blocks: the same shapes n_layers times
        size = sum(a.size for _, a in _leaves("", node[0]))
        kind = type(node[0]).__name__
        lines.append(f"{pad}{name}: {len(node)} x {kind}, {size:,} parameters each")
        for field, value in zip(node[0]._fields, node[0], strict=True):
            _tree(f"{path}.0.{field}", value, depth + 1, owner, lines)


def weight_tree(model: Any) -> str:
    """The encoder's weights (and the task heads the checkpoint has) as an indented tree with
    every tensor's shape, in npdistil's layout: Linear weights [in, out], q, k and v fused.
    Tied tensors (the masked-LM projector is the word table) are counted once."""
    parts = [("weights", model.weights)]
    heads = getattr(model, "heads", None)
    if heads is not None and any(h is not None for h in heads):
        parts.append(("heads", heads))
    arrays = {_memory(a): a.size for name, node in parts for _, a in _leaves(name, node)}
    total = sum(arrays.values())
    lines = [f"{total:,} parameters, float32 ({total * 4 / 1e6:.1f} MB)"]
    owner: dict[tuple[int, int], str] = {}
    for name, node in parts:
        _tree(name, node, 0, owner, lines)
    return "\n".join(lines)


# ---- attention -----------------------------------------------------------------------------------

# Ten shades, lightest to darkest: a probability p gets _SHADES[min(9, int(10 * p))].
_SHADES = " .:-=+*#%@"


def attentions(model: Any, text: str) -> tuple[list[str], tuple[np.ndarray, ...]]:
    """One text's tokens and its attention probabilities, one [H, T, T] array per layer (rows:
    queries, columns: keys), from the fast path's ``output_attentions``."""
    batch = model.tokenizer([text])
    out = model(batch.input_ids, batch.attention_mask, output_attentions=True)
    return batch.tokens[0], tuple(a[0] for a in out.attentions)


def attention_map(probs: np.ndarray, tokens: Sequence[str], title: str = "") -> str:
    """One head's [T, T] probabilities as a text heatmap: a row per query token, a column per
    key token, darker where the query attends more (``' '`` below 0.1 ... ``'@'`` 0.9 and up).

    >>> print(attention_map(np.array([[1.0, 0.0], [0.25, 0.75]]), ["[CLS]", "hi"]))
              0 1
     0  [CLS] @
     1     hi : #
    """
    probs = np.asarray(probs)
    t = len(tokens)
    if probs.shape != (t, t):
        raise InputError(f"attention map: probabilities {probs.shape} for {t} tokens")
    width = min(12, max((len(s) for s in tokens), default=1))
    label = 4 + width
    lines = [title] if title else []
    if t > 10:
        lines.append(
            " " * label + " " + " ".join(str(j // 10) if j >= 10 else " " for j in range(t))
        )
    lines.append(" " * label + " " + " ".join(str(j % 10) for j in range(t)))
    levels = np.minimum(9, (np.clip(probs, 0, 1) * 10).astype(int))  # [T, T] -> 0..9
    for i, token in enumerate(tokens):
        cells = " ".join(_SHADES[k] for k in levels[i]).rstrip()
        lines.append(f"{i:>2} {token[:width]:>{width + 1}} {cells}".rstrip())
    return "\n".join(lines)


def attention_png(
    path: str | os.PathLike[str],
    probs: np.ndarray,
    tokens: Sequence[str],
    title: str = "",
    head_names: Sequence[str] | None = None,
) -> None:
    """Heads' [n, T, T] probabilities as heatmaps side by side in one PNG, written atomically.
    Needs matplotlib (``pip install "npdistil[viz]"``)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise NpdistilError(
            f"{path}: writing a PNG needs matplotlib (pip install 'npdistil[viz]')"
        ) from None
    probs = np.asarray(probs)
    n, t = probs.shape[0], len(tokens)
    names = list(head_names) if head_names is not None else [f"head {h}" for h in range(n)]
    cols = min(n, 4)
    rows = -(-n // cols)
    size = 1.2 + 0.28 * t
    fig = Figure(figsize=(cols * size, rows * size + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_axis_off()
            continue
        image = ax.imshow(probs[k], vmin=0, vmax=1, cmap="viridis")
        ax.set_title(names[k], fontsize=9)
        ax.set_xticks(range(t), list(tokens), rotation=90, fontsize=7)
        ax.set_yticks(range(t), list(tokens), fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention probability (rows: queries)")
    if title:
        fig.suptitle(title)
    replace_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
