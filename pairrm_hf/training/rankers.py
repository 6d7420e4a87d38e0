"""Train LLM-Blender's three ranker types with ``transformers.Trainer``, from any encoder backbone.

* ``pairranker`` (:class:`~pairrm_hf.PairRanker`): preference pairs packed as PairRM rows in both orders (the
  collator of :mod:`pairrm_hf.training.pairrm`); loss ``instructgpt`` or ``BCE`` (``loss_type``).
* ``summareranker`` (:class:`~pairrm_hf.SummaReranker`): candidate sets, one row per candidate; BCE against "best
  of its set for metric t" plus the mixture's load-balancing loss.
* ``dual`` / ``simcls`` (:class:`~pairrm_hf.DualReranker`): candidate sets; SimCLS's ranking loss on the cosine
  scores (plus the reference-answer term when a row has one).

Rows are TRL preference rows (a pair is a candidate set of two: chosen scores 1, rejected 0) or MixInstruct rows
(candidates with several metric scores; ``metrics`` picks them and sets the number of tasks).

>>> model, tok = init_ranker_from_backbone("roberta-base", "summareranker", n_tasks=2)            # doctest: +SKIP
>>> train_ranker((model, tok), rows, metrics=["bartscore", "bleu"], output_dir="out")             # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from ..data.mixinstruct import METRIC_WEIGHTS, MixInstructExample, is_mixinstruct_row
from ..models.modeling_dual_reranker import DualReranker
from ..models.modeling_encoder_ranker import EncoderRankerPreTrainedModel
from ..models.modeling_pair_ranker import PairRanker
from ..models.modeling_summareranker import SummaReranker
from ..ranking.inputs import check_input_format, preference_texts
from ..tokenization.tokenization_pairrm import DualEncoder, PairLengths, PointEncoder, add_prefix_tokens
from ..tokenization.tokenization_pairrm import restore_sentencepiece_normalizer as _restore_normalizer

__all__ = [
    "RANKER_TYPES",
    "ranker_class",
    "init_ranker_from_backbone",
    "candidate_sets",
    "PointwiseRankerCollator",
    "DualRankerCollator",
    "train_ranker",
]

#: Ranker type names (the original's ``ranker_type`` values and its script's names) → model classes.
RANKER_TYPES = {
    "pairranker": PairRanker,
    "summareranker": SummaReranker,
    "dual": DualReranker,
    "simcls": DualReranker,
}


def ranker_class(ranker_type: str) -> type[EncoderRankerPreTrainedModel]:
    """The model class of a ranker type (case-insensitive: ``PairRanker``, ``SummaReranker``, ``SimCLS``, ``dual``)."""
    key = str(ranker_type).lower()
    if key not in RANKER_TYPES:
        raise ValueError(f"ranker_type must be one of {sorted(RANKER_TYPES)}, got {ranker_type!r}")
    return RANKER_TYPES[key]


def init_ranker_from_backbone(
    backbone_path: str | os.PathLike,
    ranker_type: str = "pairranker",
    tokenizer_path: str | os.PathLike | None = None,
    *,
    lengths: PairLengths | None = None,
    **config_kwargs,
) -> tuple[EncoderRankerPreTrainedModel, PreTrainedTokenizerBase]:
    """A trainable ranker with a fresh head on an ``AutoModel`` encoder (local folder or Hub id).

    The tokenizer (``tokenizer_path`` or the backbone's; a fast one) gets the four prefix tokens; the embeddings
    grow when their ids do not fit. ``lengths`` (default 128/128, the paper's) must fit the encoder's positions.
    ``config_kwargs``: ``n_tasks``, ``drop_out``, ``loss_type`` (PairRanker), mixture sizes (SummaReranker), ...
    """
    from ..checkpoints.loading import resolve_checkpoint

    cls = ranker_class(ranker_type)
    folder = resolve_checkpoint(backbone_path)
    tok_folder = resolve_checkpoint(tokenizer_path) if tokenizer_path is not None else folder
    tokenizer = AutoTokenizer.from_pretrained(tok_folder)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"the tokenizer in {tok_folder!r} must be a fast (tokenizers-backed) tokenizer")
    _restore_normalizer(tokenizer, tok_folder)
    ids = add_prefix_tokens(tokenizer)
    encoder = AutoModel.from_pretrained(folder, dtype=torch.float32)
    if max(ids) >= encoder.get_input_embeddings().num_embeddings:
        encoder.resize_token_embeddings(len(tokenizer))
    lengths = lengths or PairLengths(128, 128)
    model = cls.from_encoder(
        encoder,
        prefix_ids=tuple(ids),
        source_max_length=lengths.source_max_length,
        candidate_max_length=lengths.candidate_max_length,
        **config_kwargs,
    )
    model.check_row_budget(lengths.source_max_length, lengths.candidate_max_length)
    return model, tokenizer


# ------------------------------------------------------------------------------------------------- data
def _weighted(scores: Mapping[str, float], metrics: Sequence[str]) -> list[float] | None:
    if any(m not in scores for m in metrics):
        return None
    return [float(scores[m]) * METRIC_WEIGHTS.get(m, 1.0) for m in metrics]


def candidate_sets(
    rows: Sequence[Any],
    *,
    metrics: Sequence[str] | None = None,
    max_candidates: int | None = None,
    input_format: str = "auto",
) -> list[dict[str, Any]]:
    """Candidate sets ``{"prompt", "candidates": [str], "scores": [[float] * n_metrics], "target": str | None}``.

    TRL preference rows give two candidates scored ``[[1.0], [0.0]]``. MixInstruct rows give their candidates
    (identical texts merged, those lacking a metric dropped) scored by ``metrics`` (default: the metrics every
    candidate of the first row has, sorted), each weighted by :data:`~pairrm_hf.data.mixinstruct.METRIC_WEIGHTS`; the reference
    ``output`` becomes ``target``. Sets with fewer than two candidates are skipped. ``max_candidates`` keeps the
    best and the worst halves by summed score (the original's top/bottom sampling). Preference rows become texts
    by the one input rule (``input_format``, see :mod:`pairrm_hf.ranking.inputs`).
    """
    out: list[dict[str, Any]] = []
    for k, row in enumerate(rows):
        if not is_mixinstruct_row(row):
            prompt, chosen, rejected = preference_texts(row, k, input_format=input_format)
            out.append({"prompt": prompt, "candidates": [chosen, rejected], "scores": [[1.0], [0.0]], "target": None})
            continue
        ex = row if isinstance(row, MixInstructExample) else MixInstructExample.from_dict(row, k)
        if metrics is None:
            common = set.intersection(*(set(c.scores) for c in ex.candidates)) if ex.candidates else set()
            if not common:
                raise ValueError(f"row {k} has no metric shared by all its candidates; pass metrics=")
            metrics = sorted(common)
        scored: dict[str, list[float]] = {}
        for cand in ex.candidates:
            values = _weighted(cand.scores, metrics)
            if values is not None and cand.text not in scored:
                scored[cand.text] = values
        texts = list(scored)
        if len(texts) < 2:
            continue
        if max_candidates is not None and len(texts) > max_candidates:
            by_score = sorted(texts, key=lambda t: -sum(scored[t]))
            top = (max_candidates + 1) // 2
            texts = by_score[:top] + by_score[len(by_score) - (max_candidates - top) :]
        out.append(
            {
                "prompt": ex.source,
                "candidates": texts,
                "scores": [scored[t] for t in texts],
                "target": ex.output or None,
            }
        )
    return out


def _task_scores(scores: Sequence[Sequence[float]], n_tasks: int, index: int) -> np.ndarray:
    """``[n, n_tasks]`` scores: one metric per task, the metrics' sum for one task, or one metric for every task."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"candidate set {index}: scores must be [n_candidates, n_metrics]")
    if arr.shape[1] == n_tasks:
        return arr
    if n_tasks == 1:
        return arr.sum(axis=1, keepdims=True)
    if arr.shape[1] == 1:
        return np.repeat(arr, n_tasks, axis=1)
    raise ValueError(f"candidate set {index} has {arr.shape[1]} metrics but the model has n_tasks={n_tasks}")


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


class PointwiseRankerCollator:
    """Candidate sets → SummaReranker batches: ``input_ids``/``attention_mask`` ``[Σ n, L]`` (one row per candidate)
    and ``labels`` ``[Σ n, n_tasks]`` (1 where the candidate has its set's best score for that task)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, lengths: PairLengths | None = None, *, n_tasks: int = 1):
        self.encoder = PointEncoder(tokenizer, lengths)
        self.n_tasks = n_tasks

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        enc = self.encoder
        rows, labels = [], []
        for k, f in enumerate(features):
            ids = enc.tokenize([f["prompt"], *f["candidates"]])
            segment = enc.source_segment(ids[0])
            budget = enc.candidate_budget(len(segment))
            rows += [enc.pack_point(segment, enc.candidate_body(c, budget)) for c in ids[1:]]
            scores = _task_scores(f["scores"], self.n_tasks, k)
            labels.append((scores == scores.max(axis=0, keepdims=True)).astype(np.float32))
        input_ids, attention_mask = _pad(rows, enc.pad_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.from_numpy(np.concatenate(labels)),
        }


class DualRankerCollator:
    """Candidate sets → DualReranker batches: source rows ``[B, Ls]``, candidate rows ``[B, n_max, Lc]`` with
    ``candidate_mask``, ``labels`` ``[B, n_max]`` (summed metric scores) and reference rows with ``target_mask``."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, lengths: PairLengths | None = None):
        self.encoder = DualEncoder(tokenizer, lengths)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        enc = self.encoder
        budget = enc.lengths.candidate_max_length
        sources, grids, targets, has_target = [], [], [], []
        n_max = max(len(f["candidates"]) for f in features)
        labels = torch.zeros(len(features), n_max)
        valid = torch.zeros(len(features), n_max, dtype=torch.bool)
        for k, f in enumerate(features):
            target = f.get("target")
            ids = enc.tokenize([f["prompt"], *f["candidates"], target or ""])
            sources.append(enc.source_segment(ids[0]))
            grids.append([enc.candidate_row(enc.candidate_body(c, budget)) for c in ids[1:-1]])
            targets.append(enc.candidate_row(enc.candidate_body(ids[-1], budget)))
            has_target.append(bool(target))
            n = len(f["candidates"])
            labels[k, :n] = torch.from_numpy(_task_scores(f["scores"], 1, k)[:, 0]).float()
            valid[k, :n] = True
        source_ids, source_mask = _pad(sources, enc.pad_id)
        flat = [row for grid in grids for row in grid]
        width = max(len(r) for r in flat)
        cand_ids = torch.full((len(features), n_max, width), enc.pad_id, dtype=torch.long)
        cand_mask = torch.zeros((len(features), n_max, width), dtype=torch.long)
        for k, grid in enumerate(grids):
            for i, row in enumerate(grid):
                cand_ids[k, i, : len(row)] = torch.tensor(row)
                cand_mask[k, i, : len(row)] = 1
        target_ids, target_mask = _pad(targets, enc.pad_id)
        return {
            "input_ids": source_ids,
            "attention_mask": source_mask,
            "candidate_input_ids": cand_ids,
            "candidate_attention_mask": cand_mask,
            "candidate_mask": valid,
            "labels": labels,
            "target_input_ids": target_ids,
            "target_attention_mask": target_mask,
            "target_mask": torch.tensor(has_target),
        }


# ------------------------------------------------------------------------------------------------- training
def _resolve(model_or_path: Any, tokenizer: Any, ranker_type: str | None, lengths: PairLengths | None, config_kwargs):
    from ..checkpoints.loading import load_pairrm, resolve_checkpoint
    from .trainer import checkpoint_layout, given_model

    given = given_model(model_or_path, tokenizer, EncoderRankerPreTrainedModel)
    if given is not None:
        return given
    folder = resolve_checkpoint(model_or_path)
    if checkpoint_layout(folder) == "ranker":
        loaded = load_pairrm(folder)
        return loaded.model, loaded.tokenizer, loaded.lengths
    if ranker_type is None:
        raise ValueError(f"{folder!r} is a backbone, not a ranker checkpoint: pass ranker_type= to start training one")
    tok_path = tokenizer if isinstance(tokenizer, (str, os.PathLike)) else None
    model, tok = init_ranker_from_backbone(folder, ranker_type, tok_path, lengths=lengths, **config_kwargs)
    return model, tok, None


def train_ranker(
    model_or_path: Any,
    train_dataset: Any,
    eval_dataset: Any = None,
    *,
    ranker_type: str | None = None,
    output_dir: str | os.PathLike = "ranker-finetuned",
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None = None,
    lengths: PairLengths | None = None,
    metrics: Sequence[str] | None = None,
    pairs_per_example: int = 5,
    max_candidates: int | None = None,
    save_final: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
    input_format: str = "auto",
    **training_args,
):
    """Train a PairRanker, SummaReranker or DualReranker and save it to ``output_dir``; returns the trainer.

    Args:
        model_or_path: a ranker checkpoint folder (continue training), a backbone folder/Hub id together with
            ``ranker_type`` (``model_kwargs`` set the new config: ``n_tasks``, ``loss_type``, ...), a loaded
            :class:`~pairrm_hf.PairRM`, a ranker model (with ``tokenizer=``) or a ``(model, tokenizer)`` tuple.
        train_dataset: TRL preference rows or MixInstruct rows (a list or ``datasets.Dataset``).
        eval_dataset: rows of the same forms, for evaluation.
        lengths: row budgets (default: the checkpoint's, else 128/128); saved in the config.
        metrics: MixInstruct metrics to learn (PairRanker: pairs by their weighted sum; SummaReranker: one task each;
            DualReranker: their sum).
        pairs_per_example: PairRanker pairs per MixInstruct row.
        max_candidates: candidates kept per set for the set-based rankers (best and worst halves).
        input_format: how preference rows become texts (``"auto"`` or ``"conversation"``; :mod:`pairrm_hf.ranking.inputs`).
        **training_args: ``transformers.TrainingArguments`` fields; ``report_to`` defaults to ``"none"``.
    """
    from .trainer import PairRMDataCollator, pairwise_accuracy_metric, run_trainer, training_rows

    seed = int(training_args.get("seed", 42))
    check_input_format(input_format)
    model, tok, loaded_lengths = _resolve(model_or_path, tokenizer, ranker_type, lengths, dict(model_kwargs or {}))
    if not isinstance(model, EncoderRankerPreTrainedModel):
        raise TypeError(f"train_ranker trains PairRanker/SummaReranker/DualReranker; got {type(model).__name__}")
    lengths = (
        lengths or loaded_lengths or PairLengths(model.config.source_max_length, model.config.candidate_max_length)
    )
    model.check_row_budget(lengths.source_max_length, lengths.candidate_max_length)
    model.config.source_max_length, model.config.candidate_max_length = (
        lengths.source_max_length,
        lengths.candidate_max_length,
    )
    style = model.ranking_style
    compute_metrics = None
    if style == "pairwise":
        train_rows = training_rows(train_dataset, metrics, pairs_per_example, seed, "train_dataset")
        eval_rows = training_rows(eval_dataset, metrics, pairs_per_example, seed, "eval_dataset")
        collator = PairRMDataCollator(tok, lengths, input_format=input_format)
        compute_metrics = pairwise_accuracy_metric
    else:
        if train_dataset is None or len(train_dataset) == 0:
            raise ValueError("train_dataset is empty")
        train_rows = candidate_sets(
            list(train_dataset), metrics=metrics, max_candidates=max_candidates, input_format=input_format
        )
        eval_rows = None
        if eval_dataset is not None:
            eval_rows = candidate_sets(
                list(eval_dataset), metrics=metrics, max_candidates=max_candidates, input_format=input_format
            )
        if not train_rows:
            raise ValueError("train_dataset gave no candidate set with two or more scored candidates")
        if style == "pointwise":
            collator = PointwiseRankerCollator(tok, lengths, n_tasks=int(model.config.n_tasks))
        else:
            collator = DualRankerCollator(tok, lengths)
    return run_trainer(
        model,
        tok,
        train_rows,
        eval_rows,
        output_dir,
        save_final,
        training_args,
        data_collator=collator,
        lengths=lengths,
        compute_metrics=compute_metrics,
    )
