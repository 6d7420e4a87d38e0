"""The ``pairwise-ranking`` pipeline: rank candidate answers with PairRM through ``transformers.pipeline``.

>>> import pairrm_hf                                                            # doctest: +SKIP
>>> pipe = pipeline("pairwise-ranking", model="llm-blender/PairRM-hf")        # doctest: +SKIP
>>> pipe("What is the capital of France?", ["Paris.", "Berlin."])             # doctest: +SKIP
[{'index': 0, 'candidate': 'Paris.', 'score': 0.4, 'rank': 1, 'logit': 0.8, 'probability': 0.69}, {...}]

Output, per input: a list of dicts, best first: ``index`` (position in the input), ``candidate`` (as given: a str
or the caller's messages), ``score`` (higher is better; left out with ``return_scores=False``) and ``rank``
(1 = best, ties share a rank). With exactly two candidates each dict also has ``logit``, the symmetric logit
``C[this, other] − C[other, this]`` (> 0: this one is better), and ``probability`` = ``sigmoid(logit)``; the
entry with ``index == 0`` thus holds the probability that the first candidate is better. A single input returns
that list; a batch returns a list of them.

All model work goes through one :class:`pairrm_hf.PairRM` (its engine batches and deduplicates pairs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import Pipeline

from ..aggregation import competition_ranks
from ..ranker import REF_MODES, PairRM
from ..tokenization_pairrm import PairLengths, restore_sentencepiece_normalizer
from ._inputs import RankItem, normalize_inputs

__all__ = ["PairwiseRankingPipeline", "AGGREGATIONS"]

AGGREGATIONS = ("max_logits", "max_wins", "bubble")
_PARAMS = ("aggregation", "top_k", "return_scores", "reference", "seed")


def _model_folder(model) -> str | None:
    """The local folder the model was loaded from (a Hub id resolves to its cached snapshot), if any."""
    name = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
    if not name:
        return None
    if os.path.isdir(name):
        return name
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True, allow_patterns=["tokenizer.json", "spm.model"])
    except Exception:  # not cached / not a repo: keep the tokenizer as loaded
        return None


class PairwiseRankingPipeline(Pipeline):
    """Ranks candidate answers to a prompt with a PairRM checkpoint (task ``"pairwise-ranking"``).

    Call forms: ``pipe(prompt, candidates)``, ``pipe({"prompt": …, "candidates": […]})``, ``pipe([dict, …])``
    (a batch), ``pipe([prompts], [candidate lists])``, chat messages (``{"prompt": [messages], "candidates":
    [[assistant messages], …]}``), a list of conversations sharing their user turns, or
    ``{"conversations": [...]}``. Dicts may carry ``"instruction"`` (prepended to the prompt, as upstream) and
    ``"reference"`` (a reference answer to score against).

    Parameters (at construction or per call): ``aggregation`` (``max_logits`` | ``max_wins`` | ``bubble``),
    ``top_k`` (keep the best k), ``return_scores`` (default True), ``reference`` (``True`` or a mode of
    :data:`pairrm_hf.ranker.REF_MODES`: score each candidate against a reference picked from the candidates,
    score = ``C[c, ref] − C[ref, c]``; inputs with a ``"reference"`` key use that text), ``seed`` (bubble order),
    ``batch_size`` (pairs per forward pass).
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        folder = _model_folder(self.model)
        if folder is not None:
            # v5's DeBERTa tokenizer drops SentencePiece's NFKC normalizer; PairRM was trained with it.
            restore_sentencepiece_normalizer(self.tokenizer, folder)
        config = self.model.config
        lengths = PairLengths(
            int(getattr(config, "source_max_length", None) or PairLengths.source_max_length),
            int(getattr(config, "candidate_max_length", None) or PairLengths.candidate_max_length),
        )
        self.ranker = PairRM(
            self.model, self.tokenizer, lengths=lengths, device=self.device, batch_size=self._batch_size or 16
        )

    # ----------------------------------------------------------------------------------- Pipeline contract
    def _sanitize_parameters(self, **kwargs):
        unknown = set(kwargs) - set(_PARAMS)
        if unknown:
            raise TypeError(f"pairwise-ranking got unexpected parameters {sorted(unknown)}; expected some of {_PARAMS}")
        return {}, {}, {k: v for k, v in kwargs.items() if v is not None}

    def preprocess(self, inputs, candidates=None) -> dict:
        """Normalize one input into a :class:`RankItem` (no tensors: the engine tokenizes and batches)."""
        items, _ = normalize_inputs(inputs, candidates)
        return {"items": items}

    def _forward(self, model_inputs, **params):
        return {"results": self.rank_items(model_inputs["items"], **params)}

    def postprocess(self, model_outputs, **params):
        """The ranked list of the one input in ``model_outputs``."""
        return model_outputs["results"][0]

    def run_single(self, inputs, preprocess_params, forward_params, postprocess_params):
        """Rank one input in a single engine call (no per-item forward)."""
        return self.rank_items(normalize_inputs(inputs)[0], **postprocess_params)[0]

    def __call__(self, inputs: Any, candidates: Any = None, **kwargs) -> list:
        """Rank one input (returns its ranked list) or a batch (returns one ranked list per input)."""
        batch_size = kwargs.pop("batch_size", None)
        kwargs.pop("num_workers", None)
        _, _, params = self._sanitize_parameters(**kwargs)
        params = {**self._postprocess_params, **params}
        items, single = normalize_inputs(inputs, candidates)
        results = self.rank_items(items, batch_size=batch_size, **params)
        return results[0] if single else results

    # ----------------------------------------------------------------------------------- ranking
    def rank_items(
        self,
        items: Sequence[RankItem],
        *,
        aggregation: str = "max_logits",
        top_k: int | None = None,
        return_scores: bool = True,
        reference: bool | str | None = None,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> list[list[dict]]:
        """Rank normalized items in one engine pass per kind of work; see the module doc for the output."""
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if reference is True:
            reference = "longest"
        if reference not in (None, False) and reference not in REF_MODES:
            raise ValueError(f"reference must be True or one of {REF_MODES}, got {reference!r}")
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
            for k, item in enumerate(items):
                if top_k > len(item.texts):
                    raise ValueError(f"top_k={top_k} but input {k} has only {len(item.texts)} candidates")
        engine = self.ranker.engine
        saved = engine.batch_size
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
            engine.batch_size = batch_size
        try:
            scores, ranks, logits = self._score(items, aggregation, reference or None, seed)
        finally:
            engine.batch_size = saved
        out = []
        for item, s, r, logit in zip(items, scores, ranks, logits):
            rows = []
            for i in np.argsort(r, kind="stable")[:top_k]:
                row: dict[str, Any] = {"index": int(i), "candidate": item.originals[i]}
                if return_scores:
                    row["score"] = float(s[i])
                row["rank"] = int(r[i])
                if logit is not None:
                    value = logit if i == 0 else -logit
                    row["logit"] = float(value)
                    row["probability"] = float(1.0 / (1.0 + np.exp(-value)))
                rows.append(row)
            out.append(rows)
        return out

    def _score(self, items, aggregation, ref_mode, seed):
        prompts = [it.source for it in items]
        cands = [it.texts for it in items]
        instructions = [it.instruction or "" for it in items] if any(it.instruction for it in items) else None
        n = len(items)
        scores: list[Any] = [None] * n
        logits: list[float | None] = [None] * n
        if ref_mode is not None or any(it.reference is not None for it in items):
            explicit = [k for k, it in enumerate(items) if it.reference is not None]
            picked = [k for k, it in enumerate(items) if it.reference is None]
            for group, refs in ((explicit, [items[k].reference for k in explicit]), (picked, None)):
                if not group:
                    continue
                rewards = self.ranker.rank_with_ref(
                    [prompts[k] for k in group], [cands[k] for k in group], ref_mode=ref_mode or "longest",
                    references=refs, instructions=None if instructions is None else [instructions[k] for k in group],
                )  # fmt: skip
                for k, reward in zip(group, rewards):
                    scores[k] = reward
        else:
            rankings = self.ranker.rank_batch(
                prompts, cands, aggregation=aggregation, instructions=instructions, seed=seed
            )
            for k, ranking in enumerate(rankings):
                scores[k] = ranking.scores
                if ranking.matrix is not None and len(cands[k]) == 2:
                    logits[k] = float(ranking.matrix[0, 1] - ranking.matrix[1, 0])
        # Pairs without a full matrix (bubble, references) get their comparison from one extra symmetric call.
        missing = [k for k in range(n) if len(cands[k]) == 2 and logits[k] is None]
        if missing:
            values = self.ranker.compare(
                [prompts[k] for k in missing], [cands[k][0] for k in missing], [cands[k][1] for k in missing],
                instructions=None if instructions is None else [instructions[k] for k in missing],
            )  # fmt: skip
            for k, value in zip(missing, values):
                logits[k] = float(value)
        ranks = [competition_ranks(np.asarray(s)) for s in scores]
        return scores, ranks, logits

    # ----------------------------------------------------------------------------------- helpers
    def best_of_n_generate(self, model, tokenizer, prompts: Sequence[str], **kwargs) -> list:
        """Sample ``n`` answers per prompt from a causal LM and keep the best by this pipeline's PairRM.

        See :func:`pairrm_hf.generation.best_of_n_generate` for the arguments.
        """
        from ..generation import best_of_n_generate

        return best_of_n_generate(model, tokenizer, prompts, ranker=self.ranker, **kwargs)
