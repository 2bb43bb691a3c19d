"""The task commands: ``fill-mask``, ``classify``, ``entities``, ``answer``. Texts come in as for
``embed``; each goes out as one JSON line, ``{"id": ..., "result": ...}``, the result as the
Python method returns it (transformers' pipeline keys)."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..api import Model, load
from .options import (
    Input,
    Parser,
    Text,
    UsageError,
    check_input,
    check_texts_or_input,
    count,
    input_format,
    input_options,
    located,
    model_option,
    no_revision_for_local,
    positive,
    top_k,
)


def add_parsers(sub: Any, hub: argparse.ArgumentParser) -> None:
    """The task commands share how texts come in (arguments, a file or stdin, as for embed)
    and go out: one JSON line per text, ``{"id": ..., "result": ...}``, the result as the
    Python method returns it (transformers' pipeline keys)."""
    texts = Parser(add_help=False)
    model_option(texts)
    input_options(texts)
    texts.add_argument("--output", help="write JSON Lines to this file (default: stdout)")

    f = sub.add_parser(
        "fill-mask", parents=[hub, texts], help="the likeliest tokens for each [MASK] of texts"
    )
    f.set_defaults(run=fill_mask)
    f.add_argument("texts", nargs="*", help="texts with the model's mask token ([MASK])")
    f.add_argument("--top-k", type=positive, default=5, help="(default: %(default)s)")
    f.add_argument(
        "--target", action="append", help="only this token as a candidate (repeat for more)"
    )

    c = sub.add_parser("classify", parents=[hub, texts], help="label texts (or text pairs)")
    c.set_defaults(run=classify)
    c.add_argument("texts", nargs="*", help="texts to classify")
    c.add_argument("--top-k", type=top_k, default=1, help="labels per text, or all")
    c.add_argument("--function-to-apply", choices=["softmax", "sigmoid", "none"])
    c.add_argument("--pair-field", help=".jsonl input: each text's pair (e.g. a hypothesis)")

    n = sub.add_parser("entities", parents=[hub, texts], help="named entities (token tags)")
    n.set_defaults(run=entities)
    n.add_argument("texts", nargs="*", help="texts to tag")
    n.add_argument(
        "--aggregation-strategy",
        choices=["none", "simple", "first", "average", "max"],
        default="simple",
        help="none: every word piece; others: entity groups (default: %(default)s)",
    )
    n.add_argument(
        "--ignore-label",
        action="append",
        help="a tag left out (repeat for more; default: O); --ignore-label '' keeps every tag",
    )
    n.add_argument(
        "--stride", type=count, help="tag long texts whole, in windows sharing this many tokens"
    )

    a = sub.add_parser(
        "answer", parents=[hub, texts], help="extract answers to a question from contexts"
    )
    a.set_defaults(run=answer)
    a.add_argument("texts", nargs="*", help="contexts (with --question)")
    a.add_argument("--question", help="the question asked of every context")
    a.add_argument(
        "--question-field", help=".jsonl input: each context's question (default: question)"
    )
    a.add_argument("--top-k", type=positive, default=1, help="answers per context")
    a.add_argument("--max-answer-len", type=positive, help="in tokens (default: 15)")
    a.add_argument("--doc-stride", type=count, help="tokens shared by a long context's windows")
    a.add_argument(
        "--handle-impossible-answer",
        action="store_true",
        help="an empty answer when the model finds none",
    )


def _task(args: argparse.Namespace, run: Callable[[Model, list[Text]], list[Any]]) -> int:
    """Read texts, run ``run`` on them a chunk at a time, write one JSON line per text."""
    check_texts_or_input(args)
    in_fmt = check_input(args)
    no_revision_for_local(args, args.model)
    texts = Input(args, in_fmt or "txt")
    try:
        model = load(args.model, revision=args.revision, local_files_only=args.offline)
        to_file = args.output not in (None, "-")
        with contextlib.ExitStack() as stack:
            if to_file:
                from ..weights.storage import is_regular_target, open_replacing

                if is_regular_target(args.output):
                    out = stack.enter_context(open_replacing(Path(args.output)))
                else:
                    out = stack.enter_context(open(args.output, "wb"))
            else:
                out = sys.stdout.buffer
            n = 0
            stream = iter(texts)
            while chunk := list(itertools.islice(stream, 256)):
                for t, result in zip(chunk, located(run, model, chunk), strict=True):
                    record = {"id": t.id, "result": result}
                    out.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
                    n += 1
                out.flush()
        if to_file:
            print(f"wrote {n} result(s) to {args.output}", file=sys.stderr)
    finally:
        texts.close()
    return 0


def fill_mask(args: argparse.Namespace) -> int:
    def run(model: Model, chunk: list[Text]) -> list[Any]:
        texts = [t.text for t in chunk]
        return model.fill_mask(texts, top_k=args.top_k, targets=args.target)

    return _task(args, run)


def classify(args: argparse.Namespace) -> int:
    def run(model: Model, chunk: list[Text]) -> list[Any]:
        pairs = None if args.pair_field is None else [str(t.pair) for t in chunk]
        return model.classify(
            [t.text for t in chunk],
            pairs,
            top_k=args.top_k,
            function_to_apply=args.function_to_apply,
        )

    return _task(args, run)


def entities(args: argparse.Namespace) -> int:
    ignore = ["O"] if args.ignore_label is None else [t for t in args.ignore_label if t]

    def run(model: Model, chunk: list[Text]) -> list[Any]:
        return model.entities(
            [t.text for t in chunk],
            aggregation_strategy=args.aggregation_strategy,
            ignore_labels=ignore,
            stride=args.stride,
        )

    return _task(args, run)


def answer(args: argparse.Namespace) -> int:
    if args.question_field and args.question:
        raise UsageError("give --question or --question-field, not both")
    if args.input is not None and args.question is None and input_format(args) == "jsonl":
        args.pair_field = args.question_field or "question"
    elif args.question is None:
        raise UsageError("give the question: --question TEXT (or .jsonl input with a question)")
    elif args.question_field:
        raise UsageError("--question-field applies to .jsonl input")
    else:
        args.pair_field = None
    options: dict[str, Any] = {"top_k": args.top_k}
    if args.max_answer_len is not None:
        options["max_answer_len"] = args.max_answer_len
    if args.doc_stride is not None:
        options["doc_stride"] = args.doc_stride
    if args.handle_impossible_answer:
        options["handle_impossible_answer"] = True

    def run(model: Model, chunk: list[Text]) -> list[Any]:
        questions = [args.question if t.pair is None else t.pair for t in chunk]
        return list(model.answer(questions, [t.text for t in chunk], **options))

    return _task(args, run)
