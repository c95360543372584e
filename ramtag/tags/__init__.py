"""Tag vocabulary (names, Chinese names, thresholds) and the decision rule scores -> tags."""

from .decide import decide, effective_thresholds
from .rename import parse_renames
from .vocab import OPEN_SET_THRESHOLD, Vocabulary, read_tag_list, read_thresholds

__all__ = [
    "OPEN_SET_THRESHOLD",
    "Vocabulary",
    "decide",
    "effective_thresholds",
    "parse_renames",
    "read_tag_list",
    "read_thresholds",
]
