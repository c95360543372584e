"""Tag vocabulary (names, Chinese names, thresholds) and the decision rule logits -> tags."""

from .vocab import Vocabulary, read_tag_list, read_thresholds

__all__ = ["Vocabulary", "read_tag_list", "read_thresholds"]
