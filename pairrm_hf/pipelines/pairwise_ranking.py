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
that list, a list of inputs a list of them, a generator or dataset an iterator over them (in input order).

The pipeline follows transformers' flow: ``preprocess`` makes one input's PairRM texts (:mod:`pairrm_hf.ranking.inputs`),
the DataLoader gathers ``batch_size`` inputs, ``_forward`` ranks them in one call to the engine of a
:class:`pairrm_hf.PairRM` (which batches and deduplicates the pairs of all those inputs together), and
``postprocess`` formats each input's ranking.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..checkpoints.loading import save_pairrm
from ..ranking.aggregation import competition_ranks
from ..ranking.inputs import check_input_format, is_messages
from ..ranking.methods import RANKING_METHODS
from ..ranking.ranker import REF_MODES, PairRM
from ..ranking.rewards import symmetric_matrix, win_probability
from ..tokenization.tokenization_pairrm import PairLengths, restore_sentencepiece_normalizer
from ..utils.checks import check_positive_int, check_top_k
from ._batching import InputBatchPipeline
from ._inputs import CallForm, RankItem, call_form, rank_item

__all__ = ["PairwiseRankingPipeline", "AGGREGATIONS"]

#: The ranking methods the pipeline accepts: the package's one registry (read-only, by name).
AGGREGATIONS = RANKING_METHODS
_PRE = ("input_format",)
_FORWARD = ("aggregation", "reference", "seed", "pair_batch_size")
_POST = ("top_k", "return_scores")
_PARAMS = (*_PRE, *_FORWARD, *_POST)


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


