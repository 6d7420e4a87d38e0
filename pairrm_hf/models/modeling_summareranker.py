"""`SummaReranker`: LLM-Blender's pointwise cross-encoder with a multi-task mixture-of-experts head.

One row per (source, candidate): ``[CLS]<|source|>…[SEP][CLS]<|candidate|>…[SEP]``. The last hidden state at
position 0 goes through a shared bottom (Linear–ReLU–Linear), a sparsely gated mixture of experts with one gate per
task (``n_tasks`` metrics; ``2·n_tasks`` two-layer experts, the top ``n_tasks`` per row), and one Linear tower per
task, giving ``[n_tasks]`` logits per candidate. Training: binary cross-entropy against "this candidate is the best
of its set for metric t" plus the gates' load-balancing loss. Inference: the original reports
``sigmoid(mean over tasks)``; the engine ranks by the task-mean logit itself (the same order, without sigmoid
saturation turning close scores into exact ties).

The experts' outputs are mixed as the gate-weighted sum (the SummaReranker paper's formulation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import ModelOutput

from .modeling_encoder_ranker import EncoderRankerConfig, EncoderRankerPreTrainedModel

__all__ = ["SummaRerankerConfig", "SummaReranker", "SummaRerankerOutput", "MultiTaskMixtureOfExperts"]


class SummaRerankerConfig(EncoderRankerConfig):
    """Config of :class:`SummaReranker` (plus the fields of
    :class:`~pairrm_hf.models.modeling_encoder_ranker.EncoderRankerConfig`).

    Attributes:
        num_experts: experts in the mixture (``None`` → ``2 * n_tasks``, the original's choice).
        experts_per_row: experts each row is routed to (``None`` → ``n_tasks``).
        expert_hidden_size: hidden width of each expert (``None`` → the encoder's hidden size).
        moe_loss_coef: weight of the load-balancing loss (0.01 in the original).
        noise_epsilon: floor of the gating noise's standard deviation during training.
    """

    model_type = "pairrm-summareranker"
    num_experts: int | None = None
    experts_per_row: int | None = None
    expert_hidden_size: int | None = None
    moe_loss_coef: float = 0.01
    noise_epsilon: float = 0.01


@dataclass
class SummaRerankerOutput(ModelOutput):
    """Output of :class:`SummaReranker`.

    Attributes:
        loss: BCE + load-balancing loss, present when ``labels`` were given.
        logits: ``[batch]`` task-mean logit of each (source, candidate) row; higher is better.
        task_logits: ``[batch, n_tasks]`` one logit per task (metric).
        probabilities: ``[batch]`` ``sigmoid(logits)``, the original's reported score.
        aux_loss: the mixture's load-balancing loss (0 in eval mode when the routing is balanced).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    task_logits: torch.FloatTensor | None = None
    probabilities: torch.FloatTensor | None = None
    aux_loss: torch.FloatTensor | None = None


def _cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation over the last dim (0 for a single value): small when usage is even."""
    if x.shape[-1] < 2:
        return x.new_zeros(x.shape[:-1])
    x = x.float()
    return x.var(dim=-1) / (x.mean(dim=-1) ** 2 + 1e-10)


class MultiTaskMixtureOfExperts(nn.Module):
    """Noisy top-k gated mixture of experts with one gate per task (Shazeer et al. 2017 gating).

    Args:
        n_tasks: number of gates (one output per task).
        size: input and output width.
        num_experts: number of experts.
        k: experts per row.
        expert_hidden: experts' hidden width.
        loss_coef: load-balancing weight.
        noise_epsilon: the noise floor used in training.
    """

    def __init__(
        self,
        n_tasks: int,
        size: int,
        num_experts: int,
        k: int,
        expert_hidden: int,
        loss_coef: float,
        noise_epsilon: float,
    ):
        super().__init__()
        if not 1 <= k <= num_experts:
            raise ValueError(f"experts_per_row must be in [1, num_experts={num_experts}], got {k}")
        self.n_tasks, self.num_experts, self.k = n_tasks, num_experts, k
        self.loss_coef, self.noise_epsilon = loss_coef, noise_epsilon
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(size, expert_hidden), nn.ReLU(), nn.Linear(expert_hidden, size))
            for _ in range(num_experts)
        )
        # Zero gates (the original's start): every expert is equally likely until training moves them.
        self.gate_weight = nn.Parameter(torch.zeros(n_tasks, size, num_experts))
        self.noise_weight = nn.Parameter(torch.zeros(n_tasks, size, num_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [batch, size]`` → (``[batch, n_tasks, size]`` per-task mixtures, scalar load-balancing loss)."""
        expert_out = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, E, H]
        clean = torch.einsum("bh,the->bte", x, self.gate_weight)  # [B, T, E]
        noisy = noise_std = None
        if self.training:
            noise_std = nn.functional.softplus(torch.einsum("bh,the->bte", x, self.noise_weight)) + self.noise_epsilon
            noisy = clean + torch.randn_like(clean) * noise_std
        logits = noisy if noisy is not None else clean
        top_values, top_index = logits.topk(min(self.k + 1, self.num_experts), dim=-1)
        gates = torch.zeros_like(logits).scatter(-1, top_index[..., : self.k], top_values[..., : self.k].softmax(-1))
        mixed = torch.einsum("bte,beh->bth", gates, expert_out)
        importance = gates.sum(0)  # [T, E]
        if noisy is not None and self.k < self.num_experts:
            load = self._prob_in_top_k(clean, noisy, noise_std, top_values).sum(0)
        else:
            load = (gates > 0).to(gates.dtype).sum(0)
        aux = self.loss_coef * (_cv_squared(importance) + _cv_squared(load)).sum()
        return mixed, aux

    def _prob_in_top_k(self, clean, noisy, noise_std, top_values) -> torch.Tensor:
        """Differentiable probability that each expert stays in the top k under fresh noise (the smooth load)."""
        threshold_in = top_values[..., self.k : self.k + 1]  # the (k+1)-th value: the bar to stay in
        threshold_out = top_values[..., self.k - 1 : self.k]  # the k-th value: the bar to get in
        normal = torch.distributions.Normal(clean.new_zeros(()), clean.new_ones(()))
        is_in = noisy > threshold_in
        return torch.where(
            is_in, normal.cdf((clean - threshold_in) / noise_std), normal.cdf((clean - threshold_out) / noise_std)
        )


class SummaReranker(EncoderRankerPreTrainedModel):
    """Scores one (source, candidate) row per forward; ``n`` candidates cost ``n`` rows (LLM-Blender's SummaReranker)."""

    config_class = SummaRerankerConfig
    ranking_style = "pointwise"

    def __init__(self, config: SummaRerankerConfig):
        super().__init__(config)
        self._build_encoder(config)
        hidden, tasks = self.hidden_size, int(config.n_tasks)
        self.bottom = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.moe = MultiTaskMixtureOfExperts(
            tasks,
            hidden,
            config.num_experts or 2 * tasks,
            config.experts_per_row or tasks,
            config.expert_hidden_size or hidden,
            config.moe_loss_coef,
            config.noise_epsilon,
        )
        self.towers = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(tasks))
        self.post_init()

    @staticmethod
    def row_length(source_max_length: int, candidate_max_length: int) -> int:
        """Longest row: the source segment plus one candidate segment."""
        return source_max_length + candidate_max_length

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SummaRerankerOutput | tuple:
        """Score each (source, candidate) row.

        Args:
            input_ids: ``[batch, seq]`` packed rows (see the module doc).
            attention_mask: ``[batch, seq]``, 1 for real tokens.
            labels: ``[batch]`` or ``[batch, n_tasks]`` 0/1 targets: 1 when the candidate is the best of its set
                for that metric.
        Returns:
            :class:`SummaRerankerOutput` with ``logits`` of shape ``[batch]``.
        """
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError("input_ids must be a 2-D tensor [batch, seq] of token ids")
        encoded = self.bottom(self.first_token(input_ids, attention_mask))  # [B, H]
        mixed, aux = self.moe(encoded)  # [B, T, H]
        task_logits = torch.cat([tower(mixed[:, t]) for t, tower in enumerate(self.towers)], dim=-1)  # [B, T]
        logits = task_logits.mean(dim=-1)
        loss = None
        if labels is not None:
            labels = labels.to(task_logits.device, task_logits.dtype)
            if labels.dim() == 1:
                labels = labels.unsqueeze(-1).expand_as(task_logits)
            if labels.shape != task_logits.shape:
                raise ValueError(
                    f"labels must have shape [batch] or {list(task_logits.shape)}, got {list(labels.shape)}"
                )
            loss = nn.functional.binary_cross_entropy_with_logits(task_logits, labels) + aux
        result = SummaRerankerOutput(
            loss=loss, logits=logits, task_logits=task_logits, probabilities=torch.sigmoid(logits), aux_loss=aux
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return result if return_dict else result.to_tuple()
