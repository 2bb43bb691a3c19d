"""The public face of npdistil: ``load`` a model, call it on token ids, run its task heads.

This module is longer than the others (~650 lines) on purpose: ``Model`` is the whole public
surface in one class, so that a reader (and ``help(npdistil.Model)``) sees every method and
its documented options in one place. Each method is a short, checked wrapper around the module
that does the work (``model.transformer``, ``text.encode``, ``tasks.*``); none holds logic of
its own beyond checking its inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from . import system
from .errors import InputError, InputTypeError, NpdistilError
from .model import transformer as M
from .model.config import EncoderConfig
from .tasks import answer as _answer
from .tasks import classify as _classify
from .tasks import entities as _entities
from .tasks import fill_mask as _fill_mask
from .text import encode as E
from .text import sentence as S
from .text import vectors as V
from .text.tokenizer import Tokenizer
from .weights.convert import ConvertedFile
from .weights.layout import Heads
from .weights.loader import DEFAULT_MODEL, resolve

__all__ = ["Model", "Model", "load"]


def load(
    source: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    hf_cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> Model:
    """Load a model: DistilBERT, BERT, RoBERTa, XLM-RoBERTa, CamemBERT or MPNet, plain or with
    task heads, or a sentence-transformers model of any of them.

    ``source`` is a Hub repository id (``"distilbert-base-cased"``, ``"org/name"``), a local
    folder laid out like a Hub snapshot (``config.json``, ``model.safetensors`` or
    ``pytorch_model.bin``, tokenizer files), or an npdistil ``.safetensors`` file. Checkpoints
    are downloaded (to the Hugging Face cache) and converted (to npdistil's cache) once; later
    loads memory-map the converted file and make no network request.

    >>> model = load("tests/fixtures/tiny")  # this repository's tiny test model, 20 wide
    >>> model
    Model(DistilBERT: ..., dim=20, n_layers=3, n_heads=4, vocab_size=700, heads: none)
    """
    system.check_blas()  # warns once if NumPy's BLAS runs below the CPU's best kernel
    return Model(
        resolve(
            source,
            revision=revision,
            cache_dir=cache_dir,
            hf_cache_dir=hf_cache_dir,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
        )
    )


class Model:
    """A loaded model of any family npdistil runs (DistilBERT, BERT):
    ``model(input_ids, attention_mask)`` runs the encoder; ``encode`` embeds texts; the task
    methods run its heads.

    Its weights are read-only views of a memory-mapped file; calls keep no state, so one model
    can serve many threads at once.
    """

    def __init__(self, converted: ConvertedFile) -> None:
        self._file = converted
        self.config: EncoderConfig = converted.config
        self._sentence = converted.sentence or S.PLAIN
        self._max_seq_length = self._sentence.max_seq_length  # None: plain, windows
        self._tokenizer = (
            Tokenizer(
                converted.tokenizer_json,
                converted.config.max_tokens,
                converted.config.pad_token_id,
                # RoBERTa's one token type is always 0: its tokenizers give none
                token_types=converted.config.type_vocab_size > 1,
                lowercase=self._sentence.do_lower_case,
            )
            if converted.tokenizer_json is not None
            else None
        )

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """A model pickles as a reference to its converted file, which unpickling opens again
        (a memory map, on the same machine or a path every machine sees): a few hundred bytes,
        never the weights, however the model is shipped (pickle, cloudpickle, Spark, joblib)."""
        return load, (str(self.path),)

    def __repr__(self) -> str:
        c = self.config
        heads = ", ".join(self.task_heads) or "none"
        return (
            f"Model({c.family}: {self.path}, dim={c.dim}, "
            f"n_layers={c.n_layers}, n_heads={c.n_heads}, "
            f"vocab_size={c.vocab_size}, heads: {heads})"
        )

    @property
    def path(self) -> Path:
        """The npdistil file the weights are mapped from."""
        return self._file.path

    @property
    def dtype(self) -> str:
        """How the file stores its big matrices: "float32", or "float16" / "int8" for a
        small-weights file (computation is float32 either way)."""
        return self._file.dtype

    @property
    def source(self) -> dict[str, Any]:
        """Where the weights came from: repo, revision, commit, file and its sha256."""
        return dict(self._file.source)

    @property
    def weights(self) -> M.Weights:
        """The encoder's typed weights (``model.Weights``), read-only views of the mapped file:
        what ``npdistil.reference.forward`` and ``npdistil info --tensors`` read."""
        return self._file.weights

    @property
    def tokenizer(self) -> Tokenizer:
        """The checkpoint's tokenizer: ``model.tokenizer(texts)`` gives a padded Batch."""
        if self._tokenizer is None:
            raise NpdistilError(f"{self.path}: this checkpoint came without a tokenizer")
        return self._tokenizer

    @property
    def task_heads(self) -> tuple[str, ...]:
        """The task heads the checkpoint has (``masked_lm``, ``sequence_classification``, ...);
        BERT's pooler is part of the encoder's output, not listed here."""
        heads = self._file.heads._asdict().items()
        return tuple(k for k, v in heads if v is not None and k != "pooler")

    # ---- the encoder --------------------------------------------------------------------------

    def __call__(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray | None = None,
        *,
        token_type_ids: np.ndarray | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> M.ModelOutput:
        """Run the encoder on a batch of token ids, as transformers' ``DistilBertModel`` or
        ``BertModel``.

        ``input_ids`` is [B, T] integers (a 1-D [T] array is taken as one sequence);
        ``attention_mask`` is [B, T] of 0 and 1, all ones when omitted; ``token_type_ids``
        (BERT: 0 for the first text of a pair, 1 for the second) is [B, T], all zeros when
        omitted; DistilBERT has no token types and refuses non-zero ones. Returns float32
        ``last_hidden_state`` [B, T, D], on request ``hidden_states`` (embeddings, then every
        layer) and ``attentions`` ([B, H, T, T] probabilities per layer), and for a BERT with a
        pooler ``pooler_output`` [B, D].
        """
        ids, mask, types = self._check_inputs(input_ids, attention_mask, token_type_ids)
        out = M.forward(
            ids,
            mask,
            self._file.weights,
            self.config,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            token_type_ids=types,
        )
        pooler = self._file.heads.pooler
        if pooler is None:
            return out
        return out._replace(pooler_output=M.pooler_output(out.last_hidden_state, pooler))

    def _check_inputs(
        self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        ids = np.asarray(input_ids)
        if ids.dtype == object or not (ids.dtype.kind in "iu" or ids.size == 0):
            raise InputTypeError(f"input_ids must be integers, got dtype {ids.dtype}")
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2:
            raise InputError(f"input_ids must be [batch, tokens], got shape {ids.shape}")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise InputError(f"input_ids is empty (shape {ids.shape})")
        c = self.config
        if ids.shape[1] > c.max_tokens:
            raise InputError(
                f"input_ids has {ids.shape[1]} tokens, more than the model's "
                f"{c.max_tokens} positions (model.encode handles long texts)"
            )
        bad = (ids < 0) | (ids >= c.vocab_size)
        if bad.any():
            b, t = (int(i) for i in np.argwhere(bad)[0])
            raise InputError(
                f"input_ids[{b}, {t}] = {ids[b, t]} is outside the vocabulary [0, {c.vocab_size})"
            )
        types = self._check_token_types(token_type_ids, ids.shape)
        if attention_mask is None:
            return ids, np.ones(ids.shape, dtype=np.int64), types
        mask = np.asarray(attention_mask)
        if mask.ndim == 1:
            mask = mask[None, :]
        if mask.shape != ids.shape:
            raise InputError(f"attention_mask has shape {mask.shape}, input_ids {ids.shape}")
        if mask.dtype == object or not np.isin(mask, (0, 1)).all():
            raise InputError("attention_mask must hold only 0 and 1")
        return ids, mask, types

    def _check_token_types(self, token_type_ids: Any, shape: tuple[int, ...]) -> np.ndarray | None:
        """Token type ids checked against the input's shape and the model's types; None when
        they change nothing (omitted, or all zeros in DistilBERT)."""
        if token_type_ids is None:
            return None
        types = np.asarray(token_type_ids)
        if types.dtype == object or not (types.dtype.kind in "iu" or types.size == 0):
            raise InputTypeError(f"token_type_ids must be integers, got dtype {types.dtype}")
        if types.ndim == 1:
            types = types[None, :]
        if types.shape != shape:
            raise InputError(f"token_type_ids has shape {types.shape}, input_ids {shape}")
        n = self.config.type_vocab_size
        if n == 0:
            if types.any():
                raise InputError(
                    f"{self.config.model_type} has no token-type embeddings: token_type_ids must "
                    "be all zeros or omitted (pass only input_ids and attention_mask)"
                )
            return None
        bad = (types < 0) | (types >= n)
        if bad.any():
            b, t = (int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"token_type_ids[{b}, {t}] = {types[b, t]} is outside [0, {n})")
        return types

    # ---- embeddings ---------------------------------------------------------------------------

    def forward_packed(
        self,
        sequences: Sequence[np.ndarray],
        token_types: Sequence[np.ndarray] | None = None,
        *,
        first_only: bool = False,
    ) -> list[np.ndarray]:
        """The last hidden state of each sequence of token ids (special tokens included),
        [n_i] -> [n_i, D], run together without padding: each sequence's numbers are those it
        gets alone (``model.forward_packed``). With ``first_only``, only the first token's,
        [1, D], for less work (the same numbers). Sequences are not checked: give ids from
        ``model.tokenizer``."""
        return M.forward_packed(
            sequences, self._file.weights, self.config, token_types, first_only=first_only
        )

    @property
    def sentence_modules(self) -> S.SentenceModel:
        """What runs after the encoder in ``encode``: a sentence-transformers folder's modules
        (Pooling, Dense, Normalize), prompts and settings; mean pooling for a plain checkpoint."""
        return self._sentence

    @property
    def max_seq_length(self) -> int:
        """Longest tokenization ``encode`` runs, special tokens included: a
        sentence-transformers model's ``max_seq_length`` (longer texts are truncated, as
        there); for a plain checkpoint the model's positions (longer texts run in windows).
        Setting it makes ``encode`` truncate there, as in sentence-transformers."""
        return self._max_seq_length or self.config.max_tokens

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        limit = self.config.max_tokens
        if not isinstance(value, int) or not 2 < value <= limit:
            raise InputError(f"max_seq_length must be an integer in [3, {limit}], got {value!r}")
        self._max_seq_length = value

    @property
    def prompts(self) -> dict[str, str]:
        """The model's prompts by name (config_sentence_transformers.json), for ``prompt_name``."""
        return dict(self._sentence.prompts)

    @property
    def default_prompt_name(self) -> str | None:
        """The prompt ``encode`` puts before every text unless told otherwise."""
        return self._sentence.default_prompt_name

    @property
    def similarity_fn_name(self) -> str:
        """``similarity``'s function: the model's ("cosine", "dot", "euclidean",
        "manhattan"), cosine when it names none."""
        return self._sentence.similarity_fn_name or "cosine"

    def get_sentence_embedding_dimension(self) -> int:
        """The width of ``encode``'s sentence embeddings (after Pooling, Dense, truncate_dim)."""
        return self._sentence.dimension(self.config.dim)

    get_embedding_dimension = get_sentence_embedding_dimension  # sentence-transformers >= 6

    def similarity(self, a: Any, b: Any) -> np.ndarray:
        """Every embedding of ``a`` against every one of ``b`` ([N, E] or [E] each) with the
        model's similarity function: float32 [N, M], higher is more similar.

        >>> model = load("tests/fixtures/st-bert-mean-normalize")  # tiny sentence-transformers
        >>> a, b = model.encode(["a cat"]), model.encode(["a dog", "tax law"])
        >>> model.similarity(a, b).shape, model.similarity_fn_name
        ((1, 2), 'cosine')
        """
        return V.similarity(a, b, self.similarity_fn_name)

    def similarity_pairwise(self, a: Any, b: Any) -> np.ndarray:
        """``a[i]`` against ``b[i]`` for every i, float32 [N]."""
        return V.similarity_pairwise(a, b, self.similarity_fn_name)

    def encode(
        self,
        texts: str | Iterable[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        output_value: E.OutputValue = "sentence_embedding",
        precision: E.Precision = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        pooling: E.Pooling | None = None,
        long_text: E.LongText | None = None,
        window: int | None = None,
        stride: int | None = None,
        word_pooling: E.WordPooling = "first",
        include_special_tokens: bool = False,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> Any:
        """Embed texts, as sentence-transformers' ``encode``, in input order. One text (a
        ``str``) gives one result (a 1-D vector), a list of texts a list (an [N, E] array).

        With no options, a sentence-transformers model gives what
        ``SentenceTransformer(folder).encode(texts)`` gives: its Pooling, Dense and Normalize
        modules, its default prompt, truncation at its ``max_seq_length``. A plain checkpoint
        gives mean pooling over every token, long texts in windows. Options override:

        - ``output_value``: ``"sentence_embedding"`` (default, float32 [N, E]);
          ``"token_embeddings"`` (per text float32 [n, D], [CLS] and [SEP] included, as
          sentence-transformers); ``"tokens"`` (per text a TokenEmbeddings: vectors, token
          strings, character offsets, word ids; ``include_special_tokens`` keeps [CLS] and
          [SEP]); ``"word_embeddings"`` (per text a WordEmbeddings, one vector per word from its
          pieces by ``word_pooling`` ``"first"``, ``"mean"`` or ``"max"``).
        - ``pooling``: ``"mean"``, ``"cls"``, ``"max"``, ``"mean_sqrt_len_tokens"``,
          ``"weightedmean"``, ``"lasttoken"`` instead of the model's.
        - ``prompt`` / ``prompt_name``: text put before each text (``model.prompts``).
        - ``normalize_embeddings``: unit length; ``truncate_dim``: keep the first dimensions.
        - ``precision``: ``"int8"``, ``"uint8"`` (ranges from the embeddings of this call),
          ``"binary"``, ``"ubinary"`` (bits packed 8 per byte): see ``quantize_embeddings``.
        - ``long_text``: ``"window"`` (overlapping windows of ``window`` tokens sharing
          ``stride``; each token keeps the vector of the window where it has the most context),
          ``"truncate"``, or ``"error"`` (TextTooLongError).
        - ``convert_to_numpy=False`` gives a list of vectors; there is no torch, so
          ``convert_to_tensor=True`` and a ``device`` other than ``"cpu"`` are refused.

        Texts are batched ``batch_size`` at a time, sorted by length; ``show_progress_bar``
        shows a bar per batch, and ``on_batch(done, total)``, if given, is called as each batch
        finishes (pieces done so far and in all: a piece is a text, or one window of a long
        text).

        >>> model = load("tests/fixtures/tiny")  # 20 wide; distilbert-base-cased gives 768
        >>> model.encode(["Hello world!", "Hi"]).shape
        (2, 20)
        """
        return E.encode(
            texts,
            self.tokenizer,
            self.forward_packed,
            sentence=self._sentence,
            max_seq_length=self._max_seq_length,
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            output_value=output_value,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
            normalize_embeddings=normalize_embeddings,
            truncate_dim=truncate_dim,
            pooling=pooling,
            long_text=long_text,
            window=window,
            stride=stride,
            word_pooling=word_pooling,
            include_special_tokens=include_special_tokens,
            on_batch=on_batch,
            run_first=self._first_tokens,
        )

    def _first_tokens(self, sequences: list[np.ndarray]) -> list[np.ndarray]:
        return self.forward_packed(sequences, first_only=True)

    def iter_encode(
        self, texts: Iterable[str], *, chunk_size: int = 4096, **options: Any
    ) -> Iterator[Any]:
        """``encode`` over an iterable of any size (a file, a generator), in bounded memory:
        yields the results of each ``chunk_size`` texts, in input order. Takes the options of
        ``encode``."""
        return E.iter_encode(
            texts,
            self.tokenizer,
            self.forward_packed,
            chunk_size=chunk_size,
            sentence=self._sentence,
            max_seq_length=self._max_seq_length,
            run_first=self._first_tokens,
            **options,
        )

    # ---- task heads ---------------------------------------------------------------------------

    def head(self, kind: str) -> Any:
        """The weights of one task head (``"masked_lm"``, ``"sequence_classification"``,
        ``"token_classification"``, ``"question_answering"``), or an NpdistilError naming the
        heads this checkpoint has."""
        head = getattr(self._file.heads, kind)
        if head is None:
            have = ", ".join(self.task_heads) or "none"
            raise NpdistilError(f"{self.path}: this checkpoint has no {kind} head (heads: {have})")
        return head

    def masked_lm(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray | None = None,
        *,
        token_type_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        """Logits over the vocabulary for every token, [B, T, V] (DistilBertForMaskedLM,
        BertForMaskedLM)."""
        head = self.head("masked_lm")
        hidden = self(input_ids, attention_mask, token_type_ids=token_type_ids).last_hidden_state
        return M.masked_lm_logits(hidden, head, self.config)

    def fill_mask(
        self,
        texts: str | Iterable[str],
        *,
        top_k: int = 5,
        targets: str | list[str] | None = None,
    ) -> list[Any]:
        """The likeliest tokens for each mask token (``model.tokenizer.mask_token``) of each
        text, as transformers' ``pipeline("fill-mask")``: dicts with ``score``, ``token``,
        ``token_str`` and ``sequence``, best first. One text with one mask gives a list of
        ``top_k`` dicts; with several masks, one such list per mask; a list of texts gives a
        list of those. ``targets`` limits the candidates to these tokens.

        >>> model = load("tests/fixtures/tiny-mlm")  # random weights: random guesses
        >>> best = model.fill_mask("A class definition is an executable [MASK].", top_k=2)
        >>> [(b["token_str"], round(b["score"], 3)) for b in best]
        [('##tribute', 0.067), ('un', 0.058)]
        >>> best[0]["sequence"]
        'A class definition is an executabletribute.'
        """
        return _fill_mask.fill_mask(self, texts, top_k=top_k, targets=targets)

    def sequence_classification(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray | None = None,
        *,
        token_type_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        """Logits per label for each sequence, [B, L] (DistilBertForSequenceClassification,
        BertForSequenceClassification, RobertaForSequenceClassification, ...);
        ``model.config.id2label`` names the labels. Only the first token is read, so the last
        layer runs for it alone (the same numbers as the full pass)."""
        head = self.head("sequence_classification")
        ids, mask, types = self._check_inputs(input_ids, attention_mask, token_type_ids)
        first = M.forward(ids, mask, self._file.weights, self.config, token_type_ids=types,
                          first_only=True)  # fmt: skip
        return M.sequence_classification_logits(first.last_hidden_state, head)  # [B, 1, D]

    def classify(
        self,
        texts: str | Iterable[str],
        pairs: str | Iterable[str] | None = None,
        *,
        top_k: int | None = 1,
        function_to_apply: str | None = None,
    ) -> list[Any]:
        """Label each text (or each text pair) with the sequence classifier, as transformers'
        ``pipeline("text-classification", top_k=...)``: the ``top_k`` best labels (``None``:
        all), best first, as ``{"label", "score"}`` dicts named by ``config.id2label``. One
        text gives one list; a list of texts, a list of lists. Scores are a softmax over the
        labels, or a sigmoid per label for ``problem_type`` "multi_label_classification" and
        single-label heads, or raw for "regression"; ``function_to_apply`` ("softmax",
        "sigmoid", "none") overrides.

        >>> model = load("tests/fixtures/tiny-seqcls")  # random weights: random labels
        >>> model.classify("Hello world!")
        [{'label': 'negative', 'score': 0.733...}]
        """
        return _classify.classify(
            self, texts, pairs, top_k=top_k, function_to_apply=function_to_apply
        )

    def multiple_choice(self, prompt: str, choices: list[str]) -> list[dict[str, Any]]:
        """Score each choice as the continuation of (or answer to) ``prompt`` with a
        multiple-choice head (DistilBertForMultipleChoice, BertForMultipleChoice): a softmax
        over the choices, best first, as ``{"choice", "index", "score"}`` dicts.

        >>> model = load("tests/fixtures/tiny-mc")  # random weights: random choices
        >>> [c["index"] for c in model.multiple_choice("Hello", ["world!", "The", "class"])]
        [...]
        """
        return _classify.multiple_choice(self, prompt, choices)

    def token_classification(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray | None = None,
        *,
        token_type_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        """Logits per label for every token, [B, T, L] (...ForTokenClassification)."""
        head = self.head("token_classification")
        hidden = self(input_ids, attention_mask, token_type_ids=token_type_ids).last_hidden_state
        return M.token_classification_logits(hidden, head)

    @overload
    def entities(  # type: ignore[overload-overlap]  # a str is an Iterable[str] too
        self,
        texts: str,
        *,
        aggregation_strategy: _entities.AggregationStrategy = ...,
        ignore_labels: Iterable[str] = ...,
        stride: int | None = ...,
        batch_size: int = ...,
    ) -> list[dict[str, Any]]: ...

    @overload
    def entities(
        self,
        texts: Iterable[str],
        *,
        aggregation_strategy: _entities.AggregationStrategy = ...,
        ignore_labels: Iterable[str] = ...,
        stride: int | None = ...,
        batch_size: int = ...,
    ) -> list[list[dict[str, Any]]]: ...

    def entities(
        self,
        texts: str | Iterable[str],
        *,
        aggregation_strategy: _entities.AggregationStrategy = "simple",
        ignore_labels: Iterable[str] = ("O",),
        stride: int | None = None,
        batch_size: int = 32,
    ) -> Any:
        """Named entities (or any token tags) in one line, as transformers'
        ``pipeline("token-classification")(texts, aggregation_strategy=..., ignore_labels=...,
        stride=...)`` gives them: for one text a list of dicts, for a list of texts one list
        each. ``aggregation_strategy`` is ``"simple"`` (default), ``"first"``, ``"average"``,
        ``"max"`` (entity groups: ``entity_group, score, word, start, end``) or ``"none"`` (every
        word piece: ``entity, score, index, word, start, end``); texts longer than the model's
        positions are truncated with a warning, or with ``stride`` tagged whole in overlapping
        windows. ``npdistil.tasks.entities.entities`` tells the details.

        >>> model = load("tests/fixtures/tiny-tokcls")  # random weights: random tags
        >>> model.entities("Hello world!", aggregation_strategy="first")
        [{'entity_group': 'PER', 'score': 0.47..., 'word': 'Hello', 'start': 0, 'end': 5},
         {'entity_group': 'LOC', 'score': 0.57..., 'word': 'world', 'start': 6, 'end': 11},
         {'entity_group': 'LOC', 'score': 0.75..., 'word': '!', 'start': 11, 'end': 12}]
        """
        return _entities.entities(
            self,
            texts,
            aggregation_strategy=aggregation_strategy,
            ignore_labels=ignore_labels,
            stride=stride,
            batch_size=batch_size,
        )

    def question_answering(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray | None = None,
        *,
        token_type_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Start and end logits for every token, each [B, T] (...ForQuestionAnswering); for a
        question and a context, ``model.tokenizer(questions, contexts)`` makes the batch."""
        head = self.head("question_answering")
        hidden = self(input_ids, attention_mask, token_type_ids=token_type_ids).last_hidden_state
        return M.question_answering_logits(hidden, head)

    def answer(
        self,
        question: str | Sequence[str],
        context: str | Sequence[str],
        *,
        top_k: int = 1,
        max_answer_len: int = _answer.MAX_ANSWER_LEN,
        doc_stride: int | None = None,
        max_seq_len: int | None = None,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
        batch_size: int = _answer.BATCH_SIZE,
    ) -> _answer.Result | list[_answer.Result]:
        """Extractive question answering, as transformers' question-answering pipeline: the
        span of ``context`` that best answers ``question``, as a dict with the pipeline's keys
        ``score``, ``start``, ``end`` (character offsets: ``context[start:end]``) and
        ``answer``. A list of questions, of contexts, or of both (pairwise) gives a list of
        results; ``top_k`` > 1 gives, per question, a list of the best answers (fewer if the
        context has fewer), best first.

        Contexts of any length run in windows of ``max_seq_len`` tokens (default: the model's
        positions, at most 384) holding the whole question, neighbours sharing ``doc_stride``
        tokens (default: half a window, at most 128). Answers are at most ``max_answer_len``
        tokens (the pipeline's 15), widened to whole words unless ``align_to_words=False``.
        With ``handle_impossible_answer``, "no answer" (``answer`` "", ``start`` and ``end``
        0) is returned when its score wins. Windows run ``batch_size`` at a time.

        >>> model = load("tests/fixtures/tiny-qa")  # random weights: the answer is arbitrary
        >>> model.answer("Who wrote it?", "Ada Lovelace wrote it in 1843.")
        {'score': 0.0131..., 'start': 4, 'end': 18, 'answer': 'Lovelace wrote'}
        """
        return _answer.answer(
            self,
            question,
            context,
            top_k=top_k,
            max_answer_len=max_answer_len,
            doc_stride=doc_stride,
            max_seq_len=max_seq_len,
            handle_impossible_answer=handle_impossible_answer,
            align_to_words=align_to_words,
            batch_size=batch_size,
        )

    @property
    def heads(self) -> Heads:
        """The typed weights of the task heads (None where the checkpoint has none)."""
        return self._file.heads


# The class's name before npdistil ran more than one family; code written for it keeps working.
DistilBert = Model
