"""sentence-transformers models: what runs after the encoder, read from the folder once.

A sentence-transformers folder is a Hugging Face checkpoint plus a list of modules
(``modules.json``): the Transformer (the checkpoint itself), then Pooling (token vectors -> one
vector: ``1_Pooling/config.json``), optionally Dense layers (``2_Dense/``: a Linear and an
activation) and Normalize (unit length). Beside them, ``sentence_bert_config.json`` sets the
texts' longest tokenization (``max_seq_length``: truncation, no windows) and lowercasing, and
``config_sentence_transformers.json`` the prompts and the similarity function.

Conversion reads all of it into one ``spec`` (plain JSON, recorded in the npdistil file's
metadata) and the Dense weights (recorded as tensors), so a converted file alone encodes as the
folder did. Anything npdistil cannot run exactly (another module type, a custom activation) is
refused at conversion, never skipped. The maths below follows sentence-transformers'
``Pooling``, ``Dense`` and ``Normalize`` (its similarity functions and ``quantize_embeddings``
are in ``vectors.py``).

Shape legend: N texts, n tokens of one text, D model width, E embedding width.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import CheckpointError, InputError
from ..model.numerics import Linear, gelu, linear

__all__ = [
    "POOLING_MODES",
    "SIMILARITY_FUNCTIONS",
    "Dense",
    "Normalize",
    "Pooling",
    "SentenceModel",
    "PLAIN",
    "read_folder",
    "from_spec",
    "module_files",
    "pool",
    "run_modules",
]

# sentence-transformers' pooling modes, in the order it concatenates them when several are on.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")

# The legacy pooling flags of 1_Pooling/config.json, in concatenation order.
_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Dense activations (torch.nn classes, by name) -> npdistil's.
_ACTIVATIONS = {
    "Identity": "identity",
    "Tanh": "tanh",
    "ReLU": "relu",
    "GELU": "gelu",  # torch.nn.GELU() is the exact erf form
    "Sigmoid": "sigmoid",
    "SiLU": "silu",
}
_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
# sentence-transformers reads the first of these it finds (older releases named them by model).
_SBERT_CONFIGS = (
    "sentence_bert_config.json",
    "sentence_distilbert_config.json",
    "sentence_roberta_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
_ST_CONFIG = "config_sentence_transformers.json"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


# ---- the modules --------------------------------------------------------------------------------


class Pooling(NamedTuple):
    """Token vectors -> one vector per text; several modes are concatenated."""

    modes: tuple[str, ...]  # from POOLING_MODES
    include_prompt: bool = True  # False: a prompt's tokens (and [CLS]) are left out


class Dense(NamedTuple):
    """A Linear layer on the sentence vector, then an activation."""

    linear: Linear  # [E_in, E_out]
    activation: str  # identity, tanh, relu, gelu, sigmoid or silu


class Normalize(NamedTuple):
    """Scales the sentence vector to unit length (L2)."""


Module = Pooling | Dense | Normalize
# Reads a weights file (model.safetensors or pytorch_model.bin) into a state dict.
WeightReader = Callable[[Path], Mapping[str, np.ndarray]]


class SentenceModel(NamedTuple):
    """What a sentence-transformers folder adds to its checkpoint."""

    modules: tuple[Module, ...]  # after the Transformer, in order; the first is Pooling
    max_seq_length: int | None = None  # longest tokenization, special tokens included
    do_lower_case: bool = False
    prompts: Mapping[str, str] = {}  # name -> text put before each text
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None  # None: cosine
    truncate_dim: int | None = None

    @property
    def pooling(self) -> Pooling:
        first = self.modules[0]
        assert isinstance(first, Pooling)
        return first

    def dimension(self, dim: int) -> int:
        """E, the width of the sentence embeddings of a D = ``dim`` encoder."""
        width = dim * len(self.pooling.modes)
        for m in self.modules:
            if isinstance(m, Dense):
                width = m.linear.weight.shape[1]
        return width if self.truncate_dim is None else min(width, self.truncate_dim)


# A plain checkpoint (no modules.json): mean pooling, as sentence-transformers gives it.
PLAIN = SentenceModel(modules=(Pooling(("mean",)),))


# ---- reading a folder ---------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc})") from None


def _modules_list(folder: Path) -> list[dict[str, Any]] | None:
    path = folder / "modules.json"
    if not path.is_file():
        return None
    modules = _read_json(path)
    if not isinstance(modules, list) or not all(
        isinstance(m, dict) and isinstance(m.get("type"), str) and isinstance(m.get("path"), str)
        for m in modules
    ):
        raise CheckpointError(f"{path}: expected a list of modules with 'type' and 'path'")
    return modules


def _kind(entry: dict[str, Any], source: Path) -> str:
    """The module's class name, if it is one npdistil runs."""
    type_name = entry["type"]
    kind = type_name.rsplit(".", 1)[-1]
    if not type_name.startswith("sentence_transformers.") or kind not in _MODULES:
        raise CheckpointError(
            f"{source}: module {entry.get('name', entry['path'])!r} has type {type_name!r}, which "
            f"npdistil does not run (it runs sentence-transformers' {', '.join(_MODULES)})"
        )
    return kind


