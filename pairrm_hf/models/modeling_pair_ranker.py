"""`PairRanker`: LLM-Blender's pairwise ranker on any ``AutoModel`` encoder (BERT, RoBERTa, XLM-R, ModernBERT, ...).

The row, pooling, head and loss are :class:`~pairrm_hf.DebertaV2PairRM`'s (one copy, :mod:`pairrm_hf.models.heads`):
``[CLS]<|source|>…[SEP][CLS]<|candidate1|>…[SEP][CLS]<|candidate2|>…[SEP]`` (CLS/SEP are the tokenizer's own, e.g.
``<s>``/``</s>`` for RoBERTa), pooled at the three prefix tokens; the head scores ``[source; candidate]`` for each
candidate and the logit is the task-mean difference, > 0 when candidate 1 is better.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import ModelOutput

from .heads import PAIR_LOSS_TYPES, PairHead, pair_loss, prefix_positions
from .modeling_encoder_ranker import EncoderRankerConfig, EncoderRankerPreTrainedModel

__all__ = ["PairRankerConfig", "PairRanker", "PairRankerOutput", "PAIR_LOSS_TYPES"]


class PairRankerConfig(EncoderRankerConfig):
    """Config of :class:`PairRanker` (fields of :class:`~pairrm_hf.models.modeling_encoder_ranker.EncoderRankerConfig`).

    Attributes:
        loss_type: ``"instructgpt"`` (default, PairRM's loss) or ``"BCE"`` (see :data:`PAIR_LOSS_TYPES`).
    """

    model_type = "pairrm-pair-ranker"
    loss_type: str = "instructgpt"


@dataclass
class PairRankerOutput(ModelOutput):
    """Output of :class:`PairRanker`.

    Attributes:
        loss: scalar training loss, present when ``labels`` were given.
        logits: ``[batch]`` task-mean of ``candidate1_scores − candidate2_scores``; > 0 means candidate 1 is better.
        candidate1_scores / candidate2_scores: ``[batch, n_tasks]`` head outputs for ``[source; candidateK]``.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    candidate1_scores: torch.FloatTensor | None = None
    candidate2_scores: torch.FloatTensor | None = None


class PairRanker(EncoderRankerPreTrainedModel):
    """Compares two candidate answers to one source in a single encoder row (LLM-Blender's PairRanker)."""

    config_class = PairRankerConfig
    ranking_style = "pairwise"

    def __init__(self, config: PairRankerConfig):
        super().__init__(config)
        if config.loss_type not in PAIR_LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {PAIR_LOSS_TYPES}, got {config.loss_type!r}")
        self._build_encoder(config)
        self.head_layer = PairHead(self.hidden_size, config.n_tasks, config.drop_out)
        self.post_init()

    @staticmethod
    def row_length(source_max_length: int, candidate_max_length: int) -> int:
        """Longest row: the source segment plus two candidate segments."""
        return source_max_length + 2 * candidate_max_length

    def _prefix_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[batch, 3]`` positions of the source/candidate1/candidate2 prefix tokens (exactly one of each per row)."""
        return prefix_positions(input_ids, self.prefix_ids)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> PairRankerOutput | tuple:
        """Score candidate 1 against candidate 2 for each row.

        Args:
            input_ids: ``[batch, seq]`` packed rows, each with exactly one of each prefix token.
            attention_mask: ``[batch, seq]``, 1 for real tokens.
            labels: ``[batch]`` or ``[batch, n_tasks]``; the sign says which candidate is better
                (+ → candidate 1, − → candidate 2, 0 → no preference).
        Returns:
            :class:`PairRankerOutput` with ``logits`` of shape ``[batch]``.
        """
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError("input_ids must be a 2-D tensor [batch, seq] of token ids")
        positions = self._prefix_positions(input_ids)
        hidden = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        left, right, logits = self.head_layer.compare(hidden.last_hidden_state, positions)
        loss = self.pairwise_loss(left, right, labels) if labels is not None else None
        result = PairRankerOutput(loss=loss, logits=logits, candidate1_scores=left, candidate2_scores=right)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return result if return_dict else result.to_tuple()

    def pairwise_loss(self, left: torch.Tensor, right: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The configured loss for ``[batch, n_tasks]`` head outputs and ``[batch]``/``[batch, n_tasks]`` labels.

        ``instructgpt``: ``-mean(logsigmoid(sign(labels) * (left - right)))``. ``BCE``: the mean of
        ``BCE(left, labels > 0)`` and ``BCE(right, labels < 0)`` (each side classified as the better one).
        """
        return pair_loss(left, right, labels, self.config.loss_type)
