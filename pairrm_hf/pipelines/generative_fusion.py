"""The ``generative-fusion`` pipeline: fuse candidate answers into one with GenFuser (seq2seq) or a chat LM.

>>> import pairrm_hf                                                                     # doctest: +SKIP
>>> fuse = pipeline("generative-fusion", model="llm-blender/gen_fuser_3b")              # doctest: +SKIP
>>> fuse("What is the capital of France?", ["Paris.", "It is Paris.", "Lyon."])         # doctest: +SKIP
{'fused_text': 'Paris is the capital of France.', 'candidates': ['Paris.', 'It is Paris.', 'Lyon.']}

Output, per input: ``{"fused_text": str, "candidates": [the candidates fused]}``, plus ``"ranking"`` (the
ranker's list of ``{"index", "candidate", "score", "rank"}``, best first) when a ``ranker`` is set. With
``num_return_sequences=k > 1`` an input gives a list of k such dicts. A single input returns its output, a list
a list of them, a generator or dataset an iterator over them (in input order).
"""

from __future__ import annotations

import os
from typing import Any

from transformers import GenerationConfig

from ..generation import fusion
from ..ranking.aggregation import topk_indices
from ..ranking.inputs import check_input_format
from ..utils.checks import check_top_k
from ._batching import InputBatchPipeline
from ._inputs import CallForm, FuseItem, call_form, fuse_item

__all__ = ["GenerativeFusionPipeline"]

#: Candidates fused per input when a ranker is set and ``top_k`` is not (upstream ``rank_and_fuse``'s default).
DEFAULT_TOP_K = 3


