"""`Blender`: a drop-in for ``llm_blender.Blender``'s ranking API, backed by :class:`PairRM`.

Method names, arguments and return types follow the original (int32 ranks, float32 scores, float64 rewards).
Where the original had a bug, this facade fixes it; each difference is listed in the README's migration section.
Inputs follow the one input rule (:mod:`pairrm_hf.ranking.inputs`): plain strings stay plain, as the original; prompts and
candidates may also be chat messages (the original's conversation template), and ``input_format="conversation"``
puts plain strings through that template too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .ranking.aggregation import topk_indices
from .ranking.ranker import PairRM
from .utils.checks import check_positive_int

__all__ = ["Blender", "get_topk_candidates_from_ranks"]

_COMPARE_MODES = {"[A,B]+[B,A]": "symmetric", "[A,B]": "ab", "[B,A]": "ba"}


def _stack(rows: list[np.ndarray], dtype) -> np.ndarray | list[np.ndarray]:
    """A 2-D array when every input has the same candidate count, else a list of 1-D arrays."""
    rows = [np.asarray(r, dtype=dtype) for r in rows]
    return np.stack(rows) if len({len(r) for r in rows}) == 1 else rows


def get_topk_candidates_from_ranks(
    ranks: Any, candidates: Sequence[Sequence[str]], top_k: int | None = None
) -> list[list[str]]:
    """Per input, the ``top_k`` candidates with the best (smallest) ranks, best first; ties keep input order.

    For scores, pass ``-scores`` as upstream's ``rank_and_fuse`` does. Returns lists of str (upstream returned a
    fixed-width numpy string array, which broke on ragged candidate lists).
    """
    if len(ranks) != len(candidates):
        raise ValueError(f"candidates has {len(candidates)} items but ranks has {len(ranks)}")
    out = []
    for k, (row, cands) in enumerate(zip(ranks, candidates)):
        if len(row) != len(cands):
            raise ValueError(f"ranks[{k}] has {len(row)} entries but candidates[{k}] has {len(cands)}")
        out.append([cands[i] for i in topk_indices(np.asarray(row), top_k)])
    return out


class Blender:
    """The ``llm_blender.Blender`` ranking methods on transformers 5.

    >>> blender = Blender()                                   # doctest: +SKIP
    >>> blender.loadranker("llm-blender/PairRM")              # doctest: +SKIP
    >>> blender.rank(["hi!"], [["hello!", "go away"]])        # doctest: +SKIP
    array([[1, 2]], dtype=int32)
    """

    def __init__(self, ranker: PairRM | None = None):
        self.ranker = ranker
        self.fuser = None
        self.fuser_tokenizer = None

    def loadranker(self, ranker_path: str = "llm-blender/PairRM", device: str | None = None, **kwargs) -> None:
        """Load a ranker checkpoint in any published layout (see :meth:`PairRM.from_pretrained`)."""
        self.ranker = PairRM.from_pretrained(ranker_path, device=device, **kwargs)

    def _need_ranker(self) -> PairRM:
        if self.ranker is None:
            raise RuntimeError("no ranker loaded: call Blender.loadranker(path_or_id) first")
        return self.ranker

    def _with_batch(self, batch_size: int | None, disable_tqdm: bool = True) -> PairRM:
        """A view of the ranker with this call's batch size and progress bar; the ranker itself (possibly the
        process-wide ``shared_pairrm``) keeps its options."""
        ranker = self._need_ranker()
        changes = {"show_progress": not disable_tqdm}
        if batch_size is not None:
            check_positive_int("batch_size", batch_size)
            changes["batch_size"] = batch_size
        return ranker.with_options(**changes)

    def rank(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        return_scores: bool = False,
        batch_size: int = 8,
        disable_tqdm: bool = False,
        aggregation: str = "max_logits",
        input_format: str = "auto",
    ) -> np.ndarray | list[np.ndarray]:
        """int32 ranks ``[N, n]`` (1 = best), or float32 max_logits scores with ``return_scores``.

        Inputs may have different candidate counts; the result is then a list of 1-D arrays.
        """
        ranker = self._with_batch(batch_size, disable_tqdm)
        rankings = ranker.rank_batch(
            inputs, candidates, instructions=instructions, aggregation=aggregation, input_format=input_format
        )
        if return_scores:
            return _stack([r.scores for r in rankings], np.float32)
        return _stack([r.ranks for r in rankings], np.int32)

    def compare(
        self,
        inputs: Sequence[str],
        candidates_A: Sequence[str],
        candidates_B: Sequence[str],
        instructions: Sequence[str] | None = None,
        batch_size: int = 4,
        return_logits: bool = False,
        mode: str = "[A,B]+[B,A]",
        disable_tqdm: bool = False,
        input_format: str = "auto",
    ) -> np.ndarray:
        """float32 logits (> 0: A better) with ``return_logits``, else a bool array ``logits > 0``.

        ``mode``: ``"[A,B]+[B,A]"`` = C[A,B] − C[B,A] (default), ``"[A,B]"`` = C[A,B], ``"[B,A]"`` = −C[B,A].
        Upstream returned C[B,A] unnegated for ``"[B,A]"`` and ran the default for unknown modes; here the sign is
        always "A better" and an unknown mode is a ``ValueError``.
        """
        if mode not in _COMPARE_MODES:
            raise ValueError(f"mode must be one of {list(_COMPARE_MODES)}, got {mode!r}")
        ranker = self._with_batch(batch_size, disable_tqdm)
        logits = ranker.compare(
            inputs,
            candidates_A,
            candidates_B,
            mode=_COMPARE_MODES[mode],
            instructions=instructions,
            input_format=input_format,
        )
        return logits if return_logits else logits > 0

    def compare_conversations(
        self,
        conversations_a: Sequence[Sequence[Mapping]],
        conversations_b: Sequence[Sequence[Mapping]],
        batch_size: int = 4,
        return_logits: bool = False,
        mode: str = "[A,B]+[B,A]",
    ) -> np.ndarray:
        """Compare multi-turn conversations sharing their user turns (upstream's template, typo included)."""
        from .ranking.inputs import conversation_pair_texts

        sources, cands_a, cands_b = conversation_pair_texts(conversations_a, conversations_b)
        return self.compare(sources, cands_a, cands_b, batch_size=batch_size, return_logits=return_logits, mode=mode)

    def rank_with_ref(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        return_scores: bool = False,
        batch_size: int = 8,
        ref_mode: str = "longest",
        ref_candidates: Sequence[str] | None = None,
        disable_tqdm: bool = False,
        input_format: str = "auto",
        **kwargs,
    ) -> np.ndarray | list[np.ndarray]:
        """float64 rewards ``C[c,ref] − C[ref,c]`` with ``return_scores``, else their int32 ranks.

        ``mode=`` is accepted as an alias of ``ref_mode`` (upstream's README passed it, and upstream ignored it).
        """
        if "mode" in kwargs:
            ref_mode = kwargs.pop("mode")
        if kwargs:
            raise TypeError(f"rank_with_ref() got unexpected keyword arguments {sorted(kwargs)}")
        ranker = self._with_batch(batch_size, disable_tqdm)
        rewards = ranker.rank_with_ref(
            inputs,
            candidates,
            ref_mode=ref_mode,
            references=ref_candidates,
            instructions=instructions,
            input_format=input_format,
        )
        if return_scores:
            return _stack(rewards, np.float64)
        from .ranking.aggregation import competition_ranks

        return _stack([competition_ranks(r) for r in rewards], np.int32)

    def get_best_of_n(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        pairrm_cmp_type: str = "bubble",
        return_all: bool = False,
        batch_size: int = 8,
        seed: int = 0,
        input_format: str = "auto",
    ) -> list:
        """Best candidate per input by one seeded ``bubble`` pass or a ``full`` ranking (see :meth:`PairRM.best_of_n`)."""
        ranker = self._with_batch(batch_size)
        return ranker.best_of_n(
            inputs,
            candidates,
            method=pairrm_cmp_type,
            return_all=return_all,
            instructions=instructions,
            seed=seed,
            input_format=input_format,
        )

    def get_worst_of_n(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        pairrm_cmp_type: str = "bubble",
        return_all: bool = False,
        batch_size: int = 8,
        seed: int = 0,
        input_format: str = "auto",
    ) -> list:
        """Worst candidate per input; the mirror of :meth:`get_best_of_n`."""
        ranker = self._with_batch(batch_size)
        return ranker.worst_of_n(
            inputs,
            candidates,
            method=pairrm_cmp_type,
            return_all=return_all,
            instructions=instructions,
            seed=seed,
            input_format=input_format,
        )

    # ------------------------------------------------------------------------------------------ generation
    def n_generate(
        self,
        model,
        model_tokenizer,
        inputs: Sequence[str],
        instructions: Sequence[str] | None = None,
        n: int = 5,
        sampling_mode: str | None = "top_p_sampling",
        batch_size: int = 4,
        use_chat_template: bool | str = "auto",
        **generate_kwargs,
    ) -> list[list[str]]:
        """``n`` sampled completions per input from a causal LM (upstream ``n_generate``; see :func:`sample_n`).

        ``use_chat_template="auto"`` wraps each prompt in the tokenizer's chat template unless it already carries it
        (upstream never applied one, so prompts were usually rendered by the caller); ``max_new_tokens`` defaults
        to 128 (upstream: ``model_max_length``).
        """
        from .generation.sampling import sample_n

        return sample_n(
            model,
            model_tokenizer,
            inputs,
            n=n,
            instructions=instructions,
            batch_size=batch_size,
            use_chat_template=use_chat_template,
            sampling_mode=sampling_mode,
            **generate_kwargs,
        )

    def best_of_n_generate(
        self,
        model,
        model_tokenizer,
        inputs: Sequence[str],
        instructions: Sequence[str] | None = None,
        n: int = 5,
        sampling_mode: str | None = "top_p_sampling",
        batch_size: int = 4,
        pairrm_cmp_type: str = "bubble",
        return_all: bool = False,
        use_chat_template: bool | str = "auto",
        seed: int = 0,
        **generate_kwargs,
    ) -> list[str] | list[list[str]]:
        """Sample ``n`` completions per input and keep the one the ranker likes best (upstream ``best_of_n_generate``).

        Generation as :meth:`n_generate`, selection as :meth:`get_best_of_n` (ranking batch ``min(batch_size, 32)``
        as upstream). See :func:`pairrm_hf.generation.sampling.best_of_n_generate`.
        """
        from .generation.sampling import best_of_n_generate

        ranker = self._with_batch(min(batch_size, 32))
        return best_of_n_generate(
            model,
            model_tokenizer,
            inputs,
            n=n,
            ranker=ranker,
            method=pairrm_cmp_type,
            instructions=instructions,
            return_all=return_all,
            batch_size=batch_size,
            seed=seed,
            use_chat_template=use_chat_template,
            sampling_mode=sampling_mode,
            **generate_kwargs,
        )

    # ------------------------------------------------------------------------------------------ fusion
    def loadfuser(
        self, fuser_path: str = "llm-blender/gen_fuser_3b", device: str | None = None, dtype: Any = "bfloat16", **kwargs
    ) -> None:
        """Load a fuser: GenFuser / any seq2seq LM, or a causal chat LM (see :func:`pairrm_hf.generation.fusion.load_fuser`).

        ``dtype`` defaults to bfloat16 as upstream (``torch_dtype=`` is accepted as an alias).
        """
        from .generation.fusion import load_fuser

        if "torch_dtype" in kwargs:
            dtype = kwargs.pop("torch_dtype")
        if kwargs:
            raise TypeError(f"loadfuser() got unexpected keyword arguments {sorted(kwargs)}")
        self.fuser, self.fuser_tokenizer = load_fuser(fuser_path, device=device, dtype=dtype)

    def _need_fuser(self):
        if self.fuser is None:
            raise RuntimeError("no fuser loaded: call Blender.loadfuser(path_or_id) first")
        return self.fuser, self.fuser_tokenizer

    def fuse(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        batch_size: int = 4,
        **generate_kwargs,
    ) -> list[str] | list[list[str]]:
        """Fuse each input's candidates into one answer (upstream ``Blender.fuse``).

        Defaults as upstream: ``num_beams=4``, ``max_new_tokens=candidate_max_length=128``; ``candidate_max_length=``
        sets both. Unlike upstream the caller's candidate lists are left untouched, and ``num_return_sequences=k``
        gives one list of k texts per input instead of one flat list.
        """
        from .generation.fusion import CANDIDATE_MAXLENGTH, fuse_generate

        model, tokenizer = self._need_fuser()
        maxlength = generate_kwargs.pop("candidate_max_length", None)
        if maxlength is not None:
            generate_kwargs.setdefault("max_new_tokens", maxlength)
        return fuse_generate(
            model,
            tokenizer,
            inputs,
            candidates,
            instructions,
            batch_size=batch_size,
            candidate_maxlength=maxlength or CANDIDATE_MAXLENGTH,
            **generate_kwargs,
        )

    def rank_and_fuse(
        self,
        inputs: Sequence[str],
        candidates: Sequence[Sequence[str]],
        instructions: Sequence[str] | None = None,
        return_scores: bool = False,
        batch_size: int = 4,
        top_k: int = 3,
        **generate_kwargs,
    ) -> tuple[list, np.ndarray | list[np.ndarray]]:
        """Rank, keep each input's best ``top_k`` candidates (best first) and fuse them (upstream ``rank_and_fuse``).

        Returns ``(fused, ranks)``, or ``(fused, scores)`` with ``return_scores``. ``top_k`` larger than an input's
        candidate count is a ``ValueError`` (upstream silently fused all).
        """
        from .generation.fusion import rank_top_k

        ranker = self._with_batch(batch_size)
        top, rankings = rank_top_k(ranker, inputs, candidates, instructions, top_k=top_k)
        fused = self.fuse(inputs, top, instructions=instructions, batch_size=batch_size, **generate_kwargs)
        if return_scores:
            return fused, _stack([r.scores for r in rankings], np.float32)
        return fused, _stack([r.ranks for r in rankings], np.int32)
