"""Text in, vectors out: everything between a Python string and a sentence embedding except the
encoder itself.

- ``tokenizer.py``: texts -> token ids, with Hugging Face ``tokenizers`` (windows, pairs, offsets)
- ``sentence.py``: sentence-transformers' modules after the encoder (pooling, Dense, Normalize)
- ``vectors.py``: comparing and shrinking sentence embeddings (similarity, quantize_embeddings)
- ``encode.py``: ``encode``: texts -> token, word or sentence embeddings, any length, in order
"""