def _safe_subfolder(folder: Path, sub: str, source: Path) -> Path:
    if sub.startswith(("/", "\\")) or ".." in Path(sub).parts:
        raise CheckpointError(f"{source}: module path {sub!r} leaves the model folder")
    return folder / sub


def module_files(modules_json: str | bytes) -> list[tuple[str, ...]]:
    """The files a Hub download needs beside the checkpoint, for a ``modules.json``: each
    entry lists alternatives, the first present is taken (none present is fine)."""
    try:
        modules = json.loads(modules_json)
    except (ValueError, UnicodeDecodeError):
        return []
    files: list[tuple[str, ...]] = [_SBERT_CONFIGS, (_ST_CONFIG,), ("tokenizer_config.json",)]
    for entry in modules if isinstance(modules, list) else []:
        path = entry.get("path") if isinstance(entry, dict) else None
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1] if isinstance(entry, dict) else ""
        if not isinstance(path, str) or not path or ".." in path or kind == "Transformer":
            continue
        files.append((f"{path}/config.json",))
        if kind == "Dense":
            files.append(tuple(f"{path}/{w}" for w in _WEIGHTS))
    return files


def folder_files(folder: Path) -> list[Path]:
    """The sentence-transformers files of a folder (for telling when its conversion is stale)."""
    modules = _modules_list(folder) if (folder / "modules.json").is_file() else None
    names = ["modules.json", *_SBERT_CONFIGS, _ST_CONFIG]
    for entry in modules or []:
        if entry["path"]:
            names += [f"{entry['path']}/config.json", *(f"{entry['path']}/{w}" for w in _WEIGHTS)]
    return [folder / n for n in names if ".." not in n and (folder / n).is_file()]


