"""Fine-tune PairRM with ``transformers.Trainer``: from a DeBERTa-v2/v3 backbone or from a PairRM checkpoint.

Rows are TRL preference rows (standard or conversational) or MixInstruct rows (expanded into pairs first). The
collator packs each pair with the core :class:`~pairrm_hf.tokenization_pairrm.PairEncoder` in both orders
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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import DebertaV2Config, DebertaV2Tokenizer, PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2Model

from .data import is_mixinstruct_row, mixinstruct_to_pairs
from .inputs import check_input_format, preference_texts
from .loading import detect_layout, load_pairrm, resolve_checkpoint, save_pairrm
from .modeling_pairrm import DebertaV2PairRM
from .tokenization_pairrm import PREFIX_TOKENS, PairEncoder, PairLengths, restore_sentencepiece_normalizer

__all__ = [
    "init_pairrm_from_backbone",
    "PairRMDataCollator",
    "PairRMTrainer",
    "pairwise_accuracy_metric",
    "save_pairrm",
    "train_pairrm",
]

logger = logging.getLogger(__name__)

_PREFIX_FIELDS = ("source_prefix_id", "cand1_prefix_id", "cand2_prefix_id", "cand_prefix_id")


def init_pairrm_from_backbone(
    backbone_path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None, *, drop_out: float = 0.05,
    n_tasks: int = 1,
) -> tuple[DebertaV2PairRM, PreTrainedTokenizerBase]:  # fmt: skip
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


class PairRMDataCollator:
    """Packs preference rows into PairRM training batches: ``input_ids``, ``attention_mask``, ``labels``.

    Each row (TRL standard/conversational, or already ``{"prompt", "chosen", "rejected"}``) gives two packed rows:
    ``(chosen, rejected)`` with label +1 and, when ``both_orders`` (default), ``(rejected, chosen)`` with label −1.
    Rows become PairRM texts by the one input rule (:func:`pairrm_hf.inputs.preference_texts`, switch
    ``input_format``), so a model trains on the texts it is later scored on.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        lengths: PairLengths | None = None,
        *,
        both_orders: bool = True,
        input_format: str = "auto",
    ):
        self.encoder = PairEncoder(tokenizer, lengths)
        self.both_orders = both_orders
        self.input_format = check_input_format(input_format)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [preference_texts(row, k, input_format=self.input_format) for k, row in enumerate(features)]
        ids = self.encoder.tokenize([t for triple in texts for t in triple])
        rows, labels = [], []
        for k in range(len(texts)):
            src, chosen, rejected = ids[3 * k : 3 * k + 3]
            segment = self.encoder.source_segment(src)
            budget = self.encoder.candidate_budget(len(segment))
            body_c = self.encoder.candidate_body(chosen, budget)
            body_r = self.encoder.candidate_body(rejected, budget)
            rows.append(self.encoder.pack(segment, body_c, body_r))
            labels.append(1.0)
            if self.both_orders:
                rows.append(self.encoder.pack(segment, body_r, body_c))
                labels.append(-1.0)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor(labels)}


