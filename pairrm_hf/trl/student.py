"""A distilled one-pass student as a TRL reward function: one forward row per completion, no pairs.

TRL can also load the student by its id (``reward_funcs="path/or/id"``), but then it scores ``prompt + completion``
as one text without special tokens, which is not the ``(prompt, response)`` text pair the student was trained on;
:class:`StudentReward` feeds the pair, with prompts and chat completions rendered by the one input rule.
"""

from __future__ import annotations

import os
from typing import Any

from ..ranking.inputs import answer_texts, check_input_format
from ..training.distillation import load_student, student_scores
from ..utils.checks import check_list
from ._common import default_device

__all__ = ["StudentReward"]


class StudentReward:
    """``GRPOTrainer``/``RLOOTrainer`` ``reward_funcs=`` entry for a student made by
    :func:`~pairrm_hf.training.distillation.distill_pairrm`: the reward is the student's score of
    ``(prompt, completion)``.

    Args:
        student: a student folder/Hub id (loaded on the first call; pickles as its path), or ``(model, tokenizer)``.
        batch_size: rows per forward pass. max_length: tokens per row (as in training).
        device: ``None`` = the current CUDA device when there is one, else CPU.
        input_format: the one input rule's switch (see :mod:`pairrm_hf.ranking.inputs`).
    """

    def __init__(
        self,
        student: str | os.PathLike | tuple,
        *,
        batch_size: int = 64,
        max_length: int = 512,
        device: Any = None,
        input_format: str = "auto",
    ):
        self.path = None if isinstance(student, tuple) else os.fspath(student)
        self._loaded = student if isinstance(student, tuple) else None
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self.input_format = check_input_format(input_format)
        self.__name__ = "student_reward"  # TRL logs rewards/<__name__>

    def _model(self):
        if self._loaded is None:
            model, tokenizer = load_student(self.path)
            model.to(self.device if self.device is not None else default_device())
            self._loaded = (model, tokenizer)
        return self._loaded

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        """One reward per completion (TRL's reward function contract; other columns are ignored)."""
        prompts, completions = check_list("prompts", prompts), check_list("completions", completions)
        if len(prompts) != len(completions):
            raise ValueError(f"prompts has {len(prompts)} items but completions has {len(completions)}")
        pairs = [
            answer_texts(
                p, c, input_format=self.input_format, prompt_name=f"prompts[{k}]", answer_name=f"completions[{k}]"
            )
            for k, (p, c) in enumerate(zip(prompts, completions))
        ]
        model, tokenizer = self._model()
        got = student_scores(
            model,
            tokenizer,
            [s for s, _ in pairs],
            [[c] for _, c in pairs],
            batch_size=self.batch_size,
            max_length=self.max_length,
        )
        return [float(g[0]) for g in got]

    def __getstate__(self) -> dict:
        if self.path is None:
            raise TypeError("a StudentReward built from a (model, tokenizer) tuple cannot be pickled; pass a folder")
        state = dict(self.__dict__)
        state["_loaded"] = None
        return state
