"""The three systems under test, each served from its own process.

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
    name = "npdistil"

    def __init__(self, assets: dict[str, Any]) -> None:
        import npdistil

        self.model = npdistil.load(assets["folder"], cache_dir=assets["npdistil_cache"])

    def describe(self) -> dict[str, Any]:
        import npdistil

        config: dict[str, Any] = {}
        with contextlib.suppress(TypeError):  # NumPy < 1.26 only prints its config
            config = np.show_config(mode="dicts")  # type: ignore[func-returns-value]
        build = config.get("Build Dependencies", {}).get("blas", {})
        return {
            "version": npdistil.__version__,
            "numpy": np.__version__,
            "numpy_blas_build": build,
            "threadpools": _blas_info(),
            "converted_file": str(self.model.path),
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

    def matmul_rates(self, shapes: list[tuple[int, int, int]], n: int) -> list[list[float]]:
        """GFLOP/s of float32 ``[m, k] @ [k, n]`` for each shape, ``n`` timings each."""
        rng = np.random.default_rng(0)
        rates = []
        for m, k, cols in shapes:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, cols), dtype=np.float32)
            out = np.empty((m, cols), dtype=np.float32)
            for _ in range(3):
                np.matmul(a, b, out=out)
            times = _timed(lambda a=a, b=b, out=out: np.matmul(a, b, out=out), n)
            rates.append([2 * m * k * cols / t / 1e9 for t in times])
        return rates


class PyTorch:
    name = "pytorch"

    def __init__(self, assets: dict[str, Any]) -> None:
        import torch
        from transformers import AutoTokenizer, DistilBertModel

        torch.set_num_threads(THREADS)
        self.torch = torch
        self.model = DistilBertModel.from_pretrained(assets["folder"]).eval()
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
        out = np.empty((len(texts), self.model.config.dim), dtype=np.float32)
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
    name = "onnxruntime"

    def __init__(self, assets: dict[str, Any]) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.ort = ort
        self.session = ort.InferenceSession(
            assets["onnx"], options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(os.path.join(assets["folder"], "tokenizer.json"))
        self.tokenizer.enable_truncation(512)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        with open(os.path.join(assets["folder"], "config.json")) as f:
            self.dim = json.load(f)["dim"]

    def describe(self) -> dict[str, Any]:
        return {
            "onnxruntime": self.ort.__version__,
            "providers": self.session.get_providers(),
            "intra_op_num_threads": THREADS,
            "graph_optimization_level": "ORT_ENABLE_ALL",
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


SYSTEMS = {s.name: s for s in (Npdistil, PyTorch, OnnxRuntime)}


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
