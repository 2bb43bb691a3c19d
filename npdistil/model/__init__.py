"""The model itself: one transformer encoder for DistilBERT and BERT, as a textbook writes it and
as fast as NumPy runs it.

- ``config.py``: ``EncoderConfig``, built from a checkpoint's ``config.json`` (Hugging Face names)
- ``reference.py``: the forward pass in plain float64 NumPy; start reading here
- ``transformer.py``: the same forward pass, fast: packed batches, threads, in-place helpers
- ``numerics.py``: the building blocks the fast pass calls (linear, GELU, LayerNorm, attention)
- ``kernels.py``: splitting one pass between the CPU's cores, with BLAS held to one thread
- ``quantize.py``: int8 and float16 weights, widened to float32 just before each product
"""
