"""The pairwise head shared by :class:`~pairrm_hf.DebertaV2PairRM` and :class:`~pairrm_hf.PairRanker`.

Both read one row ``[CLS]<|source|>…[SEP][CLS]<|candidate1|>…[SEP][CLS]<|candidate2|>…[SEP]``, pool the encoder's
last hidden state at the three prefix tokens (:func:`prefix_positions`, :func:`pool_prefixes`), score
``[source; candidate]`` for each candidate with :class:`PairHead`, and take the task-mean difference as the logit
(> 0: candidate 1 is better). :func:`pair_loss` is their training loss.

:class:`PairHead` is an ``nn.Sequential`` with the published layout (``0`` dropout, ``1`` linear, ``2`` tanh,
``3`` dropout, ``4`` linear), so a model holding it as ``head_layer`` keeps the checkpoints' ``head_layer.1.*`` and
``head_layer.4.*`` state-dict keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PAIR_LOSS_TYPES", "OwnLossMixin", "PairHead", "pair_loss", "pool_prefixes", "prefix_positions"]

#: ``instructgpt``: −log σ(sign·(left − right)) (PairRM's); ``BCE``: each side's score classified as the better one.
PAIR_LOSS_TYPES = ("instructgpt", "BCE")


def prefix_positions(input_ids: torch.Tensor, prefix_ids: Sequence[int]) -> torch.Tensor:
    """Positions ``[batch, 3]`` of the three prefix tokens ``prefix_ids`` in ``input_ids`` (``[batch, seq]``).

    Each row must hold exactly one of each, else ``ValueError`` naming the row and the counts found.
    """
    prefix = torch.tensor(list(prefix_ids), device=input_ids.device)
    hits = input_ids.unsqueeze(-1) == prefix  # [B, L, 3]
    counts = hits.sum(dim=1)  # [B, 3]
    bad = (counts != 1).any(dim=1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        names = ("source", "candidate1", "candidate2")
        found = ", ".join(f"{n}={int(c)}" for n, c in zip(names, counts[row].tolist()))
        raise ValueError(
            f"input_ids row {row} must contain exactly one of each prefix token (ids {list(prefix_ids)}); found {found}"
        )
    return hits.to(torch.int8).argmax(dim=1)


def pool_prefixes(hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The hidden states ``[batch, hidden]`` at the source, candidate-1 and candidate-2 ``positions`` (``[batch, 3]``)
    of ``hidden`` (``[batch, seq, hidden]``)."""
    pooled = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1)))  # [B, 3, H]
    source, cand1, cand2 = pooled.unbind(dim=1)
    return source, cand1, cand2


class PairHead(nn.Sequential):
    """``dropout → Linear(2·hidden, hidden) → tanh → dropout → Linear(hidden, n_tasks)`` on ``[source; candidate]``.

    Args:
        hidden_size: the encoder's hidden size.
        n_tasks: outputs per candidate (one per training metric); the pairwise logit is their mean.
        dropout: dropout probability (``config.drop_out``).
    """

    def __init__(self, hidden_size: int, n_tasks: int, dropout: float):
        super().__init__(
            nn.Dropout(dropout),
            nn.Linear(2 * hidden_size, hidden_size),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, int(n_tasks)),
        )

    def compare(self, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(left, right, logits)``: the ``[batch, n_tasks]`` scores of ``[source; candidate1]`` and
        ``[source; candidate2]`` pooled from ``hidden`` at ``positions``, and their ``[batch]`` task-mean difference."""
        source, cand1, cand2 = pool_prefixes(hidden, positions)
        left = self(torch.cat([source, cand1], dim=-1))
        right = self(torch.cat([source, cand2], dim=-1))
        return left, right, (left - right).mean(dim=-1)


def pair_loss(
    left: torch.Tensor, right: torch.Tensor, labels: torch.Tensor, loss_type: str = "instructgpt"
) -> torch.Tensor:
    """The pairwise training loss of ``[batch, n_tasks]`` head outputs and ``[batch]``/``[batch, n_tasks]`` labels.

    The sign of a label says which candidate is better (+ → candidate 1, − → candidate 2, 0 → no preference);
    ``[batch]`` labels apply to every task. ``instructgpt`` (upstream's default):
    ``-mean(logsigmoid(sign(labels) * (left - right)))``, a constant log 2 per tied label. ``BCE``: the mean of
    ``BCE(left, labels > 0)`` and ``BCE(right, labels < 0)``.
    """
    if loss_type not in PAIR_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {PAIR_LOSS_TYPES}, got {loss_type!r}")
    labels = labels.to(left.device, left.dtype)
    if labels.dim() == 1:
        labels = labels.unsqueeze(-1).expand_as(left)
    if labels.shape != left.shape:
        raise ValueError(f"labels must have shape [batch] or {list(left.shape)}, got {list(labels.shape)}")
    if loss_type == "BCE":
        bce = nn.functional.binary_cross_entropy_with_logits
        return (bce(left, (labels > 0).to(left.dtype)) + bce(right, (labels < 0).to(left.dtype))) / 2
    return -nn.functional.logsigmoid(torch.sign(labels) * (left - right)).mean()


class OwnLossMixin:
    """For models whose ``forward(labels=...)`` computes their own loss.

    transformers' ``PreTrainedModel.loss_function`` falls back, with a warning, to the causal-LM loss for a config
    without a ``loss_type``: wrong for a ranker, and noise on every access. Here it is the model's
    ``pairwise_loss`` where it has one (``None`` otherwise: the loss comes from ``forward``); assigning still
    overrides it, as on any transformers model.
    """

    @property
    def loss_function(self):
        """The model's own pairwise loss (or what was assigned), never transformers' causal-LM default."""
        return self.__dict__.get("_loss_function", getattr(self, "pairwise_loss", None))

    @loss_function.setter
    def loss_function(self, value) -> None:
        self.__dict__["_loss_function"] = value
