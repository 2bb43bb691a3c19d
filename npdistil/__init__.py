"""npdistil: DistilBERT and BERT in pure NumPy, with the numbers of Hugging Face transformers.

>>> import npdistil
>>> npdistil.EncoderConfig().dim
768
"""

from .api import DistilBert, load
from .config import DistilBertConfig, EncoderConfig
from .convert import convert_folder
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
from .model import ModelOutput
from .sentence import SentenceModel, quantize_embeddings
from .tokenizer import Batch, Tokenizer

__version__ = "0.1.0"

__all__ = [
    "load",
    "DistilBert",
    "EncoderConfig",
    "DistilBertConfig",
    "ModelOutput",
    "Tokenizer",
    "Batch",
    "SentenceModel",
    "quantize_embeddings",
    "convert_folder",
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