def read_folder(
    folder: Path, dim: int, max_positions: int, read_weights: WeightReader
) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """A sentence-transformers folder's spec (JSON-able) and Dense tensors; None when the
    folder has no ``modules.json`` (a plain checkpoint). ``read_weights`` reads a
    ``model.safetensors`` or ``pytorch_model.bin`` (conversion's reader). Raises
    CheckpointError naming the file for anything npdistil cannot run."""
    modules = _modules_list(folder)
    if modules is None:
        return None
    source = folder / "modules.json"
    kinds = [_kind(m, source) for m in modules]
    if not kinds or kinds[0] != "Transformer" or "Transformer" in kinds[1:]:
        raise CheckpointError(f"{source}: the first module (and only it) must be a Transformer")
    if modules[0]["path"] not in ("", "."):
        raise CheckpointError(
            f"{source}: the Transformer lives in subfolder {modules[0]['path']!r} (an old "
            "sentence-transformers layout npdistil does not read); point npdistil at that "
            "subfolder's checkpoint, or re-save the model with a recent sentence-transformers"
        )
    if len(kinds) < 2 or kinds[1] != "Pooling" or "Pooling" in kinds[2:]:
        raise CheckpointError(
            f"{source}: npdistil runs Transformer, Pooling, then Dense/Normalize modules; "
            f"this model has {kinds}"
        )

    spec: dict[str, Any] = {"modules": []}
    tensors: dict[str, np.ndarray] = {}
    for k, (entry, kind) in enumerate(zip(modules[1:], kinds[1:], strict=True)):
        sub = _safe_subfolder(folder, entry["path"], source)
        config_path = sub / "config.json"
        config = _read_json(config_path) if config_path.is_file() else {}
        if not isinstance(config, dict):
            raise CheckpointError(f"{config_path}: expected a JSON object")
        if kind == "Pooling":
            spec["modules"].append(_pooling_spec(config, dim, config_path))
        elif kind == "Normalize":
            _check_io_names(config, config_path)
            spec["modules"].append({"type": "Normalize"})
        else:
            module, weights = _dense(config, sub, config_path, f"sentence.{k}", read_weights)
            spec["modules"].append(module)
            tensors |= weights

    sbert = next((folder / n for n in _SBERT_CONFIGS if (folder / n).is_file()), None)
    sbert_config = _read_json(sbert) if sbert else {}
    if not isinstance(sbert_config, dict):
        raise CheckpointError(f"{sbert}: expected a JSON object")
    task = sbert_config.get("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise CheckpointError(f"{sbert}: transformer_task {task!r} is not supported")
    spec["max_seq_length"] = _max_seq_length(folder, sbert_config.get("max_seq_length"), sbert)
    if spec["max_seq_length"] is None or spec["max_seq_length"] > max_positions:
        spec["max_seq_length"] = max_positions  # sentence-transformers caps it there too
    spec["do_lower_case"] = bool(sbert_config.get("do_lower_case", False))

    st_path = folder / _ST_CONFIG
    st_config = _read_json(st_path) if st_path.is_file() else {}
    if not isinstance(st_config, dict):
        raise CheckpointError(f"{st_path}: expected a JSON object")
    kind = st_config.get("model_type", "SentenceTransformer")
    if kind != "SentenceTransformer":
        raise CheckpointError(f"{st_path}: a {kind!r}, not a SentenceTransformer embedding model")
    spec["prompts"] = st_config.get("prompts") or {}
    spec["default_prompt_name"] = st_config.get("default_prompt_name")
    spec["similarity_fn_name"] = st_config.get("similarity_fn_name")
    spec["truncate_dim"] = st_config.get("truncate_dim")
    from_spec(spec, tensors, dim, str(folder))  # refuse now what could not be loaded later
    return spec, tensors


def _max_seq_length(folder: Path, value: Any, source: Path | None) -> int | None:
    if value is not None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"{source}: max_seq_length must be a positive integer")
        return value
    # Not set: the tokenizer's model_max_length, as sentence-transformers falls back to.
    path = folder / "tokenizer_config.json"
    config = _read_json(path) if path.is_file() else {}
    length = config.get("model_max_length") if isinstance(config, dict) else None
    return length if isinstance(length, int) and not isinstance(length, bool) else None


def _pooling_spec(config: dict[str, Any], dim: int, source: Path) -> dict[str, Any]:
    mode = config.get("pooling_mode")
    if mode is None:  # the legacy flags
        modes = [m for flag, m in _POOLING_FLAGS.items() if config.get(flag)] or ["mean"]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown or not modes:
        raise CheckpointError(
            f"{source}: pooling mode {unknown or modes} is not one of {POOLING_MODES}"
        )
    width = config.get("embedding_dimension", config.get("word_embedding_dimension", dim))
    if width != dim:
        raise CheckpointError(
            f"{source}: pools vectors of width {width}, but the model's are {dim} wide"
        )
    return {
        "type": "Pooling",
        "modes": modes,
        "include_prompt": bool(config.get("include_prompt", True)),
    }


def _check_io_names(config: dict[str, Any], source: Path) -> None:
    for key in ("module_input_name", "module_output_name"):
        if config.get(key) not in (None, "sentence_embedding"):
            raise CheckpointError(
                f"{source}: {key} {config[key]!r} is not supported (npdistil runs modules "
                "on the sentence embedding)"
            )


