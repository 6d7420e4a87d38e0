"""`DebertaV2PairRM`: the PairRM pairwise reward model on a DeBERTa-v2/v3 backbone.

The module layout (``pretrained_model`` + ``head_layer``) and therefore the ``state_dict`` keys are exactly
those of the published ``llm-blender/PairRM-hf``, ``llm-blender/PairRM`` and ``mightbe/Better-PairRM``
checkpoints, so they load with no missing or unexpected keys.

One input row is ``[CLS]<|source|>…[SEP][CLS]<|candidate1|>…[SEP][CLS]<|candidate2|>…[SEP]``. The last hidden
state is pooled at the three prefix tokens and the head scores ``[source; candidate]`` for each candidate; the
pairwise logit is the difference, positive when candidate 1 is the better answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DebertaV2Config
from transformers.modeling_outputs import ModelOutput
from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2Model, DebertaV2PreTrainedModel

from .attention import default_attention, set_attention_implementation
from .heads import OwnLossMixin, PairHead, pair_loss, prefix_positions
from .packing import PackedLayout, check_packable

__all__ = ["DebertaV2PairRM", "PairRMOutput", "PAIRRM_CONFIG_DEFAULTS"]

#: The PairRM fields added to a stock ``DebertaV2Config`` (values of the published checkpoints).
PAIRRM_CONFIG_DEFAULTS = {
    "n_tasks": 1,
    "drop_out": 0.05,
    "source_prefix_id": 128001,
    "cand1_prefix_id": 128002,
    "cand2_prefix_id": 128003,
    "cand_prefix_id": 128004,
    # the attention a model is built with; an engine then applies its device's default (see DEFAULT_ATTENTION)
    "pairrm_attention": default_attention("cpu"),
}


@dataclass
class PairRMOutput(ModelOutput):
    """Output of :class:`DebertaV2PairRM`.

    Attributes:
        loss: scalar pairwise logistic loss, present when ``labels`` were given.
        logits: ``[batch]`` task-mean of ``candidate1_scores - candidate2_scores``; > 0 means candidate 1 is better.
        candidate1_scores: ``[batch, n_tasks]`` head output for ``[source; candidate1]``.
        candidate2_scores: ``[batch, n_tasks]`` head output for ``[source; candidate2]``.
        hidden_states: the backbone's hidden states when ``output_hidden_states=True``.
        attentions: the backbone's attention maps when ``output_attentions=True``.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    candidate1_scores: torch.FloatTensor | None = None
    candidate2_scores: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class DebertaV2PairRM(OwnLossMixin, DebertaV2PreTrainedModel):
    """PairRM: a DeBERTa-v2 cross-encoder that compares two candidate answers to one source.

    Config fields (on a stock ``DebertaV2Config``; defaults in :data:`PAIRRM_CONFIG_DEFAULTS`):
        n_tasks: number of head outputs (metrics) per candidate; the logit is their mean.
        drop_out: dropout probability inside the head.
        source_prefix_id / cand1_prefix_id / cand2_prefix_id: token ids pooled for source and candidates.
        cand_prefix_id: the legacy generic candidate prefix (kept for checkpoint compatibility, not pooled).
        pairrm_attention: ``"fused"`` (default; a faster eval-mode path for the disentangled attention, same
            numbers to ~1e-6, see :mod:`pairrm_hf.models.attention`), ``"eager"`` (transformers' module everywhere)
            or ``"flex"`` (PyTorch FlexAttention, compiled). The default is
            :data:`pairrm_hf.models.attention.DEFAULT_ATTENTION`.
    """

    # The attribute holding the backbone is `pretrained_model` in the published checkpoints. Naming it the base
    # model prefix lets `from_pretrained` fill the backbone from a backbone-only checkpoint (e.g. deberta-v3).
    base_model_prefix = "pretrained_model"

    def __init__(self, config: DebertaV2Config):
        super().__init__(config)
        for name, default in PAIRRM_CONFIG_DEFAULTS.items():
            if getattr(config, name, None) is None:
                setattr(config, name, default)
        self.n_tasks = int(config.n_tasks)
        self.pretrained_model = DebertaV2Model(config)
        set_attention_implementation(self.pretrained_model, config.pairrm_attention)
        self.head_layer = PairHead(config.hidden_size, self.n_tasks, config.drop_out)
        self.post_init()

    @property
    def prefix_ids(self) -> tuple[int, int, int]:
        """The (source, candidate1, candidate2) prefix token ids this model pools at."""
        c = self.config
        return int(c.source_prefix_id), int(c.cand1_prefix_id), int(c.cand2_prefix_id)

    @property
    def attention_implementation(self) -> str:
        """``"fused"``, ``"eager"`` or ``"flex"``: the self-attention path used in eval mode (see
        :mod:`pairrm_hf.models.attention`)."""
        return self.config.pairrm_attention

    def set_attention_implementation(self, implementation: str) -> None:
        """Switch every layer to ``"fused"``, ``"eager"`` or ``"flex"`` attention; weights are untouched."""
        set_attention_implementation(self.pretrained_model, implementation)
        self.config.pairrm_attention = implementation

    @contextmanager
    def use_attention(self, implementation: str | None) -> Iterator[None]:
        """Use ``implementation`` inside the block, then restore the previous one (``None``: no change)."""
        previous = self.attention_implementation
        if implementation is not None:
            self.set_attention_implementation(implementation)
        try:
            yield
        finally:
            if implementation is not None:
                self.set_attention_implementation(previous)

    def get_input_embeddings(self) -> nn.Embedding:
        """The backbone's word embeddings."""
        return self.pretrained_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the backbone's word embeddings (used by ``resize_token_embeddings``)."""
        self.pretrained_model.set_input_embeddings(value)

    def _prefix_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Positions ``[batch, 3]`` of the source/candidate1/candidate2 prefix tokens, one of each per row."""
        return prefix_positions(input_ids, self.prefix_ids)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> PairRMOutput | tuple:
        """Score candidate 1 against candidate 2 for each row.

        Args:
            input_ids: ``[batch, seq]`` packed rows, each with exactly one of each prefix token.
            attention_mask: ``[batch, seq]``, 1 for real tokens. Columns that are padding in every row are dropped.
            token_type_ids: optional ``[batch, seq]``, trimmed together with ``input_ids``.
            position_ids: optional ``[batch, seq]``, trimmed together with ``input_ids``.
            labels: ``[batch]`` or ``[batch, n_tasks]``; the sign says which candidate is better
                (+ → candidate 1, − → candidate 2, 0 → no preference, a constant log 2 term).
        Returns:
            :class:`PairRMOutput` with ``logits`` of shape ``[batch]``.
        """
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError("input_ids must be a 2-D tensor [batch, seq] of token ids")
        positions = self._prefix_positions(input_ids)
        if attention_mask is not None:
            keep = attention_mask.bool().any(dim=0)
            if not bool(keep.all()):
                input_ids, attention_mask = input_ids[:, keep], attention_mask[:, keep]
                token_type_ids = token_type_ids[:, keep] if token_type_ids is not None else None
                position_ids = position_ids[:, keep] if position_ids is not None else None
                # Dropped columns are all padding; prefix tokens are never in them, but their indices shift.
                positions = (keep.long().cumsum(0) - 1)[positions]
        outputs = self.pretrained_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        left, right, logits = self.head_layer.compare(outputs.last_hidden_state, positions)

        loss = None
        if labels is not None:
            loss = self.pairwise_loss(left, right, labels)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        result = PairRMOutput(
            loss=loss,
            logits=logits,
            candidate1_scores=left,
            candidate2_scores=right,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return result if return_dict else result.to_tuple()

    def packed_logits(self, input_ids: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """Pairwise logits ``[segments]`` of the rows packed in ``input_ids`` ``[1, T]`` (see
        :func:`~pairrm_hf.models.packing.pack_rows`): each segment is one row, attends only to itself and gives
        the logit its unpacked row would, to float rounding. Inference only (eval, no gradients)."""
        if input_ids.dim() != 2 or input_ids.size(0) != 1 or input_ids.size(1) != layout.total:
            raise ValueError(f"input_ids must be [1, {layout.total}] for this layout, got {list(input_ids.shape)}")
        backbone = self.pretrained_model
        check_packable(backbone.config)
        prefixes = self._packed_prefix_positions(input_ids, layout)  # checked before any layer runs
        positions = layout.positions(input_ids.device)
        hidden = backbone.embeddings(
            input_ids=input_ids,
            token_type_ids=torch.zeros_like(input_ids),
            position_ids=positions,
            mask=torch.ones_like(input_ids),
        )
        rel_embeddings = backbone.encoder.get_rel_embedding()
        for layer in backbone.encoder.layer:
            hidden, _ = layer(hidden, layout, rel_embeddings=rel_embeddings)
        _, _, logits = self.head_layer.compare(hidden.expand(len(layout.lengths), -1, -1), prefixes)
        return logits

    def _packed_prefix_positions(self, input_ids: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """Positions ``[segments, 3]`` (in the packed sequence) of each segment's three prefix tokens; a segment
        without exactly one of each is a ``ValueError`` naming the segment (the row of the batch)."""
        found = []
        for segment, (start, stop) in enumerate(layout.spans()):
            try:
                found.append(self._prefix_positions(input_ids[:, start:stop])[0] + start)
            except ValueError as error:
                raise ValueError(f"packed segment {segment}: {error}".replace("input_ids row 0 ", "")) from None
        return torch.stack(found)

    def pairwise_loss(self, left: torch.Tensor, right: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``-mean(logsigmoid(sign(labels) * (left - right)))`` (upstream's "instructgpt" loss, stable form).

        ``labels`` of shape ``[batch]`` apply to every task; ``[batch, n_tasks]`` give one sign per task.
        """
        return pair_loss(left, right, labels, "instructgpt")
