"""Task heads in one line: what transformers' pipelines return, from npdistil's heads.

Each module turns one head's logits into the results people use, with the keys of the
transformers pipeline of the same task, so code written for ``pipeline(...)`` reads them
unchanged:

- ``fill_mask``: the likeliest tokens for each [MASK] (``score, token, token_str, sequence``)
- ``classify``: sequence labels with their scores (``label, score``), and multiple choice
- ``entities``: tagged words and B-/I- entities with character offsets
  (``entity_group`` or ``entity, word, start, end, score``)
- ``answer``: extractive question answering over contexts of any length
  (``answer, start, end, score``)

``Model.fill_mask`` (and the other methods of the same names) call these.
"""
