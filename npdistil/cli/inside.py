"""Looking inside a model: ``npdistil trace`` (every stage of the textbook forward pass) and
``npdistil attention`` (a text's attention probabilities, as shades or a PNG)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import inside
from ..api import load
from ..errors import InputError
from .options import model_option, no_revision_for_local


def add_parsers(sub: Any, hub: argparse.ArgumentParser) -> None:
    t = sub.add_parser(
        "trace",
        parents=[hub],
        help="run one text through the textbook forward pass, printing every stage",
    )
    t.set_defaults(run=trace)
    t.add_argument("text", help="the text to trace")
    model_option(t)

    a = sub.add_parser("attention", parents=[hub], help="show one text's attention probabilities")
    a.set_defaults(run=attention)
    a.add_argument("text", help="the text to look at")
    model_option(a)
    a.add_argument("--layer", type=int, default=0, help="layer, from 0 (default: %(default)s)")
    a.add_argument("--head", type=int, help="one head, from 0 (default: every head of the layer)")
    a.add_argument("--png", type=Path, help="also draw the heads as a PNG (needs matplotlib)")


def trace(args: argparse.Namespace) -> int:
    no_revision_for_local(args, args.model)
    model = load(args.model, revision=args.revision, local_files_only=args.offline)
    print(inside.format_trace(inside.trace(model, args.text)))
    return 0


def attention(args: argparse.Namespace) -> int:
    no_revision_for_local(args, args.model)
    model = load(args.model, revision=args.revision, local_files_only=args.offline)
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
