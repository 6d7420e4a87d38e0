"""PairRM as TRL reward functions (``GRPOTrainer``/``RLOOTrainer``/``OnlineDPOTrainer`` ``reward_funcs=``).

TRL calls a reward function once per generation batch as
``f(prompts=..., completions=..., completion_ids=..., trainer_state=..., **dataset_columns) -> list[float]``.
These classes are plain callables on purpose: TRL treats an ``nn.Module`` as a sequence classifier.

Notation: ``C[x, y]`` is PairRM's logit for ``x`` in the first slot against ``y`` in the second (> 0: ``x`` better),
and the *symmetric logit* ``s(x, y) = C[x, y] − C[y, x]`` (position bias cancels, ``s(y, x) = −s(x, y)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..checkpoints.loading import DEFAULT_MODEL
from ..ranking.inputs import answer_texts, check_input_format
from ..ranking.ranker import PairRM
from ..ranking.rewards import group_rewards
from ..utils.checks import check_same_length
from ._common import LazyPairRM, check_list

__all__ = ["PairRMReward", "PairRMPairwiseReward", "REWARD_MODES"]

#: Modes of :class:`PairRMReward`.
REWARD_MODES = ("reference", "group", "baseline")


def _texts(prompts: Any, completions: Any, input_format: str) -> tuple[list[str], list[str]]:
    """PairRM sources and candidates of TRL's one-prompt-per-completion lists (the one input rule)."""
    prompts = check_list("prompts", prompts)
    completions = check_list("completions", completions)
    check_same_length("prompts", prompts, completions=completions)
    if not prompts:
        raise ValueError("prompts is empty: TRL passes one prompt per completion")
    pairs = [
        answer_texts(p, c, input_format=input_format, prompt_name=f"prompts[{k}]", answer_name=f"completions[{k}]")
        for k, (p, c) in enumerate(zip(prompts, completions))
    ]
    return [s for s, _ in pairs], [c for _, c in pairs]


def _opponent_texts(prompts: list, others: list, sources: list[str], column: str, input_format: str) -> list[str]:
    """The reference/baseline answers rendered exactly like a completion of the same prompt."""
    out = []
    for k, (prompt, other, source) in enumerate(zip(prompts, others, sources)):
        src, text = answer_texts(
            prompt, other, input_format=input_format, prompt_name=f"prompts[{k}]", answer_name=f"{column}[{k}]"
        )
        if src != source:
            raise ValueError(f"{column}[{k}] must have the same user turns as completions[{k}]")
        out.append(text)
    return out


