"""The ``generative-fusion`` pipeline: fuse candidate answers into one with GenFuser (seq2seq) or a chat LM.

>>> import pairrm_hf                                                                     # doctest: +SKIP
>>> fuse = pipeline("generative-fusion", model="llm-blender/gen_fuser_3b")              # doctest: +SKIP
>>> fuse("What is the capital of France?", ["Paris.", "It is Paris.", "Lyon."])         # doctest: +SKIP
{'fused_text': 'Paris is the capital of France.', 'candidates': ['Paris.', 'It is Paris.', 'Lyon.']}

Output, per input: ``{"fused_text": str, "candidates": [the candidates fused]}``, plus ``"ranking"`` (the
ranker's list of ``{"index", "candidate", "score", "rank"}``, best first) when a ``ranker`` is set. With
``num_return_sequences=k > 1`` an input gives a list of k such dicts. A single input returns its output, a batch a
list of them.
"""

from __future__ import annotations

from typing import Any

from transformers import GenerationConfig, Pipeline

from .. import fusion
from ._inputs import normalize_fuse_inputs

__all__ = ["GenerativeFusionPipeline"]

_PRE = ("candidate_maxlength", "max_length")


class GenerativeFusionPipeline(Pipeline):
    """Fuses each input's candidates (task ``"generative-fusion"``).

    Seq2seq models (``llm-blender/gen_fuser_3b``, Flan-T5) get upstream's exact GenFuser input (see
    :mod:`pairrm_hf.fusion`; defaults ``num_beams=4``, ``max_new_tokens=candidate_maxlength=128``). Causal chat LMs
    get :data:`pairrm_hf.fusion.AGGREGATOR_TEMPLATE` through their chat template, left padding, and only the new
    tokens are returned (default ``max_new_tokens=128``, greedy unless you pass sampling parameters).

    Call forms: ``pipe(prompt, candidates)``, ``pipe({"prompt": …, "candidates": […], "instruction": …})``,
    ``pipe([dict, …])`` (a batch; ``batch_size=`` batches generation), ``pipe([prompts], [candidate lists])``.

    Parameters (at construction or per call): ``ranker`` (a ``PairRM``, a ``pairwise-ranking`` pipeline or a
    checkpoint path) with ``top_k`` (default 3): rank first and fuse the best ``top_k`` (upstream
    ``rank_and_fuse``); ``candidate_maxlength`` (tokens per candidate, default 128), ``max_length`` (input tokens,
    default 1024). Every other keyword goes to ``generate`` (``top_k`` is the candidate count here; pass a
    sampling top-k inside ``generation_config``).
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
        self._ranker = None
        self._ranker_source = None
        self._top_k = 3
        super().__init__(*args, **kwargs)
        self.seq2seq = fusion.is_seq2seq(self.model)
        fusion.prepare_fuser_tokenizer(self.tokenizer, self.model)
        if not self.seq2seq:  # beam search is GenFuser's upstream default, not a chat LM's
            self._generation_defaults.pop("num_beams", None)
        if self.tokenizer.pad_token_id is not None:
            self._generation_defaults["pad_token_id"] = self.tokenizer.pad_token_id

    # ----------------------------------------------------------------------------------- Pipeline contract
    def _sanitize_parameters(
        self, ranker=None, top_k=None, candidate_maxlength=None, max_length=None, **generate_kwargs
    ):
        if ranker is not None:
            self._ranker_source = ranker
            self._ranker = None
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive int, got {top_k!r}")
            self._top_k = top_k
        pre = {
            k: v for k, v in (("candidate_maxlength", candidate_maxlength), ("max_length", max_length)) if v is not None
        }
        if candidate_maxlength is not None and "max_new_tokens" not in generate_kwargs:
            generate_kwargs["max_new_tokens"] = candidate_maxlength  # upstream: one knob sets both
        forward = {"generate_kwargs": generate_kwargs} if generate_kwargs else {}
        return pre, forward, {}

    def preprocess(
        self,
        item: dict,
        candidate_maxlength: int | None = fusion.CANDIDATE_MAXLENGTH,
        max_length: int = fusion.MAX_LENGTH,
    ) -> dict:
        """Tokenize one ``{"prompt", "candidates", "instruction"}`` item into the fuser's prompt ids."""
        text = fusion.fuser_texts(
            self.tokenizer, [item["prompt"]], [item["candidates"]],
            None if item.get("instruction") is None else [item["instruction"]],
            seq2seq=self.seq2seq, candidate_maxlength=candidate_maxlength,
        )[0]  # fmt: skip
        enc = self.tokenizer(
            text, add_special_tokens=False, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _forward(self, model_inputs: dict, generate_kwargs: dict | None = None) -> dict:
        input_ids = model_inputs["input_ids"]
        kwargs = self._prepare_generate_kwargs(dict(generate_kwargs or {}))
        generated = self.model.generate(input_ids=input_ids, attention_mask=model_inputs["attention_mask"], **kwargs)
        if not self.seq2seq:
            generated = generated[:, input_ids.shape[1] :]
        batch = input_ids.shape[0]
        return {"generated": generated.reshape(batch, generated.shape[0] // batch, -1)}

    def postprocess(self, model_outputs: dict) -> list[str]:
        """Decoded generations of one input (one string per returned sequence)."""
        return self.tokenizer.batch_decode(model_outputs["generated"][0], skip_special_tokens=True)

    # ----------------------------------------------------------------------------------- calling
    @property
    def ranker(self):
        """The :class:`pairrm_hf.PairRM` used to pick the top-k candidates, or None (fuse all candidates)."""
        if self._ranker is None and self._ranker_source is not None:
            self._ranker = fusion.as_pairrm(self._ranker_source, device=self.device)
        return self._ranker

    def __call__(self, inputs: Any, candidates: Any = None, **kwargs) -> Any:
        """Fuse one input (returns its output) or a batch (returns a list); see the module doc."""
        saved = (self._ranker, self._ranker_source, self._top_k)
        try:
            if "ranker" in kwargs or "top_k" in kwargs:  # per-call values must not stick to the pipeline
                self._sanitize_parameters(ranker=kwargs.pop("ranker", None), top_k=kwargs.pop("top_k", None))
            items, single = normalize_fuse_inputs(inputs, candidates)
            rankings = [None] * len(items)
            if self.ranker is not None:
                rankings = self._rank(items)
            outputs = super().__call__(items, **kwargs)
        finally:
            if saved[1] is not self._ranker_source or saved[2] != self._top_k:
                self._ranker, self._ranker_source, self._top_k = saved
        results = []
        for item, texts, ranking in zip(items, outputs, rankings):
            rows = [{"fused_text": t, "candidates": list(item["candidates"])} for t in texts]
            if ranking is not None:
                for row in rows:
                    row["ranking"] = ranking
            results.append(rows[0] if len(rows) == 1 else rows)
        return results[0] if single else results

    def _rank(self, items: list[dict]) -> list[list[dict]]:
        """Rank all items in one PairRM call and replace each item's candidates by its best ``top_k``."""
        prompts = [it["prompt"] for it in items]
        cands = [it["candidates"] for it in items]
        instructions = [it["instruction"] or "" for it in items] if any(it["instruction"] for it in items) else None
        top, rankings = fusion.rank_top_k(self.ranker, prompts, cands, instructions, top_k=self._top_k)
        out = []
        for item, best, ranking in zip(items, top, rankings):
            item["candidates"] = best
            out.append(
                [{"index": r.index, "candidate": r.text, "score": r.score, "rank": r.rank} for r in ranking.ranked()]
            )
        return out
