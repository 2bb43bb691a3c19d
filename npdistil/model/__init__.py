"""The model itself: one transformer encoder for DistilBERT, BERT, RoBERTa (XLM-R, CamemBERT) and
MPNet, as a textbook writes it and as fast as NumPy runs it.

- ``config.py``: ``EncoderConfig``, built from a checkpoint's ``config.json`` (Hugging Face names)
- ``reference.py``: the forward pass in plain float64 NumPy; start reading here
- ``positions.py``: where each token is (RoBERTa's and MPNet's offset, MPNet's distance buckets)
- ``transformer.py``: the same forward pass, fast: packed batches, threads, in-place helpers
- ``numerics.py``: the building blocks the fast pass calls (linear, GELU, LayerNorm, attention)
- ``kernels.py``: splitting one pass between the CPU's cores, with BLAS held to one thread
- ``quantize.py``: int8 and float16 weights, widened to float32 just before each product
"""
