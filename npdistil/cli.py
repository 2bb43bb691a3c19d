"""The ``npdistil`` command: embed texts, convert checkpoints, describe converted files."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, inside
from .api import DistilBert, load
from .encode import TokenEmbeddings, WordEmbeddings
from .errors import InputError, NpdistilError
from .loader import DEFAULT_MODEL
from .output import open_writer
from .sentence import Dense, Pooling

__all__ = ["main"]

_OUTPUT_VALUES = {
    "sentence": "sentence_embedding",
    "token": "tokens",
    "word": "word_embeddings",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="npdistil", description="DistilBERT and BERT inference in pure NumPy."
    )
    p.add_argument("--version", action="version", version=f"npdistil {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("embed", help="embed texts (arguments, or --input FILE)")
    e.add_argument("texts", nargs="*", help="texts to embed")
    e.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Hub id, local checkpoint folder or npdistil file (default: %(default)s)",
    )
    e.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    e.add_argument("--output-value", choices=list(_OUTPUT_VALUES), default="sentence")
    e.add_argument(
        "--pooling",
        choices=["mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"],
        help="sentence pooling (default: the model's; mean for a plain checkpoint)",
    )
    e.add_argument("--prompt", help="text put before every text (sentence embeddings)")
    e.add_argument("--prompt-name", help="one of the model's prompts, by name")
    e.add_argument(
        "--word-pooling",
        choices=["first", "mean", "max"],
        default="first",
        help="how a word's pieces make its vector (default: %(default)s)",
    )
    e.add_argument("--normalize", action="store_true", help="L2-normalise sentence embeddings")
    e.add_argument(
        "--include-special-tokens", action="store_true", help="token output: keep [CLS] and [SEP]"
    )
    e.add_argument(
        "--long-text",
        choices=["window", "truncate", "error"],
        help="texts over the window (default: truncate for sentence-transformers models, at "
        "their max_seq_length, as they do; window otherwise)",
    )
    e.add_argument(
        "--window",
        type=int,
        help="tokens per window (default: the model's max_seq_length, or its 512 positions)",
    )
    e.add_argument("--stride", type=int, help="tokens shared by neighbouring windows")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument(
        "--input", type=Path, help="a .txt file (one text per line) or .jsonl file (see --field)"
    )
    e.add_argument("--field", default="text", help="the text field of .jsonl input")
    e.add_argument(
        "--id-field", default="id", help="the id field of .jsonl input (default: the line number)"
    )
    e.add_argument("--output", type=Path, help="write to a .npy, .npz or .jsonl file")
    e.add_argument(
        "--format",
        choices=["npy", "npz", "jsonl"],
        help="output format (default: from the --output suffix)",
    )
    e.add_argument(
        "--chunk-size",
        type=int,
        default=4096,
        help="texts held in memory at once when streaming (default: %(default)s)",
    )
    e.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when writing a file from a terminal)",
    )

    c = sub.add_parser("convert", help="convert a checkpoint into an npdistil file")
    c.add_argument("source", help="Hub id or local checkpoint folder")
    c.add_argument("output", type=Path, help="the npdistil .safetensors file to write")
    c.add_argument("--revision", help="Hub branch, tag or commit (default: main)")

    d = sub.add_parser(
        "doctor", help="what npdistil runs on: NumPy, BLAS, its kernel and threads, measured"
    )
    d.add_argument(
        "--no-measure", action="store_true", help="skip the two-second matrix-product measurement"
    )

    i = sub.add_parser("info", help="describe a model: config, size, source, tensors")
    i.add_argument("source", help="npdistil file, Hub id or local checkpoint folder")
    i.add_argument("--revision")
    i.add_argument(
        "--tensors", action="store_true", help="print the weight tree with shapes instead"
    )
    _inside_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="npdistil: %(message)s", stream=sys.stderr)
    try:
        if args.command == "embed":
            return _embed(args)
        if args.command == "convert":
            return _convert(args)
        if args.command == "doctor":
            from .system import report

            print(report(measure=not args.no_measure))
            return 0
        if args.command in _INSIDE:
            return _INSIDE[args.command](args)
        return _info(args)
    except (NpdistilError, OSError) as exc:
        print(f"npdistil: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _convert(args: argparse.Namespace) -> int:
    import shutil

    from .storage import replace_atomic

    model = load(args.source, revision=args.revision)
    replace_atomic(args.output, lambda tmp: shutil.copyfile(model.path, tmp))
    print(f"wrote {args.output} ({model.path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _info(args: argparse.Namespace) -> int:
    model = load(args.source, revision=args.revision)
    if args.tensors:
        print(inside.weight_tree(model))
        return 0
    f = model._file
    print(
        json.dumps(
            {
                "path": str(f.path),
                "size_mb": round(f.size_bytes / 1e6, 1),
                "dtype": "float32",
                "tensors": f.n_tensors,
                "parameters": int(sum(np.prod(a.shape) for a in _arrays(f.weights))),
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


def _describe(model: DistilBert) -> dict[str, Any]:
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


def _arrays(tree: Any) -> Iterator[np.ndarray]:
    if isinstance(tree, np.ndarray):
        yield tree
    elif isinstance(tree, tuple):
        for item in tree:
            yield from _arrays(item)


# ---- embed ---------------------------------------------------------------------------------------


def _read_texts(path: Path, field: str, id_field: str) -> Iterator[tuple[Any, str]]:
    """(id, text) pairs of a .txt (one text per line) or .jsonl file, streamed."""
    jsonl = path.suffix == ".jsonl"
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if not jsonl:
                yield n, line.rstrip("\r\n")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n + 1}: not valid JSON ({exc})") from None
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise InputError(f"{path}:{n + 1}: no string field {field!r}")
            yield record.get(id_field, n), record[field]


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _embed(args: argparse.Namespace) -> int:
    if bool(args.texts) == bool(args.input):
        raise InputError("give texts as arguments or --input FILE (one of the two)")
    options = {
        "batch_size": args.batch_size,
        "output_value": _OUTPUT_VALUES[args.output_value],
        "pooling": args.pooling,
        "prompt": args.prompt,
        "prompt_name": args.prompt_name,
        "normalize_embeddings": args.normalize,
        "long_text": args.long_text,
        "window": args.window,
        "stride": args.stride,
        "word_pooling": args.word_pooling,
        "include_special_tokens": args.include_special_tokens,
    }
    model = load(args.model, revision=args.revision)
    if args.output is None:
        texts = args.texts or [t for _, t in _read_texts(args.input, args.field, args.id_field)]
        _print_results(texts, model.encode(texts, **options), args.output_value)
        return 0

    fmt = args.format or args.output.suffix.lstrip(".")
    records = (
        _read_texts(args.input, args.field, args.id_field) if args.input else enumerate(args.texts)
    )
    total = _count_lines(args.input) if args.input else len(args.texts)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    with open_writer(args.output, fmt, args.output_value) as writer:
        bar = _progress(total, progress)
        for ids, texts, results in _chunks(model, records, args.chunk_size, options):
            writer.write(ids, texts, results)
            bar.update(len(texts))
        bar.close()
        n = writer.count
    print(f"wrote {n} {args.output_value} embedding(s) to {args.output}", file=sys.stderr)
    return 0


def _chunks(
    model: DistilBert, records: Any, chunk_size: int, options: dict[str, Any]
) -> Iterator[tuple[list[Any], list[str], Any]]:
    import itertools

    records = iter(records)
    while chunk := list(itertools.islice(records, chunk_size)):
        ids = [i for i, _ in chunk]
        texts = [t for _, t in chunk]
        yield ids, texts, model.encode(texts, **options)


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="text", desc="npdistil", disable=not enabled)


def _print_results(texts: list[str], results: Any, kind: str) -> None:
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    for i, text in enumerate(texts):
        shown = text if len(text) <= 60 else text[:57] + "..."
        print(f"[{i}] {shown!r}")
        if kind == "sentence":
            v = results[i]
            print(f"    {_vector(v)}  ({v.shape[0]} dims, norm {np.linalg.norm(v):.4f})")
            continue
        r: TokenEmbeddings | WordEmbeddings = results[i]
        names = r.tokens if isinstance(r, TokenEmbeddings) else r.words
        for name, (a, b), v in zip(names, r.offsets.tolist(), r.vectors, strict=True):
            print(f"    {name!r:>16} {a:>5}:{b:<5} {_vector(v)}")


def _vector(v: np.ndarray) -> str:
    head = ", ".join(f"{x:+.4f}" for x in v[:4])
    return f"[{head}, ...]"


# ---- looking inside: trace, attention ------------------------------------------------------------


def _inside_parsers(sub: Any) -> None:
    t = sub.add_parser(
        "trace", help="run one text through the textbook forward pass, printing every stage"
    )
    t.add_argument("text", help="the text to trace")
    _model_options(t)

    a = sub.add_parser("attention", help="show one text's attention probabilities")
    a.add_argument("text", help="the text to look at")
    _model_options(a)
    a.add_argument("--layer", type=int, default=0, help="layer, from 0 (default: %(default)s)")
    a.add_argument("--head", type=int, help="one head, from 0 (default: every head of the layer)")
    a.add_argument("--png", type=Path, help="also draw the heads as a PNG (needs matplotlib)")


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Hub id, local checkpoint folder or npdistil file (default: %(default)s)",
    )
    parser.add_argument("--revision", help="Hub branch, tag or commit (default: main)")


def _trace(args: argparse.Namespace) -> int:
    model = load(args.model, revision=args.revision)
    print(inside.format_trace(inside.trace(model, args.text)))
    return 0


def _attention(args: argparse.Namespace) -> int:
    model = load(args.model, revision=args.revision)
    c = model.config
    if not 0 <= args.layer < c.n_layers:
        raise InputError(f"--layer {args.layer}: the model has layers 0..{c.n_layers - 1}")
    if args.head is not None and not 0 <= args.head < c.n_heads:
        raise InputError(f"--head {args.head}: the model has heads 0..{c.n_heads - 1}")
    tokens, attentions = inside.attentions(model, args.text)
    heads = range(c.n_heads) if args.head is None else [args.head]
    for h in heads:
        title = f"layer {args.layer}, head {h} (rows: queries, columns: keys)"
        print(inside.attention_map(attentions[args.layer][h], tokens, title) + "\n")
    print("shades: ' ' < 0.1 <= '.' < 0.2 <= ':' ... '%' < 0.9 <= '@'")
    if args.png is not None:
        names = [f"layer {args.layer}, head {h}" for h in heads]
        inside.attention_png(
            args.png, attentions[args.layer][list(heads)], tokens, args.text, names
        )
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


_INSIDE = {"trace": _trace, "attention": _attention}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