def pairwise_accuracy_metric(eval_pred) -> dict[str, float]:
    """``compute_metrics`` for :class:`PairRMTrainer`: per-row accuracy (sign of logit vs label; 0 counts as wrong)
    and the symmetric accuracy of each (chosen, rejected) row pair (AB − BA > 0) when both orders were fed."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    out = {"row_accuracy": float(np.mean(np.sign(logits) == np.sign(labels)))}
    if len(labels) % 2 == 0 and np.all(labels[0::2] > 0) and np.all(labels[1::2] < 0):
        out["pairwise_accuracy"] = float(np.mean(logits[0::2] - logits[1::2] > 0))
    return out


class PairRMTrainer(Trainer):
    """``transformers.Trainer`` for PairRM.

    Differences from the stock one, only what PairRM needs: the raw text columns must reach the collator, so
    ``remove_unused_columns`` is forced off; the default collator is :class:`PairRMDataCollator` (with ``lengths``
    and ``input_format``); checkpoints are written with :func:`save_pairrm` so every ``checkpoint-*`` folder loads
    with ``PairRM.from_pretrained``.
    """

    def __init__(self, *args, lengths: PairLengths | None = None, input_format: str = "auto", **kwargs):
        args_obj = kwargs.get("args") if "args" in kwargs else (args[1] if len(args) > 1 else None)
        if args_obj is not None and args_obj.remove_unused_columns:
            args_obj.remove_unused_columns = False
        self.pairrm_lengths = lengths
        tokenizer = kwargs.get("processing_class")
        if kwargs.get("data_collator") is None and tokenizer is not None:
            kwargs["data_collator"] = PairRMDataCollator(tokenizer, lengths, input_format=input_format)
        super().__init__(*args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        model = self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model
        if not isinstance(model, DebertaV2PairRM) or self.processing_class is None:
            return super()._save(output_dir, state_dict)
        save_pairrm(model, self.processing_class, output_dir, self.pairrm_lengths, state_dict=state_dict)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))


def given_model(model_or_path: Any, tokenizer: Any, model_class: type) -> tuple | None:
    """``(model, tokenizer, lengths)`` when ``model_or_path`` is already loaded (a :class:`~pairrm_hf.PairRM`, a
    ``(model, tokenizer)`` tuple, or a ``model_class`` instance with ``tokenizer=``); ``None`` for a folder/Hub id.

    Shared by :func:`train_pairrm` and :func:`~pairrm_hf.ranker_training.train_ranker`."""
    from .ranker import PairRM

    if isinstance(model_or_path, PairRM):
        return model_or_path.model, model_or_path.tokenizer, model_or_path.lengths
    if isinstance(model_or_path, tuple) and len(model_or_path) == 2:
        return model_or_path[0], model_or_path[1], None
    name = model_class.__name__
    if isinstance(model_or_path, model_class):
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            raise ValueError(f"model_or_path is a {name}: pass its tokenizer= too")
        return model_or_path, tokenizer, None
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise TypeError(
            f"model_or_path must be a folder/Hub id, a PairRM, a {name} or a (model, tokenizer) tuple, "
            f"got {type(model_or_path).__name__}"
        )
    return None


def checkpoint_layout(folder: str | os.PathLike) -> str | None:
    """:func:`~pairrm_hf.loading.detect_layout` of ``folder``, or ``None`` when it is no PairRM or ranker checkpoint
    (a backbone to start training from). Shared by :func:`train_pairrm` and
    :func:`~pairrm_hf.ranker_training.train_ranker`."""
    try:
        return detect_layout(os.fspath(folder))
    except ValueError:
        return None


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
    from .modeling_encoder_ranker import EncoderRankerPreTrainedModel
    from .ranker import PairRM

    model = model_or_path
    if isinstance(model, PairRM):
        model = model.model
    elif isinstance(model, tuple) and len(model) == 2:
        model = model[0]
    if isinstance(model, EncoderRankerPreTrainedModel):
        return True
    return isinstance(model, (str, os.PathLike)) and os.path.isdir(model) and checkpoint_layout(model) == "ranker"


def _as_rows(dataset: Any, metrics: Sequence[str] | None, pairs_per_example: int, seed: int, name: str):
    """Expand MixInstruct rows into preference pairs; other datasets pass through unchanged."""
    if dataset is None:
        return None
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty")
    if is_mixinstruct_row(dataset[0]):
        return mixinstruct_to_pairs(list(dataset), metrics=metrics, pairs_per_example=pairs_per_example, seed=seed)
    return dataset


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
            checkpoint or model is trained by :func:`~pairrm_hf.ranker_training.train_ranker`), a DeBERTa-v2/v3 backbone folder/id
            (see :func:`init_pairrm_from_backbone`; ``tokenizer`` may then name a tokenizer folder), a
            :class:`~pairrm_hf.PairRM`, a ``DebertaV2PairRM`` (with ``tokenizer=``) or a ``(model, tokenizer)`` tuple.
        train_dataset / eval_dataset: TRL preference rows (``datasets.Dataset`` or a list of dicts) or MixInstruct
            rows (expanded with :func:`~pairrm_hf.data.mixinstruct_to_pairs` using ``metrics`` and
            ``pairs_per_example``).
        lengths: row budgets (default: the checkpoint's, else 1224/412).
        input_format: ``"auto"`` (plain rows stay plain, chat rows use the original's conversation template) or
            ``"conversation"`` (the template for all rows); see :mod:`pairrm_hf.inputs`.
        **training_args: ``transformers.TrainingArguments`` fields (``learning_rate``, ``per_device_train_batch_size``,
            ``bf16``, ``activation_checkpointing``, ``deepspeed``...). ``report_to`` defaults to ``"none"``.
    """
    if _is_encoder_ranker(model_or_path):
        # PairRanker/SummaReranker/DualReranker checkpoints or models: the same Trainer path, their own collators.
        from .ranker_training import train_ranker

        return train_ranker(
            model_or_path, train_dataset, eval_dataset, output_dir=output_dir, tokenizer=tokenizer, lengths=lengths,
            metrics=metrics, pairs_per_example=pairs_per_example, save_final=save_final, input_format=input_format,
            **training_args,
        )  # fmt: skip
    seed = int(training_args.get("seed", 42))
    check_input_format(input_format)
    model, tok, loaded_lengths = _resolve_model(model_or_path, tokenizer)
    lengths = lengths or loaded_lengths or PairLengths()
    train_rows = _as_rows(train_dataset, metrics, pairs_per_example, seed, "train_dataset")
    eval_rows = _as_rows(eval_dataset, metrics, pairs_per_example, seed, "eval_dataset")
    return run_trainer(
        model, tok, train_rows, eval_rows, output_dir, save_final, training_args,
        lengths=lengths, input_format=input_format, compute_metrics=pairwise_accuracy_metric,
    )  # fmt: skip


def run_trainer(
    model: Any,
    tokenizer: Any,
    train_rows: Any,
    eval_rows: Any,
    output_dir: str | os.PathLike,
    save_final: bool,
    training_args: dict[str, Any],
    **trainer_kwargs: Any,
) -> PairRMTrainer:
    """Train ``model`` with :class:`PairRMTrainer` (``report_to="none"`` and no evaluation unless asked), save the
    final model to ``output_dir`` when ``save_final``, and return the trainer in eval mode.

    The one training loop of :func:`train_pairrm` and :func:`~pairrm_hf.ranker_training.train_ranker`;
    ``trainer_kwargs`` go to :class:`PairRMTrainer` (``lengths``, ``data_collator``, ``compute_metrics``…).
    """
    training_args.setdefault("report_to", "none")
    if eval_rows is None:
        training_args.setdefault("eval_strategy", "no")
    args = TrainingArguments(output_dir=os.fspath(output_dir), remove_unused_columns=False, **training_args)
    model.train()
    trainer = PairRMTrainer(
        model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows, processing_class=tokenizer,
        **trainer_kwargs,
    )  # fmt: skip
    trainer.train()
    if save_final:
        trainer.save_model(os.fspath(output_dir))
    model.eval()
    return trainer
