"""PairRM judges with the classic TRL judge contract (``trl.judges`` ≤ 1.0, removed in TRL 1.1).

Duck-typed: nothing here imports ``trl``. The objects work wherever old TRL called ``judge.judge(...)``
(``OnlineDPOTrainer(judge=...)``, ``WinRateCallback``) and in your own evaluation loops. For TRL ≥ 1.1 wrap the
judge in :class:`~pairrm_hf.trl.PairRMPairwiseReward` (``reward_funcs=PairRMPairwiseReward(judge)``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..checkpoints.loading import DEFAULT_MODEL
from ..ranking.inputs import answer_set_texts, check_input_format
from ..ranking.ranker import PairRM
from ..ranking.rewards import win_probability
from ..utils.checks import check_same_length
from ._common import LazyPairRM, check_list

__all__ = ["PairRMJudge", "PairRMRankJudge"]


def _prompt_texts(
    prompts: Any, completions: Any, *, pairwise: bool, input_format: str
) -> tuple[list[str], list[list[str]]]:
    prompts = check_list("prompts", prompts)
    completions = check_list("completions", completions)
    check_same_length("prompts", prompts, completions=completions)
    if not prompts:
        raise ValueError("prompts is empty: pass at least one prompt")
    sources, lists = [], []
    for k, (prompt, cands) in enumerate(zip(prompts, completions)):
        cands = check_list(f"completions[{k}]", cands)
        if pairwise and len(cands) != 2:
            raise ValueError(
                f"completions[{k}] has {len(cands)} completions; PairRMJudge compares exactly 2 per prompt"
            )
        if not cands:
            raise ValueError(f"completions[{k}] is empty: each prompt needs at least one completion")
        source, texts = answer_set_texts(
            prompt, cands, input_format=input_format, prompt_name=f"prompts[{k}]", answers_name=f"completions[{k}]"
        )
        sources.append(source)
        lists.append(texts)
    return sources, lists


class _Judge:
    def __init__(
        self, ranker: str | os.PathLike | PairRM, seed: int | None, device: Any, input_format: str, load_kwargs: dict
    ):
        self.ranker = LazyPairRM(ranker, device=device, **load_kwargs)
        self.input_format = check_input_format(input_format)
        self.seed = seed
        #: one seeded generator for the judge's lifetime: successive calls shuffle differently, runs reproduce.
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ranker.path!r})"


class PairRMJudge(_Judge):
    """Pairwise judge: which of two completions is better, TRL's ``BasePairwiseJudge`` contract.

    ``judge(prompts, completions)`` with ``completions[k] = [first, second]`` returns per prompt the index (0/1) of
    the better completion, decided by the symmetric logit ``s = C[first, second] − C[second, first]``:
    ``0`` when ``s > 0``, ``1`` when ``s < 0``, ``on_tie`` (default ``0``, the first completion) on an exact tie
    ``s == 0`` (identical texts, or texts that tokenize alike), and ``-1`` only when the judge fails (a non-finite
    logit): TRL's judge contract reserves ``-1`` for failures. The original judge returned the first completion's
    0-based rank, which is ``0`` on a tie (both completions share rank 1); ``on_tie=0`` keeps that.

    With ``return_scores=True`` it returns ``P(first is better) = sigmoid(s / temperature)`` instead (0.5 on a
    tie), so ``p(A, B) = 1 − p(B, A)``.

    ``shuffle_order=True`` (the contract's default) swaps each pair with probability 1/2 before scoring, using a
    ``numpy.random.Generator`` seeded with ``seed`` once at construction, and maps the answer back. The symmetric
    logit is order-independent up to float rounding, so shuffling does not change decisions; it is kept so the
    contract and its position-bias guard hold for any caller.

    Args:
        ranker: a PairRM folder / Hub id (loaded lazily, on the current CUDA device or CPU, at the first call — no
            ``Accelerator`` is built) or a loaded :class:`~pairrm_hf.PairRM`.
        seed: seed of the shuffling generator.
        input_format: ``"auto"`` (str prompts and completions stay plain, chat messages use the conversation
            template) or ``"conversation"`` (the template for all); see :mod:`pairrm_hf.ranking.inputs`.
        on_tie: the answer for an exact tie: ``0`` (default, as the original), ``1``, or ``-1`` to mark ties.
        device: where to load a path (see :meth:`PairRM.from_pretrained`).
        **load_kwargs: how to load a path (see :meth:`PairRM.from_pretrained`).
    """

    def __init__(
        self,
        ranker: str | os.PathLike | PairRM = DEFAULT_MODEL,
        *,
        seed: int | None = 0,
        on_tie: int = 0,
        input_format: str = "auto",
        device: Any = None,
        **load_kwargs: Any,
    ):
        if on_tie not in (0, 1, -1) or isinstance(on_tie, bool):
            raise ValueError(f"on_tie must be 0, 1 or -1, got {on_tie!r}")
        super().__init__(ranker, seed, device, input_format, load_kwargs)
        self.on_tie = on_tie

    def judge(
        self,
        prompts: Sequence,
        completions: Sequence[Sequence[str]],
        shuffle_order: bool = True,
        return_scores: bool = False,
        temperature: float = 1.0,
    ) -> list[int] | list[float]:
        """Winner index per prompt (0/1, ``on_tie`` on a tie, -1 on failure), or ``P(first better)`` (scores)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        sources, lists = _prompt_texts(prompts, completions, pairwise=True, input_format=self.input_format)
        n = len(sources)
        flip = self.rng.random(n) < 0.5 if shuffle_order else np.zeros(n, dtype=bool)
        first = [c[1] if f else c[0] for c, f in zip(lists, flip)]
        second = [c[0] if f else c[1] for c, f in zip(lists, flip)]
        s = self.ranker.rm.compare(sources, first, second).astype(np.float64)
        s = np.where(flip, -s, s)
        if return_scores:
            return [float(x) for x in win_probability(s, temperature)]
        return [0 if x > 0 else 1 if x < 0 else self.on_tie if x == 0 else -1 for x in s]  # NaN: -1


class PairRMRankJudge(_Judge):
    """Rank judge: TRL's ``BaseRankJudge`` contract, ``judge(prompts, completions) -> [[best index, ...], ...]``.

    Each prompt's completions are ranked by ``aggregation`` (default ``max_logits``: mean symmetric logit over all
    ordered pairs, see :meth:`PairRM.rank_batch`); the result lists the completion indices best first. With
    ``shuffle_order=True`` each list is permuted by the seeded generator before ranking and the indices mapped
    back, so exact ties are broken at random rather than by input position. ``input_format`` as for
    :class:`PairRMJudge`.
    """

    def __init__(
        self,
        ranker: str | os.PathLike | PairRM = DEFAULT_MODEL,
        *,
        aggregation: str = "max_logits",
        seed: int | None = 0,
        input_format: str = "auto",
        device: Any = None,
        **load_kwargs: Any,
    ):
        super().__init__(ranker, seed, device, input_format, load_kwargs)
        self.aggregation = aggregation

    def judge(
        self, prompts: Sequence, completions: Sequence[Sequence[str]], shuffle_order: bool = True
    ) -> list[list[int]]:
        """Per prompt, the indices of its completions best first."""
        sources, lists = _prompt_texts(prompts, completions, pairwise=False, input_format=self.input_format)
        perms = [self.rng.permutation(len(c)) if shuffle_order else np.arange(len(c)) for c in lists]
        shuffled = [[c[i] for i in p] for c, p in zip(lists, perms)]
        rankings = self.ranker.rm.rank_batch(sources, shuffled, aggregation=self.aggregation)
        return [[int(p[r.index]) for r in ranking.ranked()] for ranking, p in zip(rankings, perms)]
