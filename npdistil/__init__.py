"""npdistil: DistilBERT, BERT, RoBERTa and MPNet in pure NumPy, with transformers' numbers.

This module only hands on the public names. The package is laid out by concern, each layer
importing only the ones below it:

- ``cli/``, ``spark/``, ``inside.py``, ``system.py``: the ways in (command line, Spark,
  looking inside a model, what it runs on)
- ``api.py``: ``load`` and ``Model``, the face every way in uses
- ``tasks/``: transformers' pipelines (fill-mask, classification, entities, answers) on the heads
- ``weights/``: Hub downloads, checkpoint readers, conversion to npdistil's file, its cache
- ``text/``: tokenizer, sentence-transformers modules, ``encode``
- ``model/``: the transformer itself, textbook (``reference.py``) and fast (``transformer.py``)
- ``errors.py``: npdistil's own exceptions

>>> import npdistil
>>> npdistil.EncoderConfig().dim
768
"""

import sys as _sys

from . import inside
from .api import DistilBert, Model, load
from .errors import (
    CheckpointError,
    ConfigError,
    HubError,
    HubUnreachableError,
    InputError,
    InputTypeError,
    IntegrityError,
    NpdistilError,
    TextTooLongError,
    UnsafeCheckpointError,
)
from .model import reference
from .model.config import DistilBertConfig, EncoderConfig
from .model.transformer import ModelOutput
from .text.sentence import SentenceModel
from .text.tokenizer import Batch, Tokenizer
from .text.vectors import quantize_embeddings
from .weights.convert import convert_folder

# ``import npdistil.reference`` (its home before the package had folders) keeps working.
_sys.modules[__name__ + ".reference"] = reference

__version__ = "0.1.0"

__all__ = [
    "load",
    "Model",
    "DistilBert",
    "EncoderConfig",
    "DistilBertConfig",
    "ModelOutput",
    "Tokenizer",
    "Batch",
    "SentenceModel",
    "quantize_embeddings",
    "convert_folder",
    "inside",
    "reference",
    "NpdistilError",
    "ConfigError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "IntegrityError",
    "HubError",
    "HubUnreachableError",
    "InputError",
    "InputTypeError",
    "TextTooLongError",
]
