"""Tag vocabulary (names, Chinese names, thresholds) and the decision rule scores -> tags."""

from .decide import decide, effective_thresholds
from .vocab import OPEN_SET_THRESHOLD, Vocabulary, read_tag_list, read_thresholds

__all__ = [
    "OPEN_SET_THRESHOLD",
    "Vocabulary",
    "decide",
    "effective_thresholds",
    "read_tag_list",
    "read_thresholds",
]
