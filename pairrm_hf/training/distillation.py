"""Distil a pairwise ranker into a one-pass reward model: n forward passes per prompt instead of n(n−1).

The teacher is any :class:`~pairrm_hf.PairRM` (PairRM, PairRanker, SummaReranker, DualReranker) and ranks each
prompt's candidate set with the engine (:meth:`~pairrm_hf.PairRM.rank_batch`): the full comparison matrix
(``schedule="max_logits"``) or a budgeted schedule (``"knockout"``, ``"bubble"``, ``"sort"``, ``"reference"``).
The student is a plain ``AutoModelForSequenceClassification`` with one label (default backbone
``microsoft/deberta-v3-base``) that scores one ``(prompt, response)`` text pair, trained with
``transformers.Trainer`` on a loss for pairwise teachers (:data:`DISTILL_LOSSES`):

* ``"ranknet"``: Bradley–Terry / RankNet. For every ordered pair of a candidate set, binary cross-entropy between
  ``sigmoid(s_i − s_j)`` and the teacher's probability that i beats j: ``sigmoid((C[i,j] − C[j,i]) / T)`` from the
  full matrix, or 1 / ½ / 0 from the order a budgeted schedule returns.
* ``"listwise"``: ListNet. KL divergence from ``softmax(teacher_scores / T)`` to ``softmax(s)`` over the set.
* ``"ranknet+listwise"``: their sum.

The saved student loads and scores with transformers alone::

    clf = pipeline("text-classification", model=folder)
    clf({"text": prompt, "text_pair": response})["score"]     # a raw reward (problem_type "regression")

Texts follow the one input rule (:mod:`pairrm_hf.ranking.inputs`): plain strings stay plain, chat messages are
rendered with the original's conversation template, so the student reads what the teacher read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from ..checkpoints.model_card import ModelCardInfo, write_model_card
from ..data.mixinstruct import is_mixinstruct_row
from ..ranking.engine import PairwiseEngine
from ..ranking.inputs import batch_texts
from ..ranking.methods import RANKING_METHODS
from ..ranking.ranker import PairRM
from ..ranking.rewards import win_probability
from ..tokenization.text_pair import TextPairEncoder
from ..utils.checks import check_same_length

__all__ = [
    "DEFAULT_STUDENT",
    "DISTILL_LOSSES",
    "DistillationCollator",
    "DistillationResult",
    "DistillationTrainer",
    "candidate_sets",
    "distill_pairrm",
    "distillation_loss",
    "group_agreement",
    "load_student",
    "student_engine",
    "student_scores",
    "teacher_targets",
]

logger = logging.getLogger(__name__)

#: The documented default student backbone.
DEFAULT_STUDENT = "microsoft/deberta-v3-base"
#: Losses :func:`distill_pairrm` accepts (see the module docstring).
DISTILL_LOSSES = ("ranknet", "listwise", "ranknet+listwise")


# ------------------------------------------------------------------------------------------ data and targets
def candidate_sets(data: Any, name: str = "data") -> tuple[list[Any], list[list[Any]]]:
    """``(prompts, candidate lists)`` from rows ``{"prompt", "candidates"}`` (candidates: str, chat messages or
    ``{"text": ...}``) or MixInstruct rows (``instruction`` + ``input``, ``candidates[].text``; what
    :func:`~pairrm_hf.generation.candidates.generate_candidates` writes). ``ValueError`` names the bad row."""
    rows = list(data)
    if not rows:
        raise ValueError(f"{name} is empty: pass rows with a prompt and at least two candidates")
    prompts, cands = [], []
    for k, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"{name}[{k}] must be a dict with 'prompt' and 'candidates', got {type(row).__name__}")
        if is_mixinstruct_row(row):
            prompt = (row.get("instruction") or "") + (row.get("input") or "")
        elif "prompt" in row and "candidates" in row:
            prompt = row["prompt"]
        else:
            raise ValueError(
                f"{name}[{k}] has fields {sorted(row)}; expected 'prompt' and 'candidates' (or a MixInstruct row)"
            )
        answers = [c["text"] if isinstance(c, Mapping) and "text" in c else c for c in row["candidates"]]
        if len(answers) < 2:
            raise ValueError(f"{name}[{k}]['candidates'] has {len(answers)} answers; a candidate set needs at least 2")
        prompts.append(prompt)
        cands.append(answers)
    return prompts, cands


def teacher_targets(
    teacher: PairRM,
    prompts: Sequence[Any],
    candidates: Sequence[Sequence[Any]],
    *,
    schedule: str = "max_logits",
    temperature: float = 1.0,
    input_format: str = "auto",
) -> list[dict[str, Any]]:
    """Per candidate set, the student's training row: the texts as the teacher read them and its targets.

    Each row holds ``source`` (str), ``candidates`` (list of str), ``scores`` (float32 ``[n]``, the teacher's
    ranking scores), ``probs`` (float32 ``[n, n]``, the teacher's probability that i beats j; diagonal ½) and
    ``comparisons`` (ordered pairs the teacher scored). Every number comes from ``teacher.rank_batch`` with
    ``aggregation=schedule``: the full matrix gives ``sigmoid((C[i,j] − C[j,i]) / temperature)``, a budgeted
    schedule's order gives 1, ½ or 0.
    """
    if schedule not in RANKING_METHODS:
        raise ValueError(f"schedule must be one of {sorted(RANKING_METHODS)}, got {schedule!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    sources, texts = batch_texts(prompts, candidates, input_format=input_format)
    rankings = teacher.rank_batch(prompts, candidates, aggregation=schedule, input_format=input_format)
    rows = []
    for source, cands, ranking in zip(sources, texts, rankings):
        scores = np.asarray(ranking.scores, dtype=np.float32)
        if ranking.matrix is not None:
            probs = win_probability(ranking.matrix - ranking.matrix.T, temperature)
        else:
            probs = 0.5 * (1.0 + np.sign(scores[:, None] - scores[None, :]))
        rows.append(
            {
                "source": source,
                "candidates": list(cands),
                "scores": scores,
                "probs": np.asarray(probs, dtype=np.float32),
                "comparisons": int(ranking.comparisons),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------ training
class DistillationCollator:
    """Packs teacher rows (from :func:`teacher_targets`) into a student batch: every ``(source, candidate)`` pair
    of the batch's sets tokenized as a text pair, plus the sets' sizes and targets (padded to the largest set)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int = 512):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        sources = [r["source"] for r in rows for _ in r["candidates"]]
        answers = [c for r in rows for c in r["candidates"]]
        batch = self.tokenizer(
            sources, answers, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        size = max(len(r["candidates"]) for r in rows)
        probs = torch.full((len(rows), size, size), 0.5)
        scores = torch.zeros((len(rows), size))
        for k, r in enumerate(rows):
            n = len(r["candidates"])
            probs[k, :n, :n] = torch.as_tensor(np.asarray(r["probs"], dtype=np.float32))
            scores[k, :n] = torch.as_tensor(np.asarray(r["scores"], dtype=np.float32))
        batch["group_sizes"] = torch.tensor([len(r["candidates"]) for r in rows])
        batch["target_probs"] = probs
        batch["target_scores"] = scores
        return dict(batch)


def distillation_loss(
    student: torch.Tensor,
    sizes: torch.Tensor,
    target_probs: torch.Tensor,
    target_scores: torch.Tensor,
    loss: str = "ranknet",
    temperature: float = 1.0,
) -> torch.Tensor:
    """The loss of one batch of candidate sets (mean over sets).

    ``student``: flat ``[sum(sizes)]`` student scores; ``target_probs`` ``[B, n, n]`` and ``target_scores``
    ``[B, n]`` padded per set (see :class:`DistillationCollator`). ``loss`` is one of :data:`DISTILL_LOSSES`.
    """
    if loss not in DISTILL_LOSSES:
        raise ValueError(f"loss must be one of {DISTILL_LOSSES}, got {loss!r}")
    total = student.new_zeros(())
    start = 0
    for k, n in enumerate(sizes.tolist()):
        s = student[start : start + n]
        start += n
        if "ranknet" in loss:
            off_diagonal = ~torch.eye(n, dtype=torch.bool, device=s.device)
            diff = (s[:, None] - s[None, :])[off_diagonal]
            total = total + F.binary_cross_entropy_with_logits(diff, target_probs[k, :n, :n][off_diagonal])
        if "listwise" in loss:
            target = torch.softmax(target_scores[k, :n] / temperature, dim=0)
            total = total + F.kl_div(torch.log_softmax(s, dim=0), target, reduction="sum")
    return total / len(sizes)


class DistillationTrainer(Trainer):
    """``transformers.Trainer`` for a pointwise student: the loss is :func:`distillation_loss` over candidate sets.

    Only what distillation needs differs from the stock trainer: the target columns stay (``remove_unused_columns``
    is forced off) and the loss is computed here from the set sizes and the teacher's targets.
    """

    def __init__(self, *args, distill_loss: str = "ranknet", temperature: float = 1.0, **kwargs):
        if distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"loss must be one of {DISTILL_LOSSES}, got {distill_loss!r}")
        self.distill_loss, self.temperature = distill_loss, temperature
        super().__init__(*args, **kwargs)
        self.args.remove_unused_columns = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sizes = inputs.pop("group_sizes")
        probs, scores = inputs.pop("target_probs"), inputs.pop("target_scores")
        outputs = model(**inputs)
        logits = outputs.logits.squeeze(-1)
        value = distillation_loss(logits, sizes, probs, scores, self.distill_loss, self.temperature)
        return (value, outputs) if return_outputs else value