class GenerativeFusionPipeline(InputBatchPipeline):
    """Fuses each input's candidates (task ``"generative-fusion"``).

    Seq2seq models (``llm-blender/gen_fuser_3b``, Flan-T5) get upstream's exact GenFuser input (see
    :mod:`pairrm_hf.generation.fusion`; defaults ``num_beams=4``, ``max_new_tokens=candidate_maxlength=128``). Causal chat LMs
    get :data:`pairrm_hf.generation.fusion.AGGREGATOR_TEMPLATE` through their chat template, left padding, and only the new
    tokens are returned (default ``max_new_tokens=128``, greedy unless you pass sampling parameters).

    Call forms: ``pipe(prompt, candidates)``, ``pipe({"prompt": …, "candidates": […], "instruction": …})``,
    ``pipe([dict, …])``, ``pipe([prompts], [candidate lists])``, or a generator / ``KeyDataset`` /
    ``datasets.Dataset`` of such dicts (streams results in input order). ``batch_size`` inputs share one
    ``generate`` call (default 16), ``num_workers`` DataLoader workers run ``preprocess``.

    Parameters (at construction or per call; a call's values hold for that call only): ``ranker`` (a
    ``PairRM``, a ``pairwise-ranking`` pipeline or a checkpoint path, loaded once per process) with ``top_k``:
    rank first (one PairRM engine call per batch) and fuse the best ``top_k`` (upstream ``rank_and_fuse``; without
    ``top_k`` the best 3, or all when fewer). ``top_k`` without a ranker, or larger than an input's candidate
    count, is a ``ValueError``. ``input_format`` (``"auto"``/``"conversation"``): how the ranker sees the texts
    (see :mod:`pairrm_hf.ranking.inputs`). ``candidate_maxlength`` (tokens per candidate, default 128), ``max_length``
    (input tokens, default 1024). Every other keyword goes to ``generate`` (``top_k`` is the candidate count
    here; pass a sampling top-k inside ``generation_config``).
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _pipeline_calls_generate = True
    _non_generation_params = ("top_k",)
    _default_generation_config = GenerationConfig(
        num_beams=fusion.DEFAULT_NUM_BEAMS, max_new_tokens=fusion.CANDIDATE_MAXLENGTH
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_call(self._preprocess_params, self._forward_params, self._postprocess_params)
        self.seq2seq = fusion.is_seq2seq(self.model)
        fusion.prepare_fuser_tokenizer(self.tokenizer, self.model)
        if not self.seq2seq:  # beam search is GenFuser's upstream default, not a chat LM's
            self._generation_defaults.pop("num_beams", None)
        if self.tokenizer.pad_token_id is not None:
            self._generation_defaults["pad_token_id"] = self.tokenizer.pad_token_id

    @property
    def ranker(self):
        """The :class:`pairrm_hf.PairRM` set at construction to pick the top-k candidates, or None."""
        return self._forward_params.get("ranker")

    # ----------------------------------------------------------------------------------- Pipeline contract
    def _sanitize_parameters(
        self, ranker=None, top_k=None, candidate_maxlength=None, max_length=None, input_format=None, **generate_kwargs
    ):
        pre: dict[str, Any] = {}
        forward: dict[str, Any] = {}
        if input_format is not None:
            pre["input_format"] = check_input_format(input_format)
        if ranker is not None:
            forward["ranker"] = self._load_ranker(ranker)
        if top_k is not None:
            forward["top_k"] = check_top_k(top_k)  # the one rule, shared with PairRM.rank and the ranking pipeline
        for key, value in (("candidate_maxlength", candidate_maxlength), ("max_length", max_length)):
            if value is not None:
                forward[key] = value
        if candidate_maxlength is not None and "max_new_tokens" not in generate_kwargs:
            generate_kwargs["max_new_tokens"] = candidate_maxlength  # upstream: one knob sets both
        if generate_kwargs:
            forward["generate_kwargs"] = generate_kwargs
        return pre, forward, {}

    def _load_ranker(self, ranker: Any):
        """A ``PairRM`` from what the caller passed; a path loads once per process (``shared_pairrm``)."""
        if isinstance(ranker, (str, os.PathLike)):
            from ..ranking.ranker import shared_pairrm

            return shared_pairrm(os.fspath(ranker), device=str(self.device))
        return fusion.as_pairrm(ranker)

    def _check_call(self, preprocess_params: dict, forward_params: dict, postprocess_params: dict) -> None:
        top_k = forward_params.get("top_k")
        if top_k is not None and forward_params.get("ranker") is None:
            raise ValueError(
                f"top_k={top_k} keeps the best candidates by rank, but no ranker is set: pass ranker= (a PairRM, a "
                "pairwise-ranking pipeline or a checkpoint path), or drop top_k to fuse every candidate"
            )

    def _call_form(self, inputs: Any, candidates: Any) -> CallForm:
        return call_form(inputs, candidates, single=lambda x: isinstance(x, str), conversations=False)

    def preprocess(self, inputs: Any, input_format: str = "auto") -> FuseItem:
        """One input's fuser prompt and candidates, and the PairRM texts a ranker scores (:mod:`pairrm_hf.ranking.inputs`)."""
        return fuse_item(inputs, input_format)

    def _forward(
        self,
        model_inputs: list[FuseItem],
        ranker=None,
        top_k: int | None = None,
        candidate_maxlength: int | None = fusion.CANDIDATE_MAXLENGTH,
        max_length: int = fusion.MAX_LENGTH,
        generate_kwargs: dict | None = None,
    ) -> list[dict]:
        """Rank the batch (one engine call) when a ranker is set, then fuse it in one ``generate`` call."""
        items = model_inputs
        chosen = [it.candidates for it in items]
        rankings: list[list[dict] | None] = [None] * len(items)
        if ranker is not None:
            for it in items:
                check_top_k(top_k, len(it.candidates), candidates_name=it.name)
            ranked = ranker.rank_batch([it.source for it in items], [it.texts for it in items])
            chosen, rankings = [], []
            for it, ranking in zip(items, ranked):
                keep = topk_indices(ranking.ranks, min(top_k or DEFAULT_TOP_K, len(it.candidates)))
                chosen.append([it.candidates[i] for i in keep])
                rankings.append(
                    [
                        {
                            "index": int(i),
                            "candidate": it.candidates[i],
                            "score": float(ranking.scores[i]),
                            "rank": int(ranking.ranks[i]),
                        }
                        for i in topk_indices(ranking.ranks)
                    ]
                )
        instructions = [it.instruction or "" for it in items] if any(it.instruction for it in items) else None
        texts = fusion.fuser_texts(
            self.tokenizer,
            [it.prompt for it in items],
            chosen,
            instructions,
            seq2seq=self.seq2seq,
            candidate_maxlength=candidate_maxlength,
        )
        enc = self.tokenizer(
            texts, add_special_tokens=False, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        input_ids = enc["input_ids"].to(self.device)
        kwargs = self._prepare_generate_kwargs(dict(generate_kwargs or {}))
        generated = self.model.generate(
            input_ids=input_ids, attention_mask=enc["attention_mask"].to(self.device), **kwargs
        )
        if not self.seq2seq:
            generated = generated[:, input_ids.shape[1] :]
        per_input = generated.shape[0] // len(items)
        return [
            {
                "generated": generated[k * per_input : (k + 1) * per_input],
                "candidates": chosen[k],
                "ranking": rankings[k],
            }
            for k in range(len(items))
        ]

    def postprocess(self, model_outputs: dict) -> dict | list[dict]:
        """One input's fused text (a list of them with ``num_return_sequences > 1``)."""
        texts = self.tokenizer.batch_decode(model_outputs["generated"], skip_special_tokens=True)
        rows = []
        for text in texts:
            row: dict[str, Any] = {"fused_text": text, "candidates": list(model_outputs["candidates"])}
            if model_outputs["ranking"] is not None:
                row["ranking"] = model_outputs["ranking"]
            rows.append(row)
        return rows[0] if len(rows) == 1 else rows
