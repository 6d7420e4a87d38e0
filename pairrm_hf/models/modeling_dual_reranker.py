"""`DualReranker`: LLM-Blender's SimCLS-style dual encoder.

One shared encoder embeds the source row ``[CLS]<|source|>…[SEP]`` and each candidate row
``[CLS]<|candidate|>…[SEP]`` on their own; each embedding is the last hidden state at position 0, L2-normalised,
and a candidate's score is its cosine similarity with the source. Ranking n candidates costs 1 + n encodings (the
source once). Training uses SimCLS's loss: candidates sorted by their metric score must keep that order with a
margin that grows with the rank distance (``(j − i) / n``), and, when the row has a reference answer (``target``),
no candidate may score above it (margin 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import ModelOutput

from .modeling_encoder_ranker import EncoderRankerConfig, EncoderRankerPreTrainedModel

__all__ = ["DualRerankerConfig", "DualReranker", "DualRerankerOutput", "simcls_loss"]


class DualRerankerConfig(EncoderRankerConfig):
    """Config of :class:`DualReranker` (the fields of :class:`~pairrm_hf.models.modeling_encoder_ranker.EncoderRankerConfig`;
    ``n_tasks`` and ``drop_out`` are unused: the score is one cosine similarity).

    Attributes:
        rank_margin: the SimCLS margin unit; candidates ``j − i`` ranks apart must differ by ``rank_margin·(j−i)/n``.
    """

    model_type = "pairrm-dual-reranker"
    rank_margin: float = 1.0


@dataclass
class DualRerankerOutput(ModelOutput):
    """Output of :class:`DualReranker`.

    Attributes:
        loss: the SimCLS loss, present when ``labels`` were given.
        logits: ``[batch, n_candidates]`` cosine similarity of each candidate with its source (0 for padding slots).
        target_scores: ``[batch]`` cosine similarity of the reference answer, when targets were given.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    target_scores: torch.FloatTensor | None = None


def simcls_loss(
    scores: torch.Tensor,
    metric: torch.Tensor,
    valid: torch.Tensor,
    target_scores: torch.Tensor | None = None,
    target_valid: torch.Tensor | None = None,
    margin: float = 1.0,
) -> torch.Tensor:
    """SimCLS's ranking loss.

    Args:
        scores: ``[batch, n]`` model scores.
        metric: ``[batch, n]`` reference scores (higher = better).
        valid: ``[batch, n]`` bool, False for padding slots.
        target_scores: ``[batch]`` score of the reference answer.
        target_valid: ``[batch]`` whether the row has a reference answer.
    Returns:
        ``Σ_{i<j} mean_b max(0, s_j − s_i + margin·(j − i)/n_b)`` over candidates sorted by ``metric`` (pairs with equal
        metric skipped; each pair averaged over the rows that have it), plus ``mean max(0, s_c − s_target)`` over the
        rows with a target.
    """
    n_valid = valid.sum(dim=1).clamp(min=1).to(scores.dtype)  # [B]
    order = torch.where(valid, metric, torch.full_like(metric, -torch.inf)).argsort(dim=1, descending=True)
    s = scores.gather(1, order)
    m = metric.gather(1, order)
    v = valid.gather(1, order)
    n = scores.shape[1]
    idx = torch.arange(n, device=scores.device)
    distance = (idx.view(1, -1) - idx.view(-1, 1)).to(scores.dtype)  # [i, j] = j − i
    pair_margin = margin * distance.unsqueeze(0) / n_valid.view(-1, 1, 1)  # [B, n, n]
    hinge = (s.unsqueeze(1) - s.unsqueeze(2) + pair_margin).clamp(min=0)  # [B, i, j]: s_j − s_i + margin
    mask = (distance > 0).unsqueeze(0) & v.unsqueeze(1) & v.unsqueeze(2) & (m.unsqueeze(2) > m.unsqueeze(1))
    mask = mask.to(scores.dtype)
    count = mask.sum(dim=0)
    loss = ((hinge * mask).sum(dim=0) / count.clamp(min=1)).sum()
    if target_scores is not None:
        rows = target_valid if target_valid is not None else torch.ones_like(target_scores, dtype=torch.bool)
        gold = (scores - target_scores.unsqueeze(1)).clamp(min=0) * valid.to(scores.dtype)
        per_row = gold.sum(dim=1) / n_valid
        if bool(rows.any()):
            loss = loss + per_row[rows].mean()
    return loss


class DualReranker(EncoderRankerPreTrainedModel):
    """Embeds sources and candidates separately with one shared encoder; score = cosine similarity."""

    config_class = DualRerankerConfig
    ranking_style = "dual"

    def __init__(self, config: DualRerankerConfig):
        super().__init__(config)
        self._build_encoder(config)
        self.post_init()

    @staticmethod
    def row_length(source_max_length: int, candidate_max_length: int) -> int:
        """Longest row: a source row or a candidate row, each on its own."""
        return max(source_max_length, candidate_max_length)

    def embed(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[batch, hidden]`` L2-normalised first-token embeddings of source or candidate rows ``[batch, seq]``."""
        return nn.functional.normalize(self.first_token(input_ids, attention_mask), dim=-1)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        candidate_input_ids: torch.LongTensor | None = None,
        candidate_attention_mask: torch.Tensor | None = None,
        candidate_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        target_input_ids: torch.LongTensor | None = None,
        target_attention_mask: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DualRerankerOutput | tuple:
        """Score each source's candidates.

        Args:
            input_ids: ``[batch, source_len]`` source rows.
            attention_mask: the source rows' mask.
            candidate_input_ids: ``[batch, n, cand_len]`` candidate rows.
            candidate_attention_mask: the candidate rows' mask.
            candidate_mask: ``[batch, n]`` bool, False for padding slots (default: all real).
            labels: ``[batch, n]`` metric scores (higher = better) for the SimCLS loss.
            target_input_ids: ``[batch, target_len]`` reference-answer rows (optional).
            target_attention_mask: the reference-answer rows' mask.
            target_mask: ``[batch]`` bool, False for rows without a reference (default: all have one).
        Returns:
            :class:`DualRerankerOutput` with ``logits`` of shape ``[batch, n]``.
        """
        if candidate_input_ids is None or candidate_input_ids.dim() != 3:
            raise ValueError("candidate_input_ids must be a 3-D tensor [batch, n_candidates, seq] of token ids")
        batch, n, width = candidate_input_ids.shape
        if candidate_mask is None:
            candidate_mask = torch.ones(batch, n, dtype=torch.bool, device=candidate_input_ids.device)
        candidate_mask = candidate_mask.bool()
        source = self.embed(input_ids, attention_mask)  # [B, H]
        flat_ids = candidate_input_ids[candidate_mask]  # only real slots: all-padding rows have no embedding
        flat_mask = candidate_attention_mask[candidate_mask] if candidate_attention_mask is not None else None
        cands = source.new_zeros(batch, n, source.shape[-1])
        cands[candidate_mask] = self.embed(flat_ids, flat_mask)
        logits = torch.einsum("bh,bnh->bn", source, cands)
        target_scores = None
        if target_input_ids is not None:
            target_scores = (self.embed(target_input_ids, target_attention_mask) * source).sum(-1)
        loss = None
        if labels is not None:
            loss = simcls_loss(
                logits,
                labels.to(logits.device, logits.dtype),
                candidate_mask,
                target_scores,
                None if target_mask is None else target_mask.bool(),
                self.config.rank_margin,
            )
        result = DualRerankerOutput(loss=loss, logits=logits, target_scores=target_scores)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return result if return_dict else result.to_tuple()