def load_student(
    student: str | os.PathLike | tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A one-label ``AutoModelForSequenceClassification`` (``problem_type="regression"``, so pipelines return the
    raw score) and its tokenizer, from an encoder folder/Hub id or a ``(model, tokenizer)`` tuple."""
    if isinstance(student, tuple):
        model, tokenizer = student
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            os.fspath(student), num_labels=1, problem_type="regression"
        )
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(student))
    if model.config.num_labels != 1:
        raise ValueError(f"the student must have one label (a reward), got num_labels={model.config.num_labels}")
    model.config.problem_type = "regression"
    model.config.id2label, model.config.label2id = {0: "reward"}, {"reward": 0}
    if tokenizer.pad_token_id is None:
        raise ValueError("the student's tokenizer has no pad token; set tokenizer.pad_token first")
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def student_engine(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int = 64,
    max_length: int = 512,
) -> PairwiseEngine:
    """The engine that scores a student: its ``(prompt, response)`` rows as in training (:class:`TextPairEncoder`),
    deduplicated, length-sorted and batched by ``batch_size`` rows, on the device the student is on.

    The student is put in eval mode; its weights, device and dtype are left as they are (the torch backend always:
    OpenVINO and int8 apply to PairRM models only).
    """
    num_labels = getattr(model.config, "num_labels", None)
    if num_labels != 1:
        raise ValueError(f"the student must have one label (a reward), got num_labels={num_labels}")
    device = next(model.parameters()).device
    return PairwiseEngine(
        model, TextPairEncoder(tokenizer, max_length), device=device, batch_size=batch_size, backend="torch"
    )


def student_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    candidates: Sequence[Sequence[str]],
    *,
    batch_size: int = 64,
    max_length: int = 512,
) -> list[np.ndarray]:
    """Per set, the student's float32 ``[n]`` scores: one row per distinct ``(source, candidate)`` pair, run by the
    engine (:func:`student_engine`, :meth:`~pairrm_hf.ranking.engine.PairwiseEngine.text_pair_scores`)."""
    check_same_length("sources", sources, candidates=candidates)
    engine = student_engine(model, tokenizer, batch_size=batch_size, max_length=max_length)
    values = engine.text_pair_scores(
        [s for s, cands in zip(sources, candidates) for _ in cands], [c for cands in candidates for c in cands]
    )
    out, start = [], 0
    for cands in candidates:
        out.append(values[start : start + len(cands)])
        start += len(cands)
    return out


def group_agreement(teacher: Sequence[np.ndarray], student: Sequence[np.ndarray]) -> dict[str, float]:
    """How well student scores follow teacher scores, averaged over sets: ``top1_agreement`` (the student's best is
    among the teacher's best) and ``pairwise_agreement`` (pairs the teacher orders strictly, ordered alike)."""
    top1, pairwise = [], []
    for t, s in zip(teacher, student):
        t, s = np.asarray(t, dtype=np.float64), np.asarray(s, dtype=np.float64)
        top1.append(float(t[int(np.argmax(s))] == t.max()))
        dt, ds = np.sign(t[:, None] - t[None, :]), np.sign(s[:, None] - s[None, :])
        strict = dt != 0
        if strict.any():
            pairwise.append(float(np.mean(dt[strict] == ds[strict])))
    return {
        "top1_agreement": float(np.mean(top1)) if top1 else float("nan"),
        "pairwise_agreement": float(np.mean(pairwise)) if pairwise else float("nan"),
    }


@dataclass
class DistillationResult:
    """What :func:`distill_pairrm` returns: the trained student, its tokenizer, the trainer and final metrics."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    trainer: DistillationTrainer
    metrics: dict[str, float]
    output_dir: str


def _teacher(teacher: Any) -> PairRM:
    if isinstance(teacher, PairRM):
        return teacher
    if isinstance(teacher, (str, os.PathLike)):
        return PairRM.from_pretrained(teacher)
    raise TypeError(f"teacher must be a PairRM or a checkpoint folder/Hub id, got {type(teacher).__name__}")


def distill_pairrm(
    teacher: PairRM | str | os.PathLike,
    data: Any,
    eval_data: Any = None,
    *,
    student: str | os.PathLike | tuple[PreTrainedModel, PreTrainedTokenizerBase] = DEFAULT_STUDENT,
    output_dir: str | os.PathLike = "pairrm-student",
    loss: str = "ranknet",
    schedule: str = "max_logits",
    temperature: float = 1.0,
    max_length: int = 512,
    input_format: str = "auto",
    save_final: bool = True,
    model_card: ModelCardInfo | None = None,
    **training_args: Any,
) -> DistillationResult:
    """Train a pointwise student to reproduce ``teacher``'s rankings of ``data``'s candidate sets; save it.

    Args:
        teacher: a :class:`~pairrm_hf.PairRM` (any ranker of ours) or a checkpoint folder/Hub id.
        data: rows ``{"prompt", "candidates"}`` or MixInstruct rows (see :func:`candidate_sets`).
        eval_data: held-out rows of the same form; they give the final ``top1_agreement`` and
            ``pairwise_agreement``.
        student: an encoder folder/Hub id (a one-label classification head is added) or ``(model, tokenizer)``.
        loss: one of :data:`DISTILL_LOSSES`. ``schedule``: the teacher's ranking method (``max_logits`` = the full
            matrix; a budgeted one such as ``knockout`` costs less teacher compute but gives hard targets).
        temperature: divides the teacher's symmetric logits (``ranknet``) and scores (``listwise``).
        max_length: token budget of a ``(prompt, response)`` row (longest part truncated first).
        model_card: extra card fields (datasets, license, repo id); the card is written when ``save_final``.
        **training_args: ``transformers.TrainingArguments`` fields; ``report_to`` defaults to ``"none"``.

    Returns a :class:`DistillationResult`; ``output_dir`` holds a plain ``AutoModelForSequenceClassification``, its
    tokenizer and a model card.
    """
    if loss not in DISTILL_LOSSES:
        raise ValueError(f"loss must be one of {DISTILL_LOSSES}, got {loss!r}")
    rm = _teacher(teacher)
    train_rows = teacher_targets(
        rm, *candidate_sets(data), schedule=schedule, temperature=temperature, input_format=input_format
    )
    eval_rows = None
    if eval_data is not None:
        # Held-out agreement is always against the teacher's full ranking, whatever schedule trained the student.
        eval_rows = teacher_targets(rm, *candidate_sets(eval_data, "eval_data"), input_format=input_format)
    model, tokenizer = load_student(student)
    training_args.setdefault("report_to", "none")
    training_args.setdefault("save_strategy", "no")
    args = TrainingArguments(output_dir=os.fspath(output_dir), remove_unused_columns=False, **training_args)
    model.train()
    trainer = DistillationTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        data_collator=DistillationCollator(tokenizer, max_length),
        processing_class=tokenizer,
        distill_loss=loss,
        temperature=temperature,
    )
    trainer.train()
    model.eval()
    metrics: dict[str, float] = {"train_loss": float(trainer.state.log_history[-1].get("train_loss", float("nan")))}
    if eval_rows:
        got = student_scores(
            model,
            tokenizer,
            [r["source"] for r in eval_rows],
            [r["candidates"] for r in eval_rows],
            max_length=max_length,
        )
        metrics.update(group_agreement([r["scores"] for r in eval_rows], got))
        metrics["eval_sets"] = float(len(eval_rows))
    output_dir = os.fspath(output_dir)
    if save_final:
        trainer.save_model(output_dir)
        tokenizer.save_pretrained(output_dir)
        info = model_card or ModelCardInfo()
        write_model_card(
            output_dir,
            kind="student",
            info=info.with_defaults(
                base_model=_name_of(student),
                teacher=rm.model.config._name_or_path or None,
                training={"loss": loss, "schedule": schedule, "temperature": temperature, "sets": len(train_rows)},
            ),
            metrics=metrics,
        )
    return DistillationResult(model, tokenizer, trainer, metrics, output_dir)


def _name_of(student: Any) -> str | None:
    if isinstance(student, tuple):
        return student[0].config._name_or_path or None
    return os.fspath(student)
