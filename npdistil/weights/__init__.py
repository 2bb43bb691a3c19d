"""Getting and storing weights: from a Hub id, a local folder or a checkpoint file to one
memory-mapped npdistil file.

- ``hub.py``: downloads through ``huggingface_hub`` (and its cache), with clear errors offline
- ``torch_zip.py``: ``pytorch_model.bin`` read without torch, by a symbolic unpickler
- ``storage.py``: safetensors files read strictly and memory-mapped; files written whole
- ``layout.py``: checkpoint tensor names -> npdistil's typed weights, one table per model type
- ``convert.py``: a Hugging Face folder -> one self-contained npdistil safetensors file
- ``loader.py``: where a model comes from (Hub id, folder, npdistil file), converted once
- ``cache.py``: what is in npdistil's cache of converted files, and tidying it
"""
