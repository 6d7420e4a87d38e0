"""Rows of a plain transformers sequence classifier that reads ``(prompt, response)`` as one text pair.

A student distilled from PairRM (:mod:`pairrm_hf.training.distillation`) is such a classifier. It was trained on
``tokenizer(prompts, responses, truncation=True, max_length=...)``, so it is scored on exactly those rows: the
tokenizer's own pair template and special tokens, truncated longest-first, with its token type ids when it makes
them. The engine (:meth:`pairrm_hf.ranking.engine.PairwiseEngine.text_pair_scores`) batches and pads the rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from ..utils.checks import check_positive_int, check_same_length

__all__ = ["TextPairEncoder"]


class TextPairEncoder:
    """Turns ``(prompt, response)`` text pairs into a text-pair classifier's token rows.

    Args:
        tokenizer: the classifier's tokenizer; it needs a pad token (the engine pads batches with it).
        max_length: most tokens per row; longer pairs are cut longest-first, as in training.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int = 512):
        check_positive_int("max_length", max_length)
        if tokenizer.pad_token_id is None:
            raise ValueError("the classifier's tokenizer has no pad token; set tokenizer.pad_token first")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id

    def encode(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]] | None]:
        """``(input_ids rows, token_type_ids rows or None)`` of the pairs ``(prompts[k], responses[k])``, unpadded;
        the type ids are ``None`` when the tokenizer does not make them."""
        check_same_length("prompts", prompts, responses=responses)
        if not prompts:
            return [], None
        batch = self.tokenizer(list(prompts), list(responses), truncation=True, max_length=self.max_length)
        return [list(r) for r in batch["input_ids"]], batch.get("token_type_ids")
