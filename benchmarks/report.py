"""The results of ``run.py`` as markdown, and issue 12's targets checked against them.

Every figure comes from the results dict that ``run.py`` also writes to JSON; nothing here
measures anything.
"""

from __future__ import annotations

from typing import Any

LABEL = {
    "npdistil": "npdistil",
    "npdistil_products": "npdistil's products alone",
    "npdistil_int8": "npdistil int8",
    "npdistil_float16": "npdistil float16",
    "pytorch": "PyTorch",
    "onnxruntime": "ORT fp32 export",
    "onnxruntime_optimized": "ORT fp32 export + optimizer",
    "onnxruntime_eager_optimized": "ORT fp32 eager export + optimizer",
    "onnxruntime_int8": "ORT int8 (dynamic)",
}
# File size over the float32 file, and cosine to float32 on full-size weights (issue 12).
FILE_TARGET = {"int8": 0.27, "float16": 0.52}
COSINE_TARGET = {"int8": 0.999, "float16": 0.99999}
MINILM_COSINE_TARGET = 0.995
# npdistil's speed over the strongest fp32 ORT graph, per shape (issue 12).
ORT_TARGET = {"8x128": 1.05, "32x128": 1.05, "1x128": 1.0, "1x16": 0.8}
ONE_SENTENCE_RSS_TARGET_MB = 120


def _ordinal(n: int) -> str:
    """1 -> "1st" (every 1st paragraph: all of them), 2 -> "2nd", 32 -> "32nd", 16 -> "16th"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _ratio(p: dict[str, Any]) -> str:
    """A paired ratio: the median of the per-round ratios and their range."""
    return f"{p['median']:.2f}x ({p['min']:.2f}-{p['max']:.2f})"


def _row(measure: str, target: str, value: Any, met: bool | None, shown: str) -> dict[str, Any]:
    status = "SKIPPED" if met is None else ("MET" if met else "NOT MET")
    return {"measure": measure, "target": target, "value": value, "status": status, "shown": shown}


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 12's targets, each with the measured figure and MET / NOT MET (SKIPPED, with the
    reason, when it could not be measured)."""
    rows = []
    speed = r["ratios"]
    for shape, ort_target in ORT_TARGET.items():
        if shape not in speed:
            rows.append(_row(f"{shape} vs ORT fp32", f">= {ort_target}x", None, None, "not run"))
            continue
        p = speed[shape]["strongest_ort_fp32"]
        floor = r.get("floor_ratios", {}).get(shape, {}).get("strongest_ort_fp32")
        rows.append(
            _row(
                f"{shape} vs ORT fp32 (strongest here: {LABEL[p['graph']]})",
                f">= {ort_target}x",
                p["median"],
                p["median"] >= ort_target,
                _ratio(p) + (f"; products alone {floor['median']:.2f}x" if floor else ""),
            )
        )
        if shape in ("8x128", "32x128"):
            p = speed[shape]["pytorch"]
            rows.append(
                _row(f"{shape} vs PyTorch", ">= 1.5x", p["median"], p["median"] >= 1.5, _ratio(p))
            )
    rss = r["peak_rss"]
    ratio = rss["npdistil"]["peak_rss_mb"] / rss["pytorch"]["peak_rss_mb"]
    rows.append(
        _row(
            "peak RSS 32x128 vs PyTorch",
            "<= 0.45x",
            ratio,
            ratio <= 0.45,
            f"{ratio:.2f}x ({rss['npdistil']['peak_rss_mb']:.0f} / "
            f"{rss['pytorch']['peak_rss_mb']:.0f} MB)",
        )
    )
    small = r["small_weights"]
    if small["conversion"].get("failed"):
        rows.append(
            _row(
                "npdistil int8 / float16 files",
                "the targets below",
                None,
                False,
                "conversion failed",
            )
        )
    if small["conversion"]["available"]:
        size = small["conversion"]["bytes"]
        for dtype, limit in FILE_TARGET.items():
            ratio = size[dtype] / size["float32"]
            rows.append(
                _row(
                    f"{dtype} file vs float32 file",
                    f"<= {limit}x",
                    ratio,
                    ratio <= limit,
                    f"{ratio:.3f}x ({size[dtype] / 1e6:.0f} / {size['float32'] / 1e6:.0f} MB)",
                )
            )
        mb = small["one_sentence_rss_mb"]["int8"]
        rows.append(
            _row(
                "fresh process embedding one sentence, int8 file: peak RSS",
                f"<= {ONE_SENTENCE_RSS_TARGET_MB} MB",
                mb,
                mb <= ONE_SENTENCE_RSS_TARGET_MB,
                f"{mb:.0f} MB",
            )
        )
        for dtype, limit in COSINE_TARGET.items():
            c = small["agreement"][f"npdistil_{dtype}_vs_npdistil"]["sentence_cosine"]
            rows.append(
                _row(
                    f"sentence cosine {dtype} vs float32, full-size weights (min over "
                    f"{c['n']} texts)",
                    f">= {limit}",
                    c["min"],
                    c["min"] >= limit,
                    f"{c['min']:.6f} (mean {c['mean']:.6f})",
                )
            )
    mini = r["minilm"]
    if "skipped" in mini:
        rows.append(
            _row(
                "sentence cosine int8 vs float32, real all-MiniLM-L6-v2",
                f">= {MINILM_COSINE_TARGET}",
                None,
                None,
                mini["skipped"],
            )
        )
    else:
        c = mini["cosine"]["int8"]
        rows.append(
            _row(
                f"sentence cosine int8 vs float32, real all-MiniLM-L6-v2 (min over {c['n']} texts)",
                f">= {MINILM_COSINE_TARGET}",
                c["min"],
                c["min"] >= MINILM_COSINE_TARGET,
                f"{c['min']:.6f} (mean {c['mean']:.6f})",
            )
        )
    err = r["parity"]["npdistil_vs_pytorch"]
    rows.append(_row("max abs error vs PyTorch (8x128)", "<= 1e-4", err, err <= 1e-4, f"{err:.1e}"))
    err = r["parity"]["padded_4x128_npdistil_vs_pytorch_real_tokens"]
    rows.append(
        _row("max abs error vs PyTorch, padded 4x128", "<= 1e-4", err, err <= 1e-4, f"{err:.1e}")
    )
    return rows


