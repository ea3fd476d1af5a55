"""Text normalization applied before scoring (docs/protocol.md, "Evaluation").

NFKC, lower case, '-' -> space, ASCII punctuation removed, runs of white space collapsed to one space,
stripped. Two variants for label lists (mAP): `keep_label_separator` keeps ';' while dropping the rest
of the punctuation (the `corrected` protocol), `remove_punctuation=False` keeps every punctuation mark
(the published system's mAP, so `official`).
"""

from __future__ import annotations

import re
import string
import unicodedata

_WHITESPACE = re.compile(r"\s+")
_DROP_ALL = str.maketrans("", "", string.punctuation)
_DROP_KEEP_SEPARATOR = str.maketrans("", "", string.punctuation.replace(";", ""))


def normalize_text(text: str, keep_label_separator: bool = False, remove_punctuation: bool = True) -> str:
    text = unicodedata.normalize("NFKC", str(text)).lower().replace("-", " ")
    if remove_punctuation:
        text = text.translate(_DROP_KEEP_SEPARATOR if keep_label_separator else _DROP_ALL)
    return _WHITESPACE.sub(" ", text).strip()
