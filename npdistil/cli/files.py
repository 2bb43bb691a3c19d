"""Files and the cache: ``npdistil convert`` (a checkpoint -> an npdistil file, float32, float16
or int8), ``npdistil info`` (what a model is: config, size, source, tensors) and
``npdistil cache list|prune|clear``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import inside
from ..api import Model, load
from ..text.sentence import Dense, Pooling
from .options import mb, no_revision_for_local


def add_parsers(sub: Any, hub: argparse.ArgumentParser) -> None:
    c = sub.add_parser("convert", parents=[hub], help="convert a checkpoint into an npdistil file")
    c.set_defaults(run=convert)
    c.add_argument("source", help="Hub id, local checkpoint folder (or npdistil file: a copy)")
    c.add_argument("output", type=Path, help="the npdistil .safetensors file to write")
    c.add_argument(
        "--dtype",
        choices=["float32", "float16", "int8"],
        help="store the big matrices as float16 (1/2 the size) or int8 (1/4): small weights for "
        "small machines (default: float32 from a checkpoint, as they are from an npdistil file)",
    )

    i = sub.add_parser("info", parents=[hub], help="describe a model: config, size, source")
    i.set_defaults(run=info)
    i.add_argument("source", help="npdistil file, Hub id or local checkpoint folder")
    i.add_argument(
        "--tensors", action="store_true", help="print the weight tree with shapes instead"
    )

    k = sub.add_parser("cache", help="npdistil's cache of converted files ($NPDISTIL_CACHE)")
    k.set_defaults(run=cache)
    ks = k.add_subparsers(dest="action", required=True)
    ks.add_parser("list", help="every file, its size, source and state")
    prune = ks.add_parser("prune", help="remove stale, orphan and abandoned files")
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    ks.add_parser("clear", help="remove every converted file")


def convert(args: argparse.Namespace) -> int:
    from ..weights.loader import export

    no_revision_for_local(args, args.source)
    out = export(
        args.source,
        args.output,
        revision=args.revision,
        local_files_only=args.offline,
        dtype=args.dtype,
    )
    print(f"wrote {out} ({mb(out.stat().st_size)})", file=sys.stderr)
    return 0


def info(args: argparse.Namespace) -> int:
    from ..weights.storage import read_header

    no_revision_for_local(args, args.source)
    model = load(args.source, revision=args.revision, local_files_only=args.offline)
    if args.tensors:
        print(inside.weight_tree(model))
        return 0
    f = model._file
    # Every tensor of the file, once (a projector tied to the word embeddings is not stored);
    # "heads." holds the task heads and BERT's pooler, beyond the encoder.
    # The scales of a small-weights file's int8 matrices are not parameters.
    tensors = read_header(f.path).tensors
    shapes = {name: i.shape for name, i in tensors.items() if not name.endswith(".scale")}
    heads = sum(int(np.prod(s)) for name, s in shapes.items() if name.startswith("heads."))
    print(
        json.dumps(
            {
                "path": str(f.path),
                "size_mb": round(f.size_bytes / 1e6, 1),
                "dtype": f.dtype,
                "tensors": f.n_tensors,
                "parameters": sum(int(np.prod(s)) for s in shapes.values()),
                "head_parameters": heads,
                "task_heads": list(model.task_heads),
                "tokenizer": model._tokenizer is not None,
                "source": f.source,
                "config": model.config.to_dict(),
                "sentence_transformers": _describe(model) if f.sentence else None,
            },
            indent=2,
        )
    )
    return 0


def _describe(model: Model) -> dict[str, Any]:
    """A sentence-transformers model's modules and settings, as JSON."""
    s = model.sentence_modules
    modules: list[dict[str, Any]] = []
    for m in s.modules:
        if isinstance(m, Pooling):
            modules.append(
                {"type": "Pooling", "modes": m.modes, "include_prompt": m.include_prompt}
            )
        elif isinstance(m, Dense):
            n_in, n_out = m.linear.weight.shape
            modules.append({"type": "Dense", "in": n_in, "out": n_out, "activation": m.activation})
        else:
            modules.append({"type": type(m).__name__})
    return {
        "modules": modules,
        "max_seq_length": model.max_seq_length,
        "embedding_dimension": model.get_sentence_embedding_dimension(),
        "similarity_fn_name": model.similarity_fn_name,
        "prompts": model.prompts,
        "default_prompt_name": model.default_prompt_name,
    }


def cache(args: argparse.Namespace) -> int:
    from ..weights import cache as converted
    from ..weights.loader import cache_root

    root = cache_root()
    if args.action == "list":
        entries = converted.entries(root)
        print(f"npdistil cache: {root}")
        for e in entries:
            why = f" ({e.why})" if e.why else ""
            print(f"{mb(e.size):>10}  {e.state:<9}  {e.source}{why}  {e.path.relative_to(root)}")
        spare = sum(e.size for e in entries if e.state in converted.PRUNABLE)
        print(
            f"{mb(sum(e.size for e in entries)):>10}  in {len(entries)} file(s); "
            f"{mb(spare)} can go with `npdistil cache prune`"
        )
        return 0
    gone = (
        converted.prune(root, dry_run=args.dry_run)
        if args.action == "prune"
        else converted.clear(root)
    )
    verb = "would remove" if getattr(args, "dry_run", False) else "removed"
    for e in gone:
        print(f"{verb} {e.path.relative_to(root)} ({mb(e.size)}, {e.state}: {e.why or e.source})")
    print(f"{verb} {len(gone)} file(s), {mb(sum(e.size for e in gone))}")
    return 0