class PairRMReward:
    """PairRM as a GRPO/RLOO reward function: one float per completion, one batched PairRM call per TRL call.

    Args:
        ranker: a PairRM folder / Hub id (loaded lazily on the first call), or a loaded :class:`~pairrm_hf.PairRM`.
        mode: how a completion ``c`` of prompt ``x`` is scored (``s`` = symmetric logit, see the module docstring):

            * ``"reference"`` (default): ``r = C[c, ref] − C[ref, c] = s(c, ref)`` against the dataset column
              ``reference_column`` (a str, or assistant messages), via :meth:`PairRM.rank_with_ref`. Exactly 0 when
              ``c == ref``; independent of the other completions, so it is the right choice with several processes.
            * ``"group"``: against the other completions of the same prompt in this call,
              ``r_i = 1/(n−1) Σ_{j≠i} s(c_i, c_j)``, the mean symmetric logit over the ``n−1`` others (the
              ``max_logits`` score of :meth:`PairRM.rank_batch` times ``n/(n−1)``; it sums to 0 over a group). A group is a contiguous run of equal prompts,
              which is how TRL lays out its ``num_generations`` samples. A prompt with a single completion gets 0.
              With several processes TRL may split a group across ranks; each rank then scores against the part it
              holds, so prefer ``"reference"`` (or ``"baseline"``) for multi-GPU runs. Because a group's rewards
              sum to 0, GRPO/RLOO's logged ``reward`` and ``rewards/<name>/mean`` are 0 by construction; the
              logged ``reward_std``, ``rewards/<name>/std`` and ``frac_reward_zero_std`` carry the signal (or add
              a ``"baseline"`` reward with weight 0 in ``reward_weights`` to log progress).
            * ``"baseline"``: ``r = s(c, b)`` against a fixed baseline policy's answer ``b``: the dataset column
              ``baseline_column``, or ``baseline_fn(prompts) -> list[str]`` called on the distinct prompts not seen
              before (results are cached per prompt, since the baseline is fixed).
        reference_column: dataset column holding the references (``mode="reference"``).
        baseline_column: dataset column holding the baseline answers (``mode="baseline"`` without ``baseline_fn``).
        baseline_fn: callable mapping a list of prompts (as TRL passes them) to baseline answers.
        name: ``__name__`` TRL uses in its logs (default ``"pairrm_<mode>"``).
        input_format: ``"auto"`` (default) or ``"conversation"``, the switch of the one input rule.
        device: where a lazily loaded model goes (default: the current CUDA device, else CPU).
        **load_kwargs: passed to :meth:`PairRM.from_pretrained` on lazy load (``dtype``, ``batch_size``, ...).

    Prompts/completions may be standard (str) or conversational (message lists); they become PairRM texts by the
    one input rule (:mod:`pairrm_hf.ranking.inputs`): standard ones stay plain, conversational ones (one turn or many) go
    through the original's conversation template, so a conversational dataset does *not* score like its standard
    twin unless ``input_format="conversation"`` puts both through the template. The object pickles as its path.
    """

    def __init__(
        self,
        ranker: str | os.PathLike | PairRM = DEFAULT_MODEL,
        *,
        mode: str = "reference",
        reference_column: str = "reference",
        baseline_column: str = "baseline",
        baseline_fn: Callable[[list], list[str]] | None = None,
        name: str | None = None,
        input_format: str = "auto",
        device: Any = None,
        **load_kwargs: Any,
    ):
        if mode not in REWARD_MODES:
            raise ValueError(f"mode must be one of {REWARD_MODES}, got {mode!r}")
        if baseline_fn is not None and not callable(baseline_fn):
            raise TypeError(f"baseline_fn must be callable, got {type(baseline_fn).__name__}")
        if baseline_fn is not None and mode != "baseline":
            raise ValueError(f"baseline_fn only applies to mode='baseline', got mode={mode!r}")
        self.ranker = LazyPairRM(ranker, device=device, **load_kwargs)
        self.input_format = check_input_format(input_format)
        self.mode = mode
        self.reference_column = reference_column
        self.baseline_column = baseline_column
        self.baseline_fn = baseline_fn
        self._baseline_cache: dict[str, str] = {}
        self.__name__ = name or f"pairrm_{mode}"

    def __repr__(self) -> str:
        return f"PairRMReward({self.ranker.path!r}, mode={self.mode!r})"

    def _column(self, kwargs: dict, column: str, n: int) -> list[str]:
        if column not in kwargs:
            extra = sorted(k for k in kwargs if k not in ("completion_ids", "trainer_state", "log_extra", "log_metric"))
            raise ValueError(
                f"PairRMReward(mode={self.mode!r}) needs the dataset column {column!r}, which TRL did not pass "
                f"(columns received: {extra}); add it to the dataset or set reference_column/baseline_column"
            )
        values = check_list(column, kwargs[column])
        if len(values) != n:
            raise ValueError(f"{column} has {len(values)} items but completions has {n}; they must match")
        return values

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs: Any) -> list[float]:
        """One reward per completion (float); extra keyword arguments are TRL's dataset columns and state."""
        sources, cands = _texts(prompts, completions, self.input_format)
        rm = self.ranker.rm
        if self.mode == "group":
            return group_rewards(rm, sources, cands)
        if self.mode == "reference":
            others = self._column(kwargs, self.reference_column, len(cands))
        elif self.baseline_fn is None:
            others = self._column(kwargs, self.baseline_column, len(cands))
        else:
            others = self._baselines(list(prompts), sources)
        column = self.reference_column if self.mode == "reference" else self.baseline_column
        others = _opponent_texts(list(prompts), others, sources, column, self.input_format)
        if self.mode == "reference":
            rewards = rm.rank_with_ref(sources, [[c] for c in cands], references=others)
            return [float(r[0]) for r in rewards]
        return [float(x) for x in rm.compare(sources, cands, others)]

    def _baselines(self, prompts: list, sources: list[str]) -> list[str]:
        todo: dict[str, Any] = {}
        for p, s in zip(prompts, sources):
            if s not in self._baseline_cache:
                todo.setdefault(s, p)
        if todo:
            answers = check_list("baseline_fn(prompts)", self.baseline_fn(list(todo.values())))
            if len(answers) != len(todo):
                raise ValueError(
                    f"baseline_fn returned {len(answers)} answers for {len(todo)} prompts; they must match"
                )
            for k, ((s, p), a) in enumerate(zip(todo.items(), answers)):
                # check now, with the right name, before the answer is cached
                answer_texts(
                    p,
                    a,
                    input_format=self.input_format,
                    prompt_name="baseline_fn prompt",
                    answer_name=f"baseline_fn(prompts)[{k}]",
                )
                self._baseline_cache[s] = a
        return [self._baseline_cache[s] for s in sources]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.baseline_fn is not None:
            # a baseline callable must be picklable itself; fail here with a clear message, not deep in pickle
            import pickle

            try:
                pickle.dumps(self.baseline_fn)
            except Exception as exc:  # noqa: BLE001 - re-raised with context
                raise TypeError(f"baseline_fn cannot be pickled ({exc}); use a module-level function") from exc
        return state


