"""Fine-tune PairRM with ``transformers.Trainer``: from a DeBERTa-v2/v3 backbone or from a PairRM checkpoint.

Rows are TRL preference rows (standard or conversational) or MixInstruct rows (expanded into pairs first). The
collator packs each pair with the core :class:`~pairrm_hf.tokenization.tokenization_pairrm.PairEncoder` in both orders
(chosen first, label +1; rejected first, label −1) to fight position bias, and the model's own pairwise logistic
loss trains it. Everything else (gradient accumulation, bf16, gradient checkpointing, accelerate/DeepSpeed,
checkpointing) is the stock ``Trainer``'s.

>>> model, tok = init_pairrm_from_backbone("microsoft/deberta-v3-large")              # doctest: +SKIP
>>> train_pairrm((model, tok), rows, output_dir="out", num_train_epochs=1)           # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DebertaV2Config, DebertaV2Tokenizer, PreTrainedTokenizerBase
from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2Model

from ..checkpoints.loading import load_pairrm, resolve_checkpoint
from ..models.modeling_pairrm import DebertaV2PairRM
from ..ranking.inputs import check_input_format
from ..tokenization.tokenization_pairrm import PREFIX_TOKENS, PairLengths, restore_sentencepiece_normalizer
from .trainer import (
    PairRMTrainer,
    checkpoint_layout,
    given_model,
    pairwise_accuracy_metric,
    run_trainer,
    training_rows,
)

_PREFIX_FIELDS = ("source_prefix_id", "cand1_prefix_id", "cand2_prefix_id", "cand_prefix_id")

__all__ = ["init_pairrm_from_backbone", "train_pairrm"]

logger = logging.getLogger(__name__)


def init_pairrm_from_backbone(
    backbone_path: str | os.PathLike,
    tokenizer_path: str | os.PathLike | None = None,
    *,
    drop_out: float = 0.05,
    n_tasks: int = 1,
) -> tuple[DebertaV2PairRM, PreTrainedTokenizerBase]:
    """A trainable PairRM on a DeBERTa-v2/v3 backbone (local folder or Hub id), with a fresh head.

    The tokenizer (from ``tokenizer_path`` or the backbone folder) gets its SentencePiece normalizer restored and
    the four :data:`PREFIX_TOKENS` added when missing; the embeddings grow only if the new ids do not fit (DeBERTa-v3
    reserves spare rows, so deberta-v3-large keeps its 128100). Backbone weights load with prefix-less keys
    (``DebertaV2Model.save_pretrained``) and with ``deberta.``-prefixed keys (``microsoft/deberta-v3-*``).
    """
    folder = resolve_checkpoint(backbone_path)
    tok_folder = resolve_checkpoint(tokenizer_path) if tokenizer_path is not None else folder
    tokenizer = DebertaV2Tokenizer.from_pretrained(tok_folder)
    restore_sentencepiece_normalizer(tokenizer, tok_folder)
    missing = [t for t in PREFIX_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing)
    vocab = tokenizer.get_vocab()
    ids = [vocab[t] for t in PREFIX_TOKENS]

    backbone, info = DebertaV2Model.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    if info["missing_keys"]:
        raise ValueError(
            f"backbone {os.fspath(backbone_path)!r} lacks weights {sorted(info['missing_keys'])[:5]} "
            f"(of {len(info['missing_keys'])}); expected a DeBERTa-v2/v3 checkpoint"
        )
    if max(ids) >= backbone.config.vocab_size:
        backbone.resize_token_embeddings(len(tokenizer))
    config: DebertaV2Config = backbone.config
    config.n_tasks, config.drop_out = n_tasks, drop_out
    for name, value in zip(_PREFIX_FIELDS, ids):
        setattr(config, name, value)
    config.architectures = ["DebertaV2PairRM"]
    model = DebertaV2PairRM(config)
    model.pretrained_model = backbone
    # Checkpoints restart from `spm.model` when no tokenizer.json exists; remember where it is for saving.
    model._pairrm_spm_file = getattr(tokenizer, "vocab_file", None)
    return model, tokenizer


def _resolve_model(model_or_path: Any, tokenizer: Any):
    """(model, tokenizer, lengths) from a path (PairRM checkpoint or backbone), a (model, tokenizer) pair or a PairRM.

    ``tokenizer`` is a tokenizer object for a bare ``DebertaV2PairRM``, or a tokenizer folder for a backbone path."""
    given = given_model(model_or_path, tokenizer, DebertaV2PairRM)
    if given is not None:
        return given
    folder = resolve_checkpoint(model_or_path)
    layout = checkpoint_layout(folder)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if layout == "legacy" or (layout == "hf" and "source_prefix_id" in config):
        loaded = load_pairrm(folder)
        return loaded.model, loaded.tokenizer, loaded.lengths
    model, tok = init_pairrm_from_backbone(folder, tokenizer if isinstance(tokenizer, (str, os.PathLike)) else None)
    return model, tok, None


def _is_encoder_ranker(model_or_path: Any) -> bool:
    """True for a PairRanker/SummaReranker/DualReranker (model, tuple, loaded PairRM or checkpoint folder)."""
    from ..models.modeling_encoder_ranker import EncoderRankerPreTrainedModel
    from ..ranking.ranker import PairRM

    model = model_or_path
    if isinstance(model, PairRM):
        model = model.model
    elif isinstance(model, tuple) and len(model) == 2:
        model = model[0]
    if isinstance(model, EncoderRankerPreTrainedModel):
        return True
    return isinstance(model, (str, os.PathLike)) and os.path.isdir(model) and checkpoint_layout(model) == "ranker"


def train_pairrm(
    model_or_path: Any,
    train_dataset: Any,
    eval_dataset: Any = None,
    *,
    output_dir: str | os.PathLike = "pairrm-finetuned",
    tokenizer: PreTrainedTokenizerBase | None = None,
    lengths: PairLengths | None = None,
    metrics: Sequence[str] | None = None,
    pairs_per_example: int = 5,
    save_final: bool = True,
    input_format: str = "auto",
    **training_args,
) -> PairRMTrainer:
    """Fine-tune PairRM and save it (HF-native layout) to ``output_dir``; returns the trainer.

    Args:
        model_or_path: a PairRM checkpoint folder/id (continue training; a PairRanker/SummaReranker/DualReranker
            checkpoint or model is trained by :func:`~pairrm_hf.training.rankers.train_ranker`), a DeBERTa-v2/v3 backbone folder/id
            (see :func:`init_pairrm_from_backbone`; ``tokenizer`` may then name a tokenizer folder), a
            :class:`~pairrm_hf.PairRM`, a ``DebertaV2PairRM`` (with ``tokenizer=``) or a ``(model, tokenizer)`` tuple.
        train_dataset: TRL preference rows (``datasets.Dataset`` or a list of dicts) or MixInstruct rows
            (expanded with :func:`~pairrm_hf.data.mixinstruct.mixinstruct_to_pairs` using ``metrics`` and
            ``pairs_per_example``).
        eval_dataset: rows of the same forms, for evaluation.
        lengths: row budgets (default: the checkpoint's, else 1224/412).
        input_format: ``"auto"`` (plain rows stay plain, chat rows use the original's conversation template) or
            ``"conversation"`` (the template for all rows); see :mod:`pairrm_hf.ranking.inputs`.
        **training_args: ``transformers.TrainingArguments`` fields (``learning_rate``, ``per_device_train_batch_size``,
            ``bf16``, ``activation_checkpointing``, ``deepspeed``...). ``report_to`` defaults to ``"none"``.
    """
    if _is_encoder_ranker(model_or_path):
        # PairRanker/SummaReranker/DualReranker checkpoints or models: the same Trainer path, their own collators.
        from .rankers import train_ranker

        return train_ranker(
            model_or_path,
            train_dataset,
            eval_dataset,
            output_dir=output_dir,
            tokenizer=tokenizer,
            lengths=lengths,
            metrics=metrics,
            pairs_per_example=pairs_per_example,
            save_final=save_final,
            input_format=input_format,
            **training_args,
        )
    seed = int(training_args.get("seed", 42))
    check_input_format(input_format)
    model, tok, loaded_lengths = _resolve_model(model_or_path, tokenizer)
    lengths = lengths or loaded_lengths or PairLengths()
    train_rows = training_rows(train_dataset, metrics, pairs_per_example, seed, "train_dataset")
    eval_rows = training_rows(eval_dataset, metrics, pairs_per_example, seed, "eval_dataset")
    return run_trainer(
        model,
        tok,
        train_rows,
        eval_rows,
        output_dir,
        save_final,
        training_args,
        lengths=lengths,
        input_format=input_format,
        compute_metrics=pairwise_accuracy_metric,
    )
