"""Text normalization applied before scoring (PROTOCOL.md, "Evaluation").

NFKC, lower case, '-' -> space, ASCII punctuation removed (';' kept for mAP, where it separates
labels), runs of white space collapsed to one space, stripped.
"""

from __future__ import annotations

import re
import string
import unicodedata

_WHITESPACE = re.compile(r"\s+")
_DROP_ALL = str.maketrans("", "", string.punctuation)
_DROP_KEEP_SEPARATOR = str.maketrans("", "", string.punctuation.replace(";", ""))


def normalize_text(text: str, keep_label_separator: bool = False) -> str:
    text = unicodedata.normalize("NFKC", str(text)).lower().replace("-", " ")
    text = text.translate(_DROP_KEEP_SEPARATOR if keep_label_separator else _DROP_ALL)
    return _WHITESPACE.sub(" ", text).strip()
