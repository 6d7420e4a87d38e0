"""The training loop shared by :func:`~pairrm_hf.training.pairrm.train_pairrm` and
:func:`~pairrm_hf.training.rankers.train_ranker`: the pair collator, the ``Trainer`` subclass that saves loadable
checkpoints, the accuracy metric and the checks on what the caller passed as the model."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from ..checkpoints.loading import detect_layout, save_pairrm
from ..checkpoints.model_card import ModelCardInfo, write_model_card
from ..data.mixinstruct import is_mixinstruct_row, mixinstruct_to_pairs
from ..models.modeling_pairrm import DebertaV2PairRM
from ..ranking.inputs import check_input_format, preference_texts
from ..tokenization.padding import pad_rows
from ..tokenization.tokenization_pairrm import PairEncoder, PairLengths

__all__ = [
    "PairRMDataCollator",
    "PairRMTrainer",
    "checkpoint_layout",
    "final_metrics",
    "given_model",
    "pairwise_accuracy_metric",
    "run_trainer",
    "training_rows",
]


class PairRMDataCollator:
    """Packs preference rows into PairRM training batches: ``input_ids``, ``attention_mask``, ``labels``.

    Each row (TRL standard/conversational, or already ``{"prompt", "chosen", "rejected"}``) gives two packed rows:
    ``(chosen, rejected)`` with label +1 and, when ``both_orders`` (default), ``(rejected, chosen)`` with label −1.
    Rows become PairRM texts by the one input rule (:func:`pairrm_hf.ranking.inputs.preference_texts`, switch
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
        input_ids, attention_mask = pad_rows(rows, self.encoder.pad_id)
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

    Shared by :func:`train_pairrm` and :func:`~pairrm_hf.training.rankers.train_ranker`."""
    from ..ranking.ranker import PairRM

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
    """:func:`~pairrm_hf.checkpoints.loading.detect_layout` of ``folder``, or ``None`` when it is no PairRM or ranker checkpoint
    (a backbone to start training from). Shared by :func:`train_pairrm` and
    :func:`~pairrm_hf.training.rankers.train_ranker`."""
    try:
        return detect_layout(os.fspath(folder))
    except ValueError:
        return None


def training_rows(dataset: Any, metrics: Sequence[str] | None, pairs_per_example: int, seed: int, name: str):
    """Expand MixInstruct rows into preference pairs; other datasets pass through unchanged."""
    if dataset is None:
        return None
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty")
    if is_mixinstruct_row(dataset[0]):
        return mixinstruct_to_pairs(list(dataset), metrics=metrics, pairs_per_example=pairs_per_example, seed=seed)
    return dataset


def run_trainer(
    model: Any,
    tokenizer: Any,
    train_rows: Any,
    eval_rows: Any,
    output_dir: str | os.PathLike,
    save_final: bool,
    training_args: dict[str, Any],
    *,
    card_kind: str = "pairrm",
    model_card: ModelCardInfo | None = None,
    **trainer_kwargs: Any,
) -> PairRMTrainer:
    """Train ``model`` with :class:`PairRMTrainer` (``report_to="none"`` and no evaluation unless asked), save the
    final model to ``output_dir`` when ``save_final`` with a model card (``card_kind``, ``model_card``; the metrics
    are the last logged ones, after a final evaluation when ``eval_rows`` is given), and return the trainer in
    eval mode.

    The one training loop of :func:`train_pairrm` and :func:`~pairrm_hf.training.rankers.train_ranker`;
    ``trainer_kwargs`` go to :class:`PairRMTrainer` (``lengths``, ``data_collator``, ``compute_metrics``…).
    """
    training_args.setdefault("report_to", "none")
    if eval_rows is None:
        training_args.setdefault("eval_strategy", "no")
    args = TrainingArguments(output_dir=os.fspath(output_dir), remove_unused_columns=False, **training_args)
    model.train()
    trainer = PairRMTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        **trainer_kwargs,
    )
    trainer.train()
    if save_final:
        trainer.save_model(os.fspath(output_dir))
        info = (model_card or ModelCardInfo()).with_defaults(base_model=getattr(model.config, "_name_or_path", None))
        write_model_card(output_dir, kind=card_kind, info=info, metrics=final_metrics(trainer, eval_rows is not None))
    model.eval()
    return trainer


def final_metrics(trainer: Trainer, evaluate: bool) -> dict[str, float]:
    """The last logged value of each metric of a finished run (``train_loss``, ``eval_*``), after one more
    evaluation when ``evaluate`` and none was logged; for the model card."""
    if evaluate and not any(k.startswith("eval_") for entry in trainer.state.log_history for k in entry):
        trainer.evaluate()
    out: dict[str, float] = {}
    for entry in trainer.state.log_history:
        for key, value in entry.items():
            if (key == "train_loss" or key.startswith("eval_")) and isinstance(value, (int, float)):
                out[key] = float(value)
    return out