def watched(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 3's targets that issue 12 did not restate, still checked so that they don't slip."""
    rows = []
    for shape, frac in r["roofline"]["fraction"]["npdistil"].items():
        rows.append(
            _row(f"{shape}, share of the roofline", ">= 85%", frac, frac >= 0.85, f"{frac:.0%}")
        )
    if "corpus" in r:
        c = r["corpus"]
        for key, limit in (("pytorch_corpus_order", 2.0), ("pytorch_sorted", 1.2)):
            ratio = c["npdistil"]["tokens_per_s"] / c[key]["tokens_per_s"]
            label = "padded, corpus order" if key == "pytorch_corpus_order" else "length-sorted"
            rows.append(
                _row(
                    f"corpus vs PyTorch {label} (one run each)",
                    f">= {limit}x",
                    ratio,
                    ratio >= limit,
                    f"{ratio:.2f}x",
                )
            )
    s = r["startup"]
    ratio = s["npdistil"]["median"] / s["pytorch"]["median"]
    rows.append(
        _row("start-up vs PyTorch", "<= 1/8 (0.125x)", ratio, ratio <= 0.125, f"{ratio:.3f}x")
    )
    return rows


def _target_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| measure | target | measured | |", "|---|---|---|---|"]
    lines += [f"| {x['measure']} | {x['target']} | {x['shown']} | {x['status']} |" for x in rows]
    return lines


def _machine(r: dict[str, Any]) -> list[str]:
    m, sysinfo = r["machine"], r["systems"]
    npd, ceiling = sysinfo["npdistil"], sysinfo["ceiling"]
    pools = ceiling.get("threadpools", [])
    blas = (
        ", ".join(
            f"{p.get('internal_api')} {p.get('version')} (kernel **{p.get('architecture')}**, "
            f"{p.get('num_threads')} threads, {p.get('threading_layer')})"
            for p in pools
            if p.get("user_api") == "blas"
        )
        or "unknown"
    )
    build = npd.get("numpy_blas_build", {})
    torch_info = sysinfo["pytorch"]
    arch = f", **{m['microarchitecture']}**" if m.get("microarchitecture") else ""
    other = r["other_processes"]
    return [
        "### Machine",
        "",
        f"- CPU: {m['cpu']} (family {m['cpu_family']} model {m['cpu_model']}{arch}, "
        f"{m.get('cpu_mhz')} MHz), {m['cpu_count']} cores ({', '.join(m['simd'])}); "
        f"{m['platform']}; Python {m['python']}",
        f"- Threads: {m['threads']} for every system (OMP/OPENBLAS/MKL_NUM_THREADS, "
        "torch.set_num_threads, ORT intra_op_num_threads)",
        f"- NumPy {npd['numpy']}, BLAS: {blas}; NumPy's build: "
        f"{build.get('openblas configuration') or build.get('name', 'unknown')}",
        f"- OpenBLAS tuning: {m['openblas_tuning']}",
        f"- PyTorch {torch_info['torch']} ({torch_info['attn_implementation']} attention, "
        f"{torch_info['threads']} threads, eager), transformers {torch_info['transformers']}; "
        f"ONNX Runtime {sysinfo['onnxruntime']['onnxruntime']} (CPU provider, ORT_ENABLE_ALL); "
        f"npdistil {npd['version']}",
        f"- Load average at start {r['load_average']['start']}, at end "
        f"{r['load_average']['end']}; other processes took "
        f"{100 * other['share_during_timed_calls']:.1f}% of the CPU during the timed calls "
        f"(the harness waited {other['seconds_waited_for_quiet']:.0f} s for quiet); run took "
        f"{r['seconds'] / 60:.1f} min" + (" (--quick)" if r["quick"] else ""),
    ]


def _graphs(r: dict[str, Any]) -> list[str]:
    made = r["assets"].get("graphs", {})
    lines = ["", "ONNX graphs (all from the same weights):", ""]
    export = made.get("onnx", {})
    lines.append(
        f"- ORT fp32 export: `{export.get('exporter', '?')}`, transformers' "
        f"{export.get('attn_implementation', '?')} attention (as Optimum's export)"
    )
    for key, label in (
        ("onnx_optimized", "ORT fp32 export + optimizer"),
        ("onnx_eager_optimized", "ORT fp32 eager export + optimizer"),
    ):
        info = made.get(key, {})
        fused = ", ".join(f"{k} x{v}" for k, v in info.get("fused_operators", {}).items())
        lines.append(f"- {label}: `{info.get('optimizer', '?')}`; fused: {fused or 'nothing'}")
    lines.append(f"- ORT int8: `{made.get('onnx_int8', {}).get('quantizer', '?')}` of the export")
    return lines


def _throughput(r: dict[str, Any]) -> list[str]:
    names = [n for n in LABEL if n in next(iter(r["throughput"].values()))["systems"]]
    lines = [
        "",
        f"### Throughput (random ids, full masks; paired, {r['rounds']} rounds)",
        "",
        "Tokens/s: the median over rounds of each system's time per call.",
        "",
        "| batch x tokens | " + " | ".join(LABEL[n] for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for shape, s in r["throughput"].items():
        cells = [f"{s['systems'][n]['tokens_per_s']:,.0f}" for n in names]
        lines.append(f"| {shape.replace('x', ' x ')} | " + " | ".join(cells) + " |")
    peers = [n for n in names if n != "npdistil"]
    lines += [
        "",
        "npdistil's speed over each peer's: the median of the per-round ratios (min-max over "
        "rounds); above 1, npdistil is faster.",
        "",
        "| batch x tokens | " + " | ".join(LABEL[n] for n in peers) + " | strongest fp32 ORT |",
        "|---|" + "---|" * (len(peers) + 1),
    ]
    for shape, ratios in r["ratios"].items():
        best = ratios["strongest_ort_fp32"]
        cells = [_ratio(ratios[p]) for p in peers]
        cells.append(f"**{_ratio(best)}** ({LABEL[best['graph']]})")
        lines.append(f"| {shape.replace('x', ' x ')} | " + " | ".join(cells) + " |")
    return lines + _floor(r)


def _floor(r: dict[str, Any]) -> list[str]:
    floors = r.get("floor_ratios")
    if not floors:
        return []
    lines = [
        "",
        "The floor: npdistil's matrix products alone (its linear layers' products on the same "
        "weights, split between the threads as npdistil splits them, nothing else), paired "
        "against the strongest fp32 ORT graph's whole forward pass. No forward pass built "
        "from these NumPy products can beat this figure; npdistil's column *npdistil's products "
        "alone* above is the share of npdistil's time they take.",
        "",
        "| batch x tokens | products alone over strongest fp32 ORT | target for npdistil |",
        "|---|---|---|",
    ]
    for shape, f in floors.items():
        best = f["strongest_ort_fp32"]
        goal = f">= {ORT_TARGET[shape]}x" if shape in ORT_TARGET else ""
        lines.append(f"| {shape.replace('x', ' x ')} | {_ratio(best)} | {goal} |")
    return lines


def _ceiling(r: dict[str, Any]) -> list[str]:
    roof = r["roofline"]
    table = roof["gflops"]
    columns = list(next(iter(table.values())))
    names = {"numpy": "NumPy", "mlas": "ORT MLAS"}

    def head(c: str) -> str:
        lib, t = c.rsplit("_", 1)
        return f"{names[lib]} {t[:-1]} thread{'s' if t != '1t' else ''}"

    fpt = roof["flops"]
    src = roof["peak_from"]
    lines = [
        "",
        "### Ceiling",
        "",
        "float32 matrix products [m, k] @ [k, n], GFLOP/s: best timing (best median), over "
        f"{roof['runs']} runs taken at the start, after each shape and at the end. MLAS runs a "
        "one-node MatMul graph with the weight as an initializer.",
        "",
        "| m x k @ k x n | " + " | ".join(head(c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for shape, row in table.items():
        cells = [f"{row[c]['best']:.0f} ({row[c]['best_median']:.0f})" for c in columns]
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    fractions = "; ".join(
        f"{LABEL[n]}: " + ", ".join(f"{s} {f:.0%}" for s, f in fr.items())
        for n, fr in roof["fraction"].items()
        if fr
    )
    lines += [
        "",
        f"- peak at {src['threads']} threads: **{roof['peak_gflops']:.0f} GFLOP/s** "
        f"({names[src['library']]}, {src['shape']})",
        f"- FLOPs per token at T={fpt['T']}: {fpt['flops_per_token'] / 1e6:.1f} MFLOP "
        f"({fpt['formula']}; elementwise work not counted)",
        f"- roofline: {roof['tokens_per_s']:,.0f} tokens/s; share of it: "
        f"{fractions or '(8x128 and 32x128 not run)'}",
    ]
    return lines


def _int8_reference(r: dict[str, Any]) -> list[str]:
    p = r["parity"]["onnxruntime_int8_vs_fp32"]
    a = r["onnxruntime_int8_agreement"]["onnxruntime_int8_vs_onnxruntime"]["sentence_cosine"]
    return [
        "",
        "### How far ORT int8 is from fp32",
        "",
        f"ORT int8 against the fp32 export, same weights: last hidden state max abs error "
        f"{p['max_abs_error']:.3f} on 8x128 random ids (largest fp32 value "
        f"{p['max_abs_fp32']:.2f}); cosine of mean-pooled embeddings: min "
        f"{p['mean_pooled_cosine']['min']:.5f} over those 8 rows, min {a['min']:.5f} / mean "
        f"{a['mean']:.5f} over {a['n']} corpus paragraphs (random full-size weights: real "
        "weights with outlier features quantise worse).",
    ]


def _small_weights(r: dict[str, Any]) -> list[str]:
    small, mini = r["small_weights"], r["minilm"]
    lines = ["", "### npdistil's small weights", ""]
    conv = small["conversion"]
    if not conv["available"]:
        return [*lines, f"Not measured: {conv['reason']}."]
    size, rss = conv["bytes"], small["one_sentence_rss_mb"]
    shapes = list(small["ratios"])
    lines += [
        "`npdistil.convert_folder(folder, out, dtype=...)` of the same checkpoint; speed paired "
        "against the float32 file round by round (median, min-max); cosine of mean-pooled "
        f"sentence embeddings of {r['agreement_texts']} corpus paragraphs against float32.",
        "",
        "| file | size | vs float32 | one-sentence peak RSS | cosine min (mean) | "
        "hidden max abs error 8x128 | " + " | ".join(f"speed {s}" for s in shapes) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(shapes),
    ]
    for dtype in ("float32", "int8", "float16"):
        name = "npdistil" if dtype == "float32" else f"npdistil_{dtype}"
        if dtype == "float32":
            cos, err = "1", "0"
            speed = ["1x" for _ in shapes]
        else:
            a = small["agreement"][f"{name}_vs_npdistil"]
            c = a["sentence_cosine"]
            cos = f"{c['min']:.6f} ({c['mean']:.6f})"
            err = f"{a['hidden_max_abs_error_8x128']:.1e}"
            speed = [_ratio(small["ratios"][s][f"{name}_over_float32"]) for s in shapes]
        lines.append(
            f"| {dtype} | {size[dtype] / 1e6:.1f} MB | {size[dtype] / size['float32']:.3f}x | "
            f"{rss[dtype]:.0f} MB | {cos} | {err} | " + " | ".join(speed) + " |"
        )
    lines.append("")
    if "skipped" in mini:
        lines.append(f"Real all-MiniLM-L6-v2: skipped: {mini['skipped']}.")
    else:
        parts = [
            f"{d} cosine min {c['min']:.6f} (mean {c['mean']:.6f}, {c['n']} texts)"
            for d, c in mini["cosine"].items()
        ]
        lines.append("Real all-MiniLM-L6-v2 against its float32 file: " + "; ".join(parts) + ".")
    return lines


def _corpus(r: dict[str, Any]) -> list[str]:
    if "corpus" not in r:
        return []
    c, st = r["corpus"], r["corpus_stats"]
    proc = st["processed_tokens"]
    lines = [
        "",
        f"### Real corpus: pydoc_data.topics paragraphs ({st['texts']:,} texts, every "
        f"{_ordinal(st['every_kth_paragraph'])})",
        "",
        f"Tokens per text (with [CLS]/[SEP]): median {st['median_tokens']:.0f}, 95th percentile "
        f"{st['p95_tokens']:.0f}, max {st['max_tokens']}, {st['over_512']} over 512 (truncated). "
        f"Real tokens: {st['real_tokens']:,}. Tokenization and mean pooling are inside the "
        "timings; one run each (not paired).",
        "",
        "| system | batching | tokens processed / real | seconds | real tokens/s | npdistil/this |",
        "|---|---|---|---|---|---|",
    ]
    padded = {
        "npdistil": st["real_tokens"],  # forward_packed: sequences back to back, no padding
        "pytorch_corpus_order": proc["corpus_order"],
        "pytorch_sorted": proc["sorted_by_characters"],
        "onnxruntime_sorted": proc["sorted_by_characters"],
    }
    for key, n_processed in padded.items():
        e = c[key]
        ratio = c["npdistil"]["tokens_per_s"] / e["tokens_per_s"]
        lines.append(
            f"| {LABEL[e['system']]} | {e['batching']} | {n_processed / st['real_tokens']:.2f} | "
            f"{e['seconds']:.1f} | {e['tokens_per_s']:,.0f} | {ratio:.2f}x |"
        )
    lines += [
        "",
        "npdistil vs PyTorch sentence embeddings: max abs error "
        f"{c['npdistil_vs_pytorch_max_abs_error']:.1e}.",
    ]
    return lines


def _minilm_parity(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    if "skipped" in p:
        return [f"Real trained weights (all-MiniLM-L6-v2): SKIPPED, {p['skipped']}.", ""]
    return [
        f"Real trained weights, sentence-transformers/all-MiniLM-L6-v2, {p['texts']} corpus "
        f"paragraphs: npdistil's max abs error {p['hidden_state_max_abs_error']:.1e} on last "
        f"hidden states (real tokens, vs transformers' BertModel) and "
        f"{p['sentence_embedding_max_abs_error']:.1e} on sentence embeddings (vs "
        f"{p['sentence_reference']}).",
        "",
    ]


def markdown(r: dict[str, Any]) -> str:
    s, rss, parity = r["startup"], r["peak_rss"], r["parity"]
    ort = r["best_ort_fp32"]
    systems = ("npdistil", "pytorch", "onnxruntime")
    lines = [*_machine(r), *_graphs(r), *_throughput(r), *_ceiling(r), *_int8_reference(r)]
    lines += [*_small_weights(r), *_corpus(r)]
    lines += [
        "",
        f"### Start-up, memory, parity (ORT: {LABEL[ort]}, the fastest fp32 graph over all shapes)",
        "",
        "| | npdistil | PyTorch | ORT | npdistil/PyTorch |",
        "|---|---|---|---|---|",
        "| `python -c` to first embedding (median) | "
        + " | ".join(f"{s[n]['median']:.2f} s" for n in systems)
        + f" | {s['npdistil']['median'] / s['pytorch']['median']:.3f}x |",
        "| peak RSS, one 32x128 batch | "
        + " | ".join(f"{rss[n]['peak_rss_mb']:.0f} MB" for n in systems)
        + f" | {rss['npdistil']['peak_rss_mb'] / rss['pytorch']['peak_rss_mb']:.2f}x |",
        "| peak RSS, embedding one sentence (float32) | "
        f"{r['small_weights']['one_sentence_rss_mb']['float32']:.0f} MB | | | |",
        f"| max abs error vs PyTorch, 8x128 | {parity['npdistil_vs_pytorch']:.1e} | — | "
        f"{parity[f'{ort}_vs_pytorch']:.1e} | |",
        "",
        *_minilm_parity(r.get("minilm_parity")),
        "### Issue 12 targets",
        "",
        *_target_table(r["targets"]),
        "",
        "### Issue 3 targets, still watched",
        "",
        *_target_table(r["watched"]),
    ]
    tok = r["assets"]["checkpoint"]["tokenizer"]
    lines += [
        "",
        f"Weights: {r['assets']['checkpoint']['weights']} "
        f"({r['assets']['checkpoint']['n_params']:,} parameters, distilbert-base-cased's "
        f"shapes). Tokenizer: {tok['kind']}, {tok['vocab_size']:,} entries, trained on "
        f"{tok['trained_on']}.",
    ]
    return "\n".join(lines)
