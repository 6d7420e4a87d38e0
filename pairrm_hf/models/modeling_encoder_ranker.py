"""What the encoder-backed rankers share: a config holding any ``AutoModel`` encoder's config, and a base class.

The three ranker types of LLM-Blender (:mod:`~pairrm_hf.models.modeling_pair_ranker`,
:mod:`~pairrm_hf.models.modeling_summareranker`, :mod:`~pairrm_hf.models.modeling_dual_reranker`) wrap one encoder built with
``AutoModel.from_config(config.encoder)`` (BERT, RoBERTa, XLM-R, ModernBERT, DeBERTa, ...). The encoder sits in
``pretrained_model`` (the attribute name of the original package and of :class:`~pairrm_hf.DebertaV2PairRM`), so
the engine's ``compile`` path and backbone-only initialisation treat every ranker alike.

Each ranker says how the engine must run it through ``ranking_style``:

* ``"pairwise"``: one row per ordered pair ``(source, candidate1, candidate2)``, a logit per row;
* ``"pointwise"``: one row per ``(source, candidate)``, a score per row (n rows for n candidates);
* ``"dual"``: one row per text; the source and each candidate are embedded separately (1 + n rows).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.configuration_utils import SubConfigSpec

from .heads import OwnLossMixin

__all__ = ["EncoderRankerConfig", "EncoderRankerPreTrainedModel", "RANKING_STYLES", "usable_positions"]

#: How the engine runs a model (see the module doc); models without the attribute are ``"pairwise"``.
RANKING_STYLES = ("pairwise", "pointwise", "dual")

# Families whose position ids start after the padding index (RoBERTa's offset): two positions are never usable.
_OFFSET_POSITION_FAMILIES = {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "data2vec-text"}


def usable_positions(encoder_config: PretrainedConfig) -> int | None:
    """The longest row the encoder accepts (``None`` when it sets no limit, e.g. relative-position DeBERTa)."""
    limit = getattr(encoder_config, "max_position_embeddings", None)
    if limit is None:
        return None
    if encoder_config.model_type == "deberta-v2" and not getattr(encoder_config, "position_biased_input", True):
        return None
    if encoder_config.model_type in _OFFSET_POSITION_FAMILIES:
        return int(limit) - 2
    return int(limit)


class EncoderRankerConfig(PretrainedConfig):
    """Fields every encoder-backed ranker config has (subclasses set ``model_type`` and add their own).

    Attributes:
        encoder: the encoder's config (any ``AutoConfig``; a dict with ``model_type`` is converted).
        n_tasks: number of scores per candidate (one per training metric); inference averages them.
        drop_out: dropout probability inside the head.
        source_prefix_id / cand1_prefix_id / cand2_prefix_id / cand_prefix_id: the token ids of the four prefix
            tokens ``<|source|>``, ``<|candidate1|>``, ``<|candidate2|>``, ``<|candidate|>`` in the tokenizer.
        source_max_length / candidate_max_length: token budgets of a row (see each ranker's encoder in
            :mod:`pairrm_hf.tokenization.tokenization_pairrm`); the paper's PairRanker used 128/128.
    """

    sub_configs_defaults: ClassVar[dict] = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="roberta")}

    encoder: Any = None
    n_tasks: int = 1
    drop_out: float = 0.05
    source_prefix_id: int | None = None
    cand1_prefix_id: int | None = None
    cand2_prefix_id: int | None = None
    cand_prefix_id: int | None = None
    source_max_length: int = 128
    candidate_max_length: int = 128


class EncoderRankerPreTrainedModel(OwnLossMixin, PreTrainedModel):
    """Base of the encoder-backed rankers: holds ``pretrained_model``, initialises heads, builds from a backbone."""

    config_class = EncoderRankerConfig
    base_model_prefix = "pretrained_model"
    supports_gradient_checkpointing = True
    #: how the engine runs this model, one of :data:`RANKING_STYLES`
    ranking_style: ClassVar[str] = "pairwise"

    def _build_encoder(self, config: EncoderRankerConfig) -> None:
        if config.encoder is None:
            raise ValueError("config.encoder must be the encoder's config (e.g. BertConfig(...) or its dict)")
        self.pretrained_model = AutoModel.from_config(config.encoder)
        self.hidden_size = int(config.encoder.hidden_size)

    def _init_weights(self, module: nn.Module) -> None:
        """Heads: PyTorch's default Linear init, as the original's plain ``nn.Module`` heads had (the encoder
        initialises its own modules). The scale-preserving init matters: SummaReranker stacks five Linear layers
        above the encoder, and N(0, 0.02) weights would shrink its signal and gradients by orders of magnitude."""
        if isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            # kaiming_uniform(a=√5) of nn.Linear.reset_parameters: U(−1/√fan_in, 1/√fan_in) for weights and biases
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.uniform_(module.bias, -bound, bound)

    # ------------------------------------------------------------------------------------- engine contract
    @property
    def prefix_ids(self) -> tuple[int, int, int]:
        """The (source, candidate1, candidate2) prefix token ids the tokenizer must map its prefix tokens to."""
        c = self.config
        return int(c.source_prefix_id), int(c.cand1_prefix_id), int(c.cand2_prefix_id)

    @property
    def attention_implementation(self) -> str:
        """The encoder's attention implementation (``sdpa``, ``eager``, ...); the DeBERTa ``fused`` path is PairRM's."""
        return str(getattr(self.pretrained_model.config, "_attn_implementation", None) or "eager")

    def set_attention_implementation(self, implementation: str) -> None:
        """Switch the encoder's attention (``"eager"``, ``"sdpa"``); ``"fused"`` exists only for DebertaV2PairRM."""
        if implementation == "fused":
            raise ValueError(
                f"attention='fused' is the DeBERTa-v2 PairRM path; {type(self).__name__} on "
                f"{self.config.encoder.model_type!r} supports the encoder's own implementations ('eager', 'sdpa')"
            )
        self.pretrained_model.set_attn_implementation(implementation)

    @contextmanager
    def use_attention(self, implementation: str | None) -> Iterator[None]:
        """The engine's reference runs ask for ``"eager"``; the encoder's attention is kept as it is (its sdpa and
        eager paths agree to float rounding), so this is a no-op kept for the engine's contract."""
        yield

    def get_input_embeddings(self) -> nn.Module:
        """The encoder's word embeddings."""
        return self.pretrained_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the encoder's word embeddings (used by ``resize_token_embeddings``)."""
        self.pretrained_model.set_input_embeddings(value)

    def check_row_budget(self, source_max_length: int, candidate_max_length: int) -> None:
        """``ValueError`` when rows of these budgets would not fit the encoder's position embeddings."""
        limit = usable_positions(self.config.encoder)
        longest = self.row_length(source_max_length, candidate_max_length)
        if limit is not None and longest > limit:
            raise ValueError(
                f"rows of {type(self).__name__} with source_max_length={source_max_length} and "
                f"candidate_max_length={candidate_max_length} reach {longest} tokens, but the "
                f"{self.config.encoder.model_type!r} encoder accepts {limit}; lower the budgets"
            )

    @staticmethod
    def row_length(source_max_length: int, candidate_max_length: int) -> int:
        """Longest packed row for these budgets (overridden per ranker type)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- building
    @classmethod
    def from_encoder(
        cls, encoder: str | os.PathLike | PreTrainedModel, *, prefix_ids: tuple[int, int, int, int], **config_kwargs
    ) -> EncoderRankerPreTrainedModel:
        """A ranker with a fresh head on a pretrained encoder (a folder/Hub id, or an encoder model).

        ``prefix_ids`` are the tokenizer's ids of the four prefix tokens; ``config_kwargs`` set the other config
        fields (``n_tasks``, ``drop_out``, budgets, ...).
        """
        if not isinstance(encoder, PreTrainedModel):
            encoder = AutoModel.from_pretrained(os.fspath(encoder), dtype=torch.float32)
        fields = dict(zip(("source_prefix_id", "cand1_prefix_id", "cand2_prefix_id", "cand_prefix_id"), prefix_ids))
        config = cls.config_class(encoder=encoder.config, **fields, **config_kwargs)
        config.architectures = [cls.__name__]
        model = cls(config)
        model.pretrained_model = encoder
        return model

    def first_token(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs) -> torch.Tensor:
        """``[batch, hidden]``: the encoder's last hidden state at position 0 (the row's [CLS])."""
        out = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return out.last_hidden_state[:, 0]