class PairwiseRankingPipeline(InputBatchPipeline):
    """Ranks candidate answers to a prompt with a PairRM checkpoint (task ``"pairwise-ranking"``).

    Call forms: ``pipe(prompt, candidates)``, ``pipe({"prompt": …, "candidates": […]})``, ``pipe([dict, …])``
    (a list), ``pipe([prompts], [candidate lists])``, chat messages (``{"prompt": [messages], "candidates":
    [str or [assistant messages], …]}``), a list of conversations sharing their user turns, or
    ``{"conversations": [...]}``; and, streaming, a generator, ``KeyDataset(ds, "col")`` or a ``datasets.Dataset``
    whose items are such dicts (or lists of conversations). Dicts may carry ``"instruction"`` (prepended to a
    plain prompt, as upstream) and ``"reference"`` (a reference answer to score against).

    Parameters (at construction or per call):

    * ``aggregation``: a method of :data:`pairrm_hf.ranking.methods.RANKING_METHODS` (default ``max_logits``;
      methods added with ``register_ranking_method`` work too);
    * ``top_k``: keep the best k (a positive int, at most the input's candidate count, else ``ValueError``);
    * ``return_scores`` (default True);
    * ``reference``: ``True`` or a mode of :data:`pairrm_hf.ranking.ranker.REF_MODES`: score each candidate against a
      reference picked from the candidates, score = ``C[c, ref] − C[ref, c]``; inputs with a ``"reference"`` key
      use that answer;
    * ``seed`` (bubble order); ``input_format``: ``"auto"`` or ``"conversation"`` (see :mod:`pairrm_hf.ranking.inputs`);
    * ``batch_size``: inputs per engine call (default 16; transformers' meaning), ``num_workers``: DataLoader
      workers for ``preprocess`` (default 0), ``pair_batch_size``: rows (ordered pairs) per forward pass (default
      16; results do not depend on it), ``backend``: ``"auto"`` (default, or ``$PAIRRM_BACKEND``: OpenVINO for a
      fp32 PairRM on CPU when installed, else torch), ``"torch"`` or ``"openvino"`` (the backbone as an OpenVINO
      model on CPU, see :mod:`pairrm_hf.ranking.openvino_backend`).
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, pair_batch_size: int | None = None, backend: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # pipeline() hands model_kwargs to the tokenizer too; a legacy load's backbone_config is no tokenizer setting.
        getattr(self.tokenizer, "init_kwargs", {}).pop("backbone_config", None)
        self._folder = _model_folder(self.model)
        if self._folder is not None:
            # v5's DeBERTa tokenizer drops SentencePiece's NFKC normalizer; PairRM was trained with it.
            restore_sentencepiece_normalizer(self.tokenizer, self._folder)
        config = self.model.config
        lengths = PairLengths(
            int(getattr(config, "source_max_length", None) or PairLengths.source_max_length),
            int(getattr(config, "candidate_max_length", None) or PairLengths.candidate_max_length),
        )
        self.ranker = PairRM(
            self.model,
            self.tokenizer,
            lengths=lengths,
            device=self.device,
            batch_size=check_positive_int("pair_batch_size", pair_batch_size) if pair_batch_size is not None else 16,
            backend=backend,
        )

    # ----------------------------------------------------------------------------------- Pipeline contract
    def _sanitize_parameters(self, **kwargs):
        unknown = set(kwargs) - set(_PARAMS)
        if unknown:
            raise TypeError(f"pairwise-ranking got unexpected parameters {sorted(unknown)}; expected some of {_PARAMS}")
        given = {k: v for k, v in kwargs.items() if v is not None}
        if "aggregation" in given and given["aggregation"] not in RANKING_METHODS:
            raise ValueError(f"aggregation must be one of {tuple(RANKING_METHODS)}, got {given['aggregation']!r}")
        reference = given.get("reference")
        if reference not in (None, True, False) and reference not in REF_MODES:
            raise ValueError(f"reference must be True or one of {REF_MODES}, got {reference!r}")
        check_top_k(given.get("top_k"))  # the one rule, shared with PairRM.rank and fusion
        if "pair_batch_size" in given:
            check_positive_int("pair_batch_size", given["pair_batch_size"])
        if "input_format" in given:
            check_input_format(given["input_format"])
        pre = {k: given[k] for k in _PRE if k in given}
        if "top_k" in given:
            pre["top_k"] = given["top_k"]  # checked against each input's candidate count before any compute
        return pre, {k: given[k] for k in _FORWARD if k in given}, {k: given[k] for k in _POST if k in given}

    def _call_form(self, inputs: Any, candidates: Any) -> CallForm:
        return call_form(inputs, candidates, single=lambda x: isinstance(x, str) or is_messages(x), conversations=True)

    def preprocess(self, inputs: Any, input_format: str = "auto", top_k: int | None = None) -> RankItem:
        """One input's PairRM texts (no tensors: the engine tokenizes each distinct text once per batch)."""
        item = rank_item(inputs, input_format)
        check_top_k(top_k, len(item.texts), candidates_name=item.name)
        return item

    def _forward(
        self,
        model_inputs: list[RankItem],
        aggregation: str = "max_logits",
        reference: bool | str | None = None,
        seed: int = 0,
        pair_batch_size: int | None = None,
    ) -> list[dict]:
        """Rank a batch of inputs with one engine call (per kind of work) and return one result per input."""
        if reference is True:
            reference = "longest"
        ranker = self._ranker_for(pair_batch_size)
        scores, logits = _score(ranker, model_inputs, aggregation, reference or None, seed)
        return [{"item": item, "scores": s, "logit": logit} for item, s, logit in zip(model_inputs, scores, logits)]

    def postprocess(self, model_outputs: dict, top_k: int | None = None, return_scores: bool = True) -> list[dict]:
        """The ranked list of one input, best first (see the module doc)."""
        item, scores, logit = model_outputs["item"], model_outputs["scores"], model_outputs["logit"]
        ranks = competition_ranks(np.asarray(scores))
        rows = []
        for i in np.argsort(ranks, kind="stable")[:top_k]:
            row: dict[str, Any] = {"index": int(i), "candidate": item.originals[i]}
            if return_scores:
                row["score"] = float(scores[i])
            row["rank"] = int(ranks[i])
            if logit is not None:
                value = logit if i == 0 else -logit
                row["logit"] = float(value)
                row["probability"] = float(win_probability(value))
            rows.append(row)
        return rows

    def _ranker_for(self, pair_batch_size: int | None) -> PairRM:
        """``self.ranker``, or a view of it with another pair batch (same model and encoder; nothing is changed)."""
        if pair_batch_size is None or pair_batch_size == self.ranker.options.batch_size:
            return self.ranker
        return self.ranker.with_options(batch_size=pair_batch_size)

    # ----------------------------------------------------------------------------------- saving
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Write the model and its tokenizer as a PairRM checkpoint (HF-native layout).

        ``pipeline("pairwise-ranking", model=save_directory)`` and ``PairRM.from_pretrained(save_directory)`` load
        it back with the same scores; the tokenizer keeps its NFKC normalizer. Unlike transformers' default, no
        pipeline code is copied and the model's config gets no ``custom_pipelines`` entry: the task is registered
        by ``import pairrm_hf`` (never by remote code). ``kwargs`` go to the model's ``save_pretrained``.
        """
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {os.fspath(save_directory)!r} is a file; pass a folder")
        # the ranker's model: with OpenVINO running the backbone, reading it restores the released torch weights
        save_pairrm(self.ranker.model, self.tokenizer, save_directory, spm_source=self._folder, **kwargs)

    # ----------------------------------------------------------------------------------- helpers
    def best_of_n_generate(self, model, tokenizer, prompts: Sequence[str], **kwargs) -> list:
        """Sample ``n`` answers per prompt from a causal LM and keep the best by this pipeline's PairRM.

        See :func:`pairrm_hf.generation.sampling.best_of_n_generate` for the arguments.
        """
        from ..generation.sampling import best_of_n_generate

        return best_of_n_generate(model, tokenizer, prompts, ranker=self.ranker, **kwargs)


def _score(ranker: PairRM, items: Sequence[RankItem], aggregation: str, ref_mode: str | None, seed: int):
    """Scores (and the two-candidate logit) of each item: one ``rank_batch`` call for the whole batch, or one
    ``rank_with_ref`` call per kind of reference, plus one ``compare`` for two-candidate inputs without a matrix."""
    sources = [it.source for it in items]
    cands = [it.texts for it in items]
    n = len(items)
    scores: list[Any] = [None] * n
    logits: list[float | None] = [None] * n
    if ref_mode is not None or any(it.reference is not None for it in items):
        explicit = [k for k, it in enumerate(items) if it.reference is not None]
        picked = [k for k, it in enumerate(items) if it.reference is None]
        for group, refs in ((explicit, [items[k].reference for k in explicit]), (picked, None)):
            if not group:
                continue
            rewards = ranker.rank_with_ref(
                [sources[k] for k in group], [cands[k] for k in group], ref_mode=ref_mode or "longest", references=refs
            )
            for k, reward in zip(group, rewards):
                scores[k] = reward
    else:
        rankings = ranker.rank_batch(sources, cands, aggregation=aggregation, seed=seed)
        for k, ranking in enumerate(rankings):
            scores[k] = ranking.scores
            if ranking.matrix is not None and len(cands[k]) == 2:
                logits[k] = float(symmetric_matrix(ranking.matrix)[0, 1])
    # Pairs without a full matrix (bubble, sort, references) get their comparison from one extra symmetric call.
    missing = [k for k in range(n) if len(cands[k]) == 2 and logits[k] is None]
    if missing:
        values = ranker.compare(
            [sources[k] for k in missing], [cands[k][0] for k in missing], [cands[k][1] for k in missing]
        )
        for k, value in zip(missing, values):
            logits[k] = float(value)
    return scores, logits