def _dense(
    config: dict[str, Any], folder: Path, source: Path, prefix: str, read_weights: WeightReader
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    _check_io_names(config, source)
    if config.get("use_residual"):
        raise CheckpointError(f"{source}: use_residual Dense layers are not supported")
    try:
        n_in, n_out = int(config["in_features"]), int(config["out_features"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{source}: needs integer in_features and out_features") from None
    name = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    act = _ACTIVATIONS.get(str(name).rsplit(".", 1)[-1]) if str(name).startswith("torch.") else None
    if act is None:
        raise CheckpointError(
            f"{source}: activation_function {name!r} is not supported (torch.nn "
            f"{', '.join(_ACTIVATIONS)})"
        )
    weights_path = next((folder / w for w in _WEIGHTS if (folder / w).is_file()), None)
    if weights_path is None:
        raise CheckpointError(f"{folder}: no Dense weights ({' or '.join(_WEIGHTS)})")
    state = read_weights(weights_path)
    bias = bool(config.get("bias", True))
    want = {"linear.weight": (n_out, n_in), **({"linear.bias": (n_out,)} if bias else {})}
    tensors = {}
    for key, shape in want.items():
        if key not in state:
            raise CheckpointError(f"{weights_path}: missing tensor {key!r}")
        array = state[key]
        if tuple(array.shape) != shape or array.dtype.kind != "f":
            raise CheckpointError(
                f"{weights_path}: tensor {key!r} is {array.dtype}{list(array.shape)}, "
                f"expected float{list(shape)}"
            )
        array = np.asarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise CheckpointError(f"{weights_path}: tensor {key!r} has NaN or infinite values")
        tensors[key] = array
    extra = sorted(set(state) - set(want))
    if extra:
        raise CheckpointError(f"{weights_path}: unexpected tensors {extra}")
    weight = np.ascontiguousarray(tensors["linear.weight"].T)  # [out, in] -> [in, out]
    out = {
        f"{prefix}.weight": weight,
        f"{prefix}.bias": tensors.get("linear.bias", np.zeros(n_out, np.float32)),
    }
    module = {"type": "Dense", "in_features": n_in, "out_features": n_out, "activation": act}
    return module | {"tensors": prefix}, out


# ---- the spec -> typed modules ------------------------------------------------------------------


def from_spec(
    spec: Mapping[str, Any], tensors: Mapping[str, np.ndarray], dim: int, source: str
) -> SentenceModel:
    """The typed modules of a spec (as ``read_folder`` makes it), checked against the encoder's
    width ``dim`` and the tensors; CheckpointError naming ``source`` otherwise."""
    try:
        return _from_spec(spec, tensors, dim)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: malformed sentence-transformers spec ({exc})") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def _from_spec(
    spec: Mapping[str, Any], tensors: Mapping[str, np.ndarray], dim: int
) -> SentenceModel:
    modules: list[Module] = []
    width = dim
    for entry in spec["modules"]:
        kind = entry["type"]
        if kind == "Pooling":
            modes = tuple(entry["modes"])
            if modules or not modes or not set(modes) <= set(POOLING_MODES):
                raise CheckpointError(f"bad Pooling module {entry}")
            modules.append(Pooling(modes, bool(entry["include_prompt"])))
            width = dim * len(modes)
        elif kind == "Dense":
            n_in, n_out = int(entry["in_features"]), int(entry["out_features"])
            if n_in != width:
                raise CheckpointError(
                    f"a Dense layer takes {n_in} inputs; the embedding before it is {width} wide"
                )
            weight, bias = (
                tensors[f"{entry['tensors']}.weight"],
                tensors[f"{entry['tensors']}.bias"],
            )
            if weight.shape != (n_in, n_out) or bias.shape != (n_out,):
                raise CheckpointError(f"Dense tensors {entry['tensors']!r} have the wrong shape")
            if entry["activation"] not in _ACTIVATIONS.values():
                raise CheckpointError(f"unknown Dense activation {entry['activation']!r}")
            modules.append(Dense(Linear(weight, bias), entry["activation"]))
            width = n_out
        elif kind == "Normalize":
            modules.append(Normalize())
        else:
            raise CheckpointError(f"unknown module type {kind!r}")
    if not modules or not isinstance(modules[0], Pooling):
        raise CheckpointError("the first module after the Transformer must be Pooling")
    prompts = dict(spec.get("prompts") or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise CheckpointError("prompts must map names to strings")
    default = spec.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise CheckpointError(f"default_prompt_name {default!r} is not one of the prompts")
    similarity_fn = spec.get("similarity_fn_name")
    if similarity_fn is not None and similarity_fn not in SIMILARITY_FUNCTIONS:
        raise CheckpointError(
            f"similarity_fn_name {similarity_fn!r} is not one of {SIMILARITY_FUNCTIONS}"
        )
    max_len = spec.get("max_seq_length")
    truncate_dim = spec.get("truncate_dim")
    for name, value in (("max_seq_length", max_len), ("truncate_dim", truncate_dim)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise CheckpointError(f"{name} must be a positive integer, got {value!r}")
    return SentenceModel(
        modules=tuple(modules),
        max_seq_length=max_len,
        do_lower_case=bool(spec.get("do_lower_case", False)),
        prompts=prompts,
        default_prompt_name=default,
        similarity_fn_name=similarity_fn,
        truncate_dim=truncate_dim,
    )


# ---- running them -------------------------------------------------------------------------------


def pool(
    seqs: Sequence[np.ndarray], modes: Sequence[str], skip: int = 0
) -> np.ndarray:  # N x [n_i, D] -> [N, D * len(modes)]
    """Each text's token vectors pooled by every mode, concatenated; the first ``skip`` tokens
    of each (a prompt and its [CLS], when the model pools without its prompt) are left out.

    As sentence-transformers: ``weightedmean`` weighs the token at position p by p + 1;
    a text with no token left gives zeros (mean, weightedmean, lasttoken), -inf (max) or its
    first token (cls).
    """
    out = []
    for seq in seqs:
        n, d = seq.shape
        kept = seq[skip:]  # [n - skip, D]
        parts = []
        for mode in modes:
            if mode == "cls":
                parts.append(seq[skip] if len(kept) else seq[0])
            elif mode == "max":
                parts.append(kept.max(axis=0) if len(kept) else np.full(d, -np.inf, seq.dtype))
            elif mode in ("mean", "mean_sqrt_len_tokens"):
                count = max(float(len(kept)), 1e-9)
                scale = count if mode == "mean" else math.sqrt(count)
                parts.append(kept.sum(axis=0) / np.float32(scale))
            elif mode == "weightedmean":
                weights = np.arange(skip + 1, n + 1, dtype=seq.dtype)[:, None]  # [n - skip, 1]
                total = max(float(weights.sum()), 1e-9)
                parts.append((kept * weights).sum(axis=0) / np.float32(total))
            elif mode == "lasttoken":
                parts.append(kept[-1] if len(kept) else np.zeros(d, seq.dtype))
            else:
                raise InputError(f"pooling must be one of {POOLING_MODES}, got {mode!r}")
        out.append(np.concatenate(parts))
    return np.stack(out).astype(np.float32, copy=False)


def l2_normalize(x: np.ndarray) -> np.ndarray:  # [N, E] -> [N, E]
    """Rows scaled to unit length (a zero row stays zero), as torch's F.normalize."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "tanh":
        return np.tanh(x)
    if activation == "relu":
        return np.maximum(x, 0)
    if activation == "gelu":
        return gelu(x)
    with np.errstate(over="ignore"):  # exp(-x) = inf for very negative x: the limit is right
        if activation == "sigmoid":
            return 1 / (1 + np.exp(-x))
        if activation == "silu":
            return x / (1 + np.exp(-x))
    return x  # identity


def run_modules(pooled: np.ndarray, modules: Sequence[Module]) -> np.ndarray:
    """The modules after Pooling, in order, on pooled vectors [N, E] -> [N, E']."""
    x = pooled
    for m in modules:
        if isinstance(m, Dense):
            x = _activate(linear(x, m.linear), m.activation)  # [N, E_in] -> [N, E_out]
        elif isinstance(m, Normalize):
            x = l2_normalize(x)
    return x.astype(np.float32, copy=False)