class PairRMPairwiseReward:
    """A pair-aware PairRM reward for ``trl.experimental.online_dpo.OnlineDPOTrainer``.

    Online DPO samples two completions per prompt and calls the reward functions once with
    ``prompts = 2 * prompts`` and ``completions = [A_0..A_{B-1}, B_0..B_{B-1}]``; it then prefers ``A_i`` when
    ``reward[i] >= reward[i + B]``. This reward compares each pair directly and returns

    * ``output="logit"``: ``[s_0..s_{B-1}, −s_0..−s_{B-1}]`` with ``s_i = C[A_i, B_i] − C[B_i, A_i]``;
    * ``output="proba"``: ``[p_i.., 1 − p_i..]`` with ``p_i = sigmoid(s_i / temperature)``.

    The halves layout is an internal detail of TRL, so it is checked: an odd count or ``prompts[:B] != prompts[B:]``
    raises ``ValueError`` instead of scoring the wrong pairs. An exact tie (``s_i = 0``) lets TRL pick ``A_i``.

    Logging: the halves cancel, so Online DPO's ``objective/scores`` (the mean reward) is 0 by construction (0.5
    with ``"proba"``) and ``objective/rlhf_reward`` is just the KL term. ``objective/scores_margin``, the mean
    ``r_chosen − r_rejected = 2|s_i|``, is the logged value that carries PairRM's signal.

    Args:
        ranker: a PairRM folder / Hub id, a loaded :class:`~pairrm_hf.PairRM`, or a
            :class:`~pairrm_hf.trl.PairRMJudge` (its model is shared).
        output: ``"logit"`` or ``"proba"``.
        temperature: for ``output="proba"``.
        name: as for :class:`PairRMReward`.
        input_format: as for :class:`PairRMReward`.
        device: as for :class:`PairRMReward`.
        **load_kwargs: as for :class:`PairRMReward`.
    """

    def __init__(
        self,
        ranker: Any = DEFAULT_MODEL,
        *,
        output: str = "logit",
        temperature: float = 1.0,
        name: str | None = None,
        input_format: str = "auto",
        device: Any = None,
        **load_kwargs: Any,
    ):
        if output not in ("logit", "proba"):
            raise ValueError(f"output must be 'logit' or 'proba', got {output!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        from .judges import PairRMJudge  # local: judges imports nothing from here, but keep module import cheap

        if isinstance(ranker, PairRMJudge):
            ranker = ranker.ranker
        self.ranker = LazyPairRM(ranker, device=device, **load_kwargs)
        self.input_format = check_input_format(input_format)
        self.output = output
        self.temperature = float(temperature)
        self.__name__ = name or "pairrm_pairwise"

    def __repr__(self) -> str:
        return f"PairRMPairwiseReward({self.ranker.path!r}, output={self.output!r})"

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs: Any) -> list[float]:
        """Rewards for Online DPO's halves layout (see the class docstring)."""
        prompts = check_list("prompts", prompts)
        completions = check_list("completions", completions)
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"completions has {n} items but prompts has {len(prompts)}; they must match")
        if n == 0 or n % 2:
            raise ValueError(
                f"PairRMPairwiseReward expects Online DPO's layout of 2*B completions [A_0..A_B-1, B_0..B_B-1], got {n}; "
                "use PairRMReward for GRPO/RLOO"
            )
        b = n // 2
        if prompts[:b] != prompts[b:]:
            bad = next(k for k in range(b) if prompts[k] != prompts[k + b])
            raise ValueError(
                f"PairRMPairwiseReward expects prompts == 2 * prompts_of_the_batch (Online DPO's layout), but "
                f"prompts[{bad}] != prompts[{bad + b}]; refusing to score mismatched pairs"
            )
        sources, cands = _texts(prompts, completions, self.input_format)
        rm = self.ranker.rm
        if self.output == "logit":
            s = rm.compare(sources[:b], cands[:b], cands[b:]).astype(np.float64)
            return [float(x) for x in s] + [float(-x) for x in s]
        p = rm.compare_proba(sources[:b], cands[:b], cands[b:], temperature=self.temperature).astype(np.float64)
        return [float(x) for x in p] + [float(1.0 - x) for x in p]
