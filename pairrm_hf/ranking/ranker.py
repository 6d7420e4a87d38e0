"""`PairRM`: the ranking API. Every method is a schedule of ordered pairs handed to the one engine.

>>> rm = PairRM.from_pretrained("llm-blender/PairRM-hf")           # doctest: +SKIP
>>> rm.rank("What is the capital of France?", ["Paris.", "Berlin."])  # doctest: +SKIP
[RankedCandidate(index=0, text='Paris.', score=0.41, rank=1), RankedCandidate(index=1, ...)]
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..checkpoints.loading import DEFAULT_MODEL, load_pairrm
from ..models.modeling_pairrm import DebertaV2PairRM
from ..tokenization.tokenization_pairrm import PairLengths, encoder_for_style
from ..utils.checks import check_list, check_positive_number, check_same_length, check_top_k
from ..utils.devices import resolve_dtype
from .aggregation import topk_indices
from .engine import EngineOptions, PairwiseEngine
from .inputs import batch_texts, compare_texts, conversation_pair_texts, is_messages
from .methods import RANKING_METHODS, RankingBatch, full_matrices, get_ranking_method, own_scores
from .openvino_backend import (
    bf16_may_run_on_openvino,
    engine_device,
    record_checkpoint_identity,
    requested_backend,
)
from .openvino_quantization import checked_calibration
from .rewards import win_probability
from .schedules import bubble_pass, bubble_wins

__all__ = [
    "PairRM",
    "RankedCandidate",
    "Ranking",
    "COMPARE_MODES",
    "REF_MODES",
    "shared_pairrm",
    "device_for_rank",
    "rank_one",
]

#: A prompt: a str, chat messages, or None when the answers are whole conversations (see :mod:`pairrm_hf.ranking.inputs`).
Prompt = Any
#: An answer: a str, or chat messages (assistant turns, or a whole conversation).
Answer = Any

#: ``symmetric`` = C[A,B] − C[B,A] (upstream default), ``ab`` = C[A,B], ``ba`` = −C[B,A]; > 0 always means A better.
COMPARE_MODES = ("symmetric", "ab", "ba")
#: How ``rank_with_ref`` picks each input's reference among its candidates (``len`` counts characters of the
#: PairRM candidate texts). ``longest``, ``shortest`` and ``median_length`` are upstream's rules, kept for parity,
#: and they depend on input order when candidates tie in length: ``longest``/``shortest`` take the first of the
#: tied candidates, ``median_length`` takes position ``n // 2`` of a stable sort by length (the upper median for
#: even n), so tied candidates keep their input order. Shuffling the candidates can then change the reference
#: and the rewards. The ``_lexical`` modes pick the same length but break ties by the text itself (code-point
#: order: the smallest text among the longest; ``(length, text)`` order for the median), so they give the same
#: reference, and the same rewards, in any input order. ``first``/``last`` are positional by definition.
REF_MODES = ("longest", "longest_lexical", "shortest", "median_length", "median_length_lexical", "first", "last")
#: ``from_pretrained`` keywords of transformers that a ``PairRM`` maps onto its own (one device, one dtype).
_TRANSFORMERS_ALIASES = ("torch_dtype", "device_map")


@dataclass(frozen=True)
class RankedCandidate:
    """One candidate in a ranking: its position in the input, the candidate as given (``text``: a str, or the
    caller's chat messages), score (higher is better) and rank (1 = best)."""

    index: int
    text: Answer
    score: float
    rank: int

    @property
    def candidate(self) -> Answer:
        """The candidate as given: the name the ``pairwise-ranking`` pipeline and ``pairrm rank --json`` use."""
        return self.text

    def as_dict(self) -> dict[str, Any]:
        """``{"index", "candidate", "score", "rank"}``: the keys of a ``pairwise-ranking`` pipeline result."""
        return {"index": self.index, "candidate": self.text, "score": self.score, "rank": self.rank}


@dataclass
class Ranking:
    """The ranking of one input's candidates, in input order.

    Attributes:
        scores: float32 ``[n]``, higher is better.
        ranks: int32 ``[n]``, competition ranks, 1 = best.
        matrix: float32 ``[n, n]`` logits ``C[i, j]`` when the aggregation compared every ordered pair, else None.
        comparisons: the model cost for this input: ordered pairs scored (pairwise models), or rows run for a
            pointwise model (n) and encodings for a dual encoder (1 + n) when they rank by their own scores.
        candidates: the candidates as given (str, or the caller's chat messages).
    """

    scores: np.ndarray
    ranks: np.ndarray
    matrix: np.ndarray | None = None
    comparisons: int = 0
    candidates: list[Answer] = field(default_factory=list)

    def ranked(self) -> list[RankedCandidate]:
        """Candidates best first (ties in input order)."""
        return [
            RankedCandidate(int(i), self.candidates[i], float(self.scores[i]), int(self.ranks[i]))
            for i in topk_indices(self.ranks)
        ]


class PairRM:
    """Rank, compare and score LLM answers with a PairRM checkpoint or another LLM-Blender ranker.

    Besides :class:`DebertaV2PairRM` the model may be a :class:`~pairrm_hf.PairRanker` (pairwise, any encoder), a
    :class:`~pairrm_hf.SummaReranker` (pointwise) or a :class:`~pairrm_hf.DualReranker` (dual encoder). The last two
    score each candidate on its own (``ranking_style`` ``"pointwise"``/``"dual"``): ``rank``/``rank_batch`` with
    ``max_logits`` or ``max_wins`` and ``best_of_n(method="full")`` rank by those scores (n rows per input, or 1 + n
    encodings), and every pairwise operation uses the engine's definition ``C[i, j] = s_i − s_j`` (each distinct
    candidate scored once): ``compare`` gives ``s_A − s_B`` (``ab``/``ba``) or ``2·(s_A − s_B)`` (``symmetric``),
    ``comparison_matrices`` and ``Ranking.matrix`` hold those differences, and ``bubble``, ``sort`` and
    ``rank_with_ref`` run their schedules on them.

    Every method takes prompts as str or chat messages and answers as str or chat messages, turned into PairRM
    texts by the one input rule (:mod:`pairrm_hf.ranking.inputs`): plain strings stay plain, message lists use the
    original's conversation template; ``input_format="conversation"`` formats plain strings through the template too.

    Args:
        model: a loaded :class:`DebertaV2PairRM` (or one of the rankers above).
        tokenizer: its PairRM tokenizer (normalizer restored, see ``load_pairrm_tokenizer``).
        lengths: token budgets of a packed row (default 1224/412).
        device: ``None`` → CUDA when available, else CPU.
        dtype: weights dtype (``"float32"``, ``"bfloat16"``, ``"float16"``); ``None`` keeps the loaded one. On the CPU,
            ``"bfloat16"`` runs OpenVINO where ``backend="auto"`` picks it: fp32 weights, bf16 compute where the CPU
            has it (see :mod:`pairrm_hf.ranking.openvino_backend`); torch's bf16 weights otherwise.
        batch_size: rows (ordered pairs) per forward pass; results do not depend on it.
        max_batch_tokens: cap on padded tokens (rows × longest row) per forward pass; ``"auto"`` (default) is 2048 on
            CPU (bounds the memory of long rows: 8 × 2048 tokens run as eight passes) and no limit on CUDA; ``None``:
            no limit. Results do not depend on it.
        show_progress: tqdm bar over the pairs of each call.
        compile: run the model through ``torch.compile(dynamic=True)`` (one-off warm-up; see ``PairwiseEngine``).
        attention: ``"fused"`` (the model's default: faster attention, same numbers to ~1e-6), ``"eager"``
            (transformers' own module) or ``"flex"`` (PyTorch FlexAttention, compiled per padded length; falls back
            to fused where it cannot run); see :mod:`pairrm_hf.models.attention`.
        quantize: ``"int8"``: dynamically quantized int8 linear layers on CPU (opt-in; faster, logits move by
            ~1e-2, so check decisions with :meth:`check_precision`); see :mod:`pairrm_hf.ranking.quantization`.
            With ``backend="openvino"`` the OpenVINO model's weights are compressed to int8 instead.
        backend: ``"auto"``, ``"torch"`` or ``"openvino"``; ``None`` (default) reads ``$PAIRRM_BACKEND``, else
            ``"auto"``. ``"openvino"`` runs the backbone as an OpenVINO model on CPU (extra ``[openvino]``),
            converted once and cached; see :mod:`pairrm_hf.ranking.openvino_backend`. ``"auto"`` picks OpenVINO
            when it is installed and applies (CPU, a fp32 :class:`DebertaV2PairRM`, no ``compile``, autocast or
            eager attention) and torch otherwise; :attr:`backend` says which runs. ``backend="torch"`` keeps the
            torch path.
        calibration: with ``quantize="int8"`` on OpenVINO: static int8 (weights and activations) calibrated on these
            rows instead of weight-only int8: a JSONL file of ``{"prompt", "candidates"}`` rows, a list of such
            dicts, or a :class:`~pairrm_hf.ranking.openvino_quantization.Calibration`; see
            :mod:`pairrm_hf.ranking.openvino_quantization`. A ``ValueError`` with ``backend="torch"`` or without
            ``quantize="int8"``.
        calibration_size: ordered pairs of the calibration rows to calibrate on (default 256, spread evenly).
        packing: run each batch's pairs packed end to end in one sequence, no padding, each attending only to itself
            (same logits to float rounding; see :mod:`pairrm_hf.models.packing`); meant for GPUs with
            ``attention="flex"``. Runs on the torch backend; pairwise PairRM models only.
    """

    def __init__(
        self,
        model: DebertaV2PairRM,
        tokenizer,
        *,
        lengths: PairLengths | None = None,
        device: str | int | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 16,
        max_batch_tokens: int | str | None = "auto",
        autocast_dtype: str | torch.dtype | None = None,
        show_progress: bool = False,
        compile: bool = False,  # noqa: A002
        attention: str | None = None,
        quantize: str | None = None,
        backend: str | None = None,
        calibration=None,
        calibration_size: int | None = None,
        packing: bool = False,
    ):
        style = getattr(model, "ranking_style", "pairwise")
        if hasattr(model, "check_row_budget"):
            budget = lengths or PairLengths()
            model.check_row_budget(budget.source_max_length, budget.candidate_max_length)
        self.engine = PairwiseEngine(
            model,
            encoder_for_style(style, tokenizer, lengths),
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            autocast_dtype=autocast_dtype,
            show_progress=show_progress,
            compile=compile,
            attention=attention,
            quantize=quantize,
            backend=backend,
            calibration=calibration,
            calibration_size=calibration_size,
            packing=packing,
        )

    @classmethod
    def from_engine(cls, engine: PairwiseEngine) -> PairRM:
        """A :class:`PairRM` that runs on ``engine`` (nothing is loaded or copied; the engine is shared as it is)."""
        rm = cls.__new__(cls)
        rm.engine = engine
        return rm

    @property
    def options(self) -> EngineOptions:
        """The engine's :class:`~pairrm_hf.ranking.engine.EngineOptions` (batch size, token budget, progress…)."""
        return self.engine.options

    def with_options(self, **changes) -> PairRM:
        """A cheap view with some :class:`~pairrm_hf.ranking.engine.EngineOptions` changed, e.g.
        ``rm.with_options(batch_size=64, progress_callback=bar.update)``.

        The view shares the model, tokenizer and encoder (no copy); this instance keeps its options, so a
        process-wide instance (:func:`shared_pairrm`) can serve callers that each want their own.
        """
        return type(self).from_engine(self.engine.with_options(**changes))

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_MODEL,
        *,
        device: str | int | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        source_max_length: int | None = None,
        candidate_max_length: int | None = None,
        backbone_config: Any = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | None = None,
        **engine_kwargs,
    ) -> PairRM:
        """Load any published PairRM layout (local folder or Hub id); see :func:`pairrm_hf.load_pairrm`.

        ``source_max_length``/``candidate_max_length`` override the checkpoint's row budgets. ``engine_kwargs`` are
        the other options of :class:`PairRM` (``batch_size``, ``max_batch_tokens``, ``compile``, ...).
        transformers' names are understood too: ``torch_dtype`` is ``dtype``; ``device_map`` may name one device
        (``"cpu"``, ``"cuda:0"``, ``0``, ``{"": "cuda:0"}``) or be ``"auto"`` (= ``device=None``); a map that
        splits the model over devices is a ``ValueError`` (PairRM runs on one device).

        ``backend`` defaults to ``"auto"`` (or ``$PAIRRM_BACKEND``): with ``pairrm-hf[openvino]`` installed, a fp32
        PairRM on the CPU runs its backbone on OpenVINO (converted on the first load, a WARNING says where it is
        cached; later processes read it back); ``backend="torch"`` keeps the torch path. ``rm.backend`` says which.
        """
        dtype, device = _transformers_aliases(engine_kwargs, dtype, device)
        allowed = [
            n
            for n in inspect.signature(cls.__init__).parameters
            if n not in ("self", "model", "tokenizer", "lengths", "device", "dtype")
        ]
        unknown = sorted(set(engine_kwargs) - set(allowed))
        if unknown:
            raise TypeError(
                f"PairRM.from_pretrained() got unexpected keyword argument(s) {unknown}; besides device, dtype, "
                f"source_max_length, candidate_max_length, backbone_config, revision, token and cache_dir it takes "
                f"{allowed}"
            )
        if engine_kwargs.get("calibration") is not None:
            # a bad calibration file or option fails here, before the checkpoint is loaded
            engine_kwargs["calibration"] = checked_calibration(
                engine_kwargs["calibration"],
                engine_kwargs.pop("calibration_size", None),
                quantize=engine_kwargs.get("quantize"),
                backend=engine_kwargs.get("backend"),
            )
        load_dtype = dtype
        if resolve_dtype(dtype) == torch.bfloat16:
            # bf16 that may run on OpenVINO loads fp32: OpenVINO computes in bf16 from fp32 weights (the engine
            # casts the torch model itself if torch runs it)
            backend = requested_backend(engine_kwargs.get("backend"))
            target = engine_device(device, quantize=engine_kwargs.get("quantize"), backend=backend)
            load_dtype = torch.float32 if bf16_may_run_on_openvino(dtype, target, backend) else dtype
        loaded = load_pairrm(
            name_or_path,
            dtype=load_dtype,
            backbone_config=backbone_config,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
        )
        backbone = getattr(loaded.model, "pretrained_model", None)
        if backbone is not None:
            # lets an OpenVINO cache key name the checkpoint files instead of reading every weight
            record_checkpoint_identity(backbone, loaded.folder)
        lengths = PairLengths(
            source_max_length or loaded.lengths.source_max_length,
            candidate_max_length or loaded.lengths.candidate_max_length,
        )
        return cls(loaded.model, loaded.tokenizer, lengths=lengths, device=device, dtype=dtype, **engine_kwargs)

    def __repr__(self) -> str:
        model = self.engine.model  # not self.model: a repr must not read released weights back
        name = getattr(model.config, "_name_or_path", "") or "<in memory>"
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        lengths = self.lengths
        converted = self.engine.openvino_backbone
        if converted is not None:  # the torch weights stay fp32; OpenVINO's own precision is what runs
            dtype = f"{converted.precision} weights computing in {converted.inference_precision} on openvino"
        return (
            f"PairRM({name!r}, model={type(model).__name__}, style={self.ranking_style}, device={self.device}, "
            f"dtype={dtype}, lengths={lengths.source_max_length}/{lengths.candidate_max_length}, "
            f"batch_size={self.engine.batch_size})"
        )

    # ------------------------------------------------------------------------------------------ properties
    @property
    def model(self) -> DebertaV2PairRM:
        """The underlying :class:`DebertaV2PairRM`, with all its weights.

        With ``backend="openvino"`` the torch backbone's weights are released once OpenVINO holds its copy; reading
        this property reads them back from the cache entry (once), so the model can be saved, trained or run.
        """
        if self.engine.openvino_backbone is not None:
            self.engine.openvino_backbone.restore_torch_weights()
        return self.engine.model

    @property
    def backend(self) -> str:
        """The backend that runs the model: ``"torch"`` or ``"openvino"`` (what ``backend="auto"`` resolved to)."""
        return self.engine.backend

    @property
    def ranking_style(self) -> str:
        """``"pairwise"`` (PairRM, PairRanker), ``"pointwise"`` (SummaReranker) or ``"dual"`` (DualReranker)."""
        return self.engine.ranking_style

    def candidate_scores(
        self,
        prompts: Sequence[Prompt] | None,
        candidates: Sequence[Sequence[Any]],
        *,
        instructions: Sequence[str] | None = None,
        input_format: str = "auto",
    ) -> list[np.ndarray]:
        """Per input, the float32 ``[n]`` scores of a pointwise or dual model (higher is better).

        A pointwise model costs one row per distinct candidate, a dual encoder 1 + n encodings; a pairwise model has
        no per-candidate score and raises ``ValueError`` (use ``rank_batch``). Inputs follow the one input rule.
        """
        if self.ranking_style == "pairwise":
            raise ValueError("candidate_scores needs a pointwise or dual model; rank a pairwise model with rank_batch")
        sources, texts = batch_texts(prompts, candidates, instructions=instructions, input_format=input_format)
        return self._point_scores(self.engine.encode(sources, texts), texts)

    def _point_scores(self, examples, candidates: list[list[str]]) -> list[np.ndarray]:
        return own_scores(self.engine, examples, [len(c) for c in candidates])

    @property
    def tokenizer(self):
        """The PairRM tokenizer."""
        return self.engine.encoder.tokenizer

    @property
    def lengths(self) -> PairLengths:
        """Token budgets of a packed row."""
        return self.engine.encoder.lengths

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self.engine.device

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | bool | None = None,
        model_card: Any = None,
    ) -> str:
        """Upload the model, tokenizer, row budgets and a model card to the Hub repo ``repo_id`` (created if
        missing), in the layout :meth:`from_pretrained` loads; returns the commit URL.

        ``model_card``: a :class:`~pairrm_hf.checkpoints.model_card.ModelCardInfo` (datasets, license, base model).
        """
        import tempfile

        from ..checkpoints.hub import push_folder
        from ..checkpoints.loading import save_pairrm
        from ..checkpoints.model_card import ModelCardInfo

        info = (model_card or ModelCardInfo()).with_defaults(repo_id=repo_id)
        with tempfile.TemporaryDirectory(prefix="pairrm_push_") as folder:
            save_pairrm(self.model, self.tokenizer, folder, self.lengths, model_card=info)
            return push_folder(folder, repo_id, private=private, token=token)

    # ------------------------------------------------------------------------------------------ comparing
    def compare(
        self,
        prompts: Sequence[Prompt] | None,
        candidates_a: Sequence[Answer],
        candidates_b: Sequence[Answer],
        *,
        mode: str = "symmetric",
        instructions: Sequence[str] | None = None,
        input_format: str = "auto",
    ) -> np.ndarray:
        """float32 ``[N]`` logits, > 0 when ``candidates_a[k]`` is the better answer to ``prompts[k]``.

        ``mode``: ``symmetric`` = C[A,B] − C[B,A] (two passes, position bias cancels; identical texts give
        exactly 0), ``ab`` = C[A,B], ``ba`` = −C[B,A] (one pass each). ``prompts=None``: each pair is two whole
        conversations sharing their user turns. For a pointwise or dual model
        ``C[A, B] = s_A − s_B``, so ``ab``/``ba`` give ``s_A − s_B`` and ``symmetric`` ``2·(s_A − s_B)``, from one
        score per candidate.
        """
        if mode not in COMPARE_MODES:
            raise ValueError(f"mode must be one of {COMPARE_MODES}, got {mode!r}")
        sources, texts_a, texts_b = compare_texts(
            prompts, candidates_a, candidates_b, instructions=instructions, input_format=input_format
        )
        return self._compare_texts(sources, texts_a, texts_b, mode)

    def _compare_texts(self, sources: list[str], texts_a: list[str], texts_b: list[str], mode: str) -> np.ndarray:
        examples = self.engine.encode(sources, [[a, b] for a, b in zip(texts_a, texts_b)])
        idx = np.arange(len(sources))
        ab = np.stack([idx, np.zeros_like(idx), np.ones_like(idx)], axis=1)
        ba = ab[:, [0, 2, 1]]
        if mode == "ab":
            return self.engine.pair_logits(examples, ab)
        if mode == "ba":
            return -self.engine.pair_logits(examples, ba)
        logits = self.engine.pair_logits(examples, np.concatenate([ab, ba]))
        return logits[: len(idx)] - logits[len(idx) :]

    def compare_proba(
        self,
        prompts: Sequence[Prompt] | None,
        candidates_a: Sequence[Answer],
        candidates_b: Sequence[Answer],
        *,
        temperature: float = 1.0,
        mode: str = "symmetric",
        instructions: Sequence[str] | None = None,
        input_format: str = "auto",
    ) -> np.ndarray:
        """float32 ``[N]`` probability that A is better: ``sigmoid(logit / temperature)``."""
        check_positive_number("temperature", temperature)
        logits = self.compare(
            prompts, candidates_a, candidates_b, mode=mode, instructions=instructions, input_format=input_format
        )
        return win_probability(logits, temperature).astype(np.float32)

    def compare_conversations(
        self,
        conversations_a: Sequence[Sequence[Mapping]],
        conversations_b: Sequence[Sequence[Mapping]],
        *,
        mode: str = "symmetric",
    ) -> np.ndarray:
        """Compare multi-turn conversations that share their user turns (upstream's template, see ``conversation``)."""
        if mode not in COMPARE_MODES:
            raise ValueError(f"mode must be one of {COMPARE_MODES}, got {mode!r}")
        return self._compare_texts(*conversation_pair_texts(conversations_a, conversations_b), mode)

    # ------------------------------------------------------------------------------------------ ranking
    def comparison_matrices(
        self,
        prompts: Sequence[Prompt],
        candidates: Sequence[Sequence[Answer]],
        *,
        instructions: Sequence[str] | None = None,
        input_format: str = "auto",
    ) -> list[np.ndarray]:
        """For each input, the float32 ``[n, n]`` matrix ``C[i, j]`` over all ordered pairs (diagonal 0)."""
        sources, texts = batch_texts(prompts, candidates, instructions=instructions, input_format=input_format)
        return self._full_matrices(self.engine.encode(sources, texts), texts)

    def _full_matrices(self, examples, candidates: list[list]) -> list[np.ndarray]:
        return full_matrices(self.engine, examples, [len(c) for c in candidates])

    def rank_batch(
        self,
        prompts: Sequence[Prompt],
        candidates: Sequence[Sequence[Answer]],
        *,
        aggregation: str = "max_logits",
        instructions: Sequence[str] | None = None,
        seed: int = 0,
        input_format: str = "auto",
    ) -> list[Ranking]:
        """Rank each input's candidates; candidate counts may differ between inputs.

        ``aggregation``: any method of :data:`~pairrm_hf.ranking.methods.RANKING_METHODS` (the registry; add your own
        with :func:`~pairrm_hf.ranking.methods.register_ranking_method`). Built in: ``max_logits`` (upstream
        ``rank``; all n(n−1) ordered pairs, score = mean symmetric logit), ``max_wins`` (same pairs, score = fraction
        of comparisons won), ``bubble`` (2(n−1) pairs, one seeded bubble pass; the winner ranks first, the others by
        how many comparisons they won), ``reference`` (2n pairs, score = :meth:`rank_with_ref` reward against the
        longest candidate), ``sort`` (at most ``merge_sort_budget(n)`` pairs, merge sort on symmetric logits; score
        = n − position) or ``knockout`` (60 pairs for n = 16, 282 for n = 64: single elimination down to n/8
        finalists (at least 4), then a round robin among them and the closest losers of the last round,
        :func:`~pairrm_hf.ranking.schedules.knockout_rank`; score = n − position, the winner is exact when the
        model's preferences are transitive). See ``benchmarks/RESULTS.md`` for their agreement with ``max_logits``.
        """
        method = get_ranking_method(aggregation)
        sources, texts = batch_texts(prompts, candidates, instructions=instructions, input_format=input_format)
        candidates = [list(c) for c in candidates]  # the caller's candidates, returned in the rankings
        batch = RankingBatch(self.engine, self.engine.encode(sources, texts), texts, seed)
        results = method.run(batch)
        if len(results) != len(candidates):
            raise RuntimeError(
                f"ranking method {aggregation!r} returned {len(results)} results for {len(candidates)} inputs"
            )
        return [Ranking(r.scores, r.ranks, r.matrix, int(r.comparisons), c) for r, c in zip(results, candidates)]

    def rank(
        self,
        prompt: Prompt,
        candidates: Sequence[Answer],
        *,
        aggregation: str = "max_logits",
        top_k: int | None = None,
        instruction: str | None = None,
        input_format: str = "auto",
    ) -> list[RankedCandidate]:
        """Rank the candidates for one prompt, best first; ``top_k`` keeps only the best k.

        ``prompt`` is a str or chat messages (``None`` when the candidates are whole conversations).
        ``top_k``: ``None`` or a positive int (not a bool) up to the number of candidates; more is a ``ValueError``
        (the same rule as the pipelines and fusion, see :func:`~pairrm_hf.utils.checks.check_top_k`).
        """
        return rank_one(
            self,
            prompt,
            candidates,
            aggregation=aggregation,
            top_k=top_k,
            instruction=instruction,
            input_format=input_format,
        )

    def check_precision(
        self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], *, instructions: Sequence[str] | None = None
    ):
        """Run the full ranking of these inputs with the current settings and in fp32 eager; report the differences.

        Returns a :class:`~pairrm_hf.ranking.precision.PrecisionReport` (max |Δ logit|, symmetric sign flips, rank and
        top-1 changes). Use it on a sample of your own data before turning on bf16/fp16 or ``compile``.
        """
        from .precision import check_precision

        return check_precision(self, prompts, candidates, instructions=instructions)

    def _select(self, prompts, candidates, instructions, method, return_all, seed, worst, input_format):
        if method != "full" and method not in RANKING_METHODS:
            raise ValueError(f"method must be 'full' or one of {tuple(RANKING_METHODS)}, got {method!r}")
        if method == "bubble":
            return self._bubble_select(prompts, candidates, instructions, return_all, seed, worst, input_format)
        rankings = self.rank_batch(
            prompts,
            candidates,
            aggregation="max_logits" if method == "full" else method,
            instructions=instructions,
            seed=seed,
            input_format=input_format,
        )
        out = []
        for r in rankings:
            order = topk_indices(-r.ranks if worst else r.ranks)
            out.append([r.candidates[i] for i in order] if return_all else r.candidates[order[0]])
        return out

    def _bubble_select(self, prompts, candidates, instructions, return_all, seed, worst, input_format):
        """Upstream's best/worst of n: the candidate one bubble pass carries to the end. Not the ``bubble`` ranking's
        first: that ranks by comparisons won, and a candidate knocked out late may have won more than the winner."""
        sources, texts = batch_texts(prompts, candidates, instructions=instructions, input_format=input_format)
        candidates = [list(c) for c in candidates]
        examples = self.engine.encode(sources, texts)
        winners, logs = bubble_pass(self.engine, examples, [len(c) for c in candidates], seed, worst=worst)
        if not return_all:
            return [c[w] for c, w in zip(candidates, winners)]
        # Upstream listed the comparison losers in an order that is no ranking; ours sorts by wins in the pass.
        out = []
        for c, w, log in zip(candidates, winners, logs):
            wins = bubble_wins(len(c), log)
            wins[w] = np.inf
            out.append([c[i] for i in np.argsort(-wins, kind="stable")])
        return out

    def best_of_n(
        self,
        prompts: Sequence[Prompt],
        candidates: Sequence[Sequence[Answer]],
        *,
        method: str = "full",
        return_all: bool = False,
        instructions: Sequence[str] | None = None,
        seed: int = 0,
        input_format: str = "auto",
    ) -> list:
        """The best candidate per input: ``full`` ranking (n(n−1) pairs), one seeded ``bubble`` pass (2(n−1)), or
        any other ranking method of :data:`~pairrm_hf.ranking.methods.RANKING_METHODS` (its first-ranked candidate).

        ``return_all``: all candidates best first (for ``bubble``: the pass's winner, then the others by comparisons
        won in the pass).
        """
        return self._select(prompts, candidates, instructions, method, return_all, seed, False, input_format)

    def worst_of_n(
        self,
        prompts: Sequence[Prompt],
        candidates: Sequence[Sequence[Answer]],
        *,
        method: str = "full",
        return_all: bool = False,
        instructions: Sequence[str] | None = None,
        seed: int = 0,
        input_format: str = "auto",
    ) -> list:
        """The worst candidate per input; the mirror of :meth:`best_of_n` (``bubble`` runs one pass that carries the
        worst along; other methods give their last-ranked candidate)."""
        return self._select(prompts, candidates, instructions, method, return_all, seed, True, input_format)

    # ------------------------------------------------------------------------------------------ references
    def rank_with_ref(
        self,
        prompts: Sequence[Prompt],
        candidates: Sequence[Sequence[Answer]],
        *,
        ref_mode: str = "longest",
        references: Sequence[Answer] | None = None,
        instructions: Sequence[str] | None = None,
        input_format: str = "auto",
    ) -> list[np.ndarray]:
        """Per input, float64 rewards ``C[c, ref] − C[ref, c]`` for each candidate (2n pairs, exactly 0 for the reference).

        The reference is ``references[k]`` when given (rendered like an answer to the same prompt), else picked
        from the candidates by ``ref_mode`` (one of :data:`REF_MODES`; lengths are of the PairRM candidate texts).
        ``longest`` (the default), ``shortest`` and ``median_length`` are upstream's rules and break length ties by
        input order (see :data:`REF_MODES`); ``longest_lexical`` and ``median_length_lexical`` break them by text, so
        the rewards do not depend on the candidates' order.
        """
        if references is None and ref_mode not in REF_MODES:
            raise ValueError(f"ref_mode must be one of {REF_MODES}, got {ref_mode!r}")
        sources, texts = batch_texts(prompts, candidates, instructions=instructions, input_format=input_format)
        if references is None:
            ref_texts = [_pick_reference(t, ref_mode) for t in texts]
        else:
            check_list("references", references)
            check_same_length("prompts", sources, references=references)
            ref_sources, ref_lists = batch_texts(
                prompts,
                [[r] for r in references],
                instructions=instructions,
                input_format=input_format,
                candidates_name="references",
            )
            for k, (src, ref_src) in enumerate(zip(sources, ref_sources)):
                if src != ref_src:
                    raise ValueError(f"references[{k}] must have the same user turns as candidates[{k}]")
            ref_texts = [r[0] for r in ref_lists]
        return self._rewards_vs_ref(sources, texts, ref_texts)

    def _rewards_vs_ref(self, sources: list[str], texts: list[list[str]], references: list[str]) -> list[np.ndarray]:
        candidates = texts
        extended = [[*c, ref] for c, ref in zip(candidates, references)]
        examples = self.engine.encode(sources, extended)
        pairs = []
        for ex, cands in enumerate(candidates):
            r = len(cands)
            pairs += [p for i in range(r) for p in ((ex, i, r), (ex, r, i))]
        logits = self.engine.pair_logits(examples, pairs).reshape(-1, 2).astype(np.float64)
        rewards, start = [], 0
        for cands in candidates:
            block = logits[start : start + len(cands)]
            rewards.append(block[:, 0] - block[:, 1])
            start += len(cands)
        return rewards


def _transformers_aliases(kwargs: dict, dtype: Any, device: Any) -> tuple[Any, Any]:
    """``(dtype, device)`` after taking transformers' ``torch_dtype``/``device_map`` out of ``kwargs``."""
    if "torch_dtype" in kwargs:
        torch_dtype = kwargs.pop("torch_dtype")
        if dtype is not None and torch_dtype is not None and torch_dtype != dtype:
            raise ValueError(f"pass dtype= or torch_dtype= (its older name), not both: {dtype!r} vs {torch_dtype!r}")
        dtype = torch_dtype if dtype is None else dtype
    if dtype == "auto":
        dtype = None  # transformers' "as stored"; PairRM keeps the loaded dtype when none is given
    if "device_map" not in kwargs:
        return dtype, device
    device_map = kwargs.pop("device_map")
    if isinstance(device_map, Mapping):
        targets = {str(v) for v in device_map.values()}
        if len(targets) != 1:
            raise ValueError(
                f"device_map {device_map!r} splits the model over devices; PairRM runs on one device: "
                "pass device= ('cpu', 'cuda', 'cuda:1', ...)"
            )
        device_map = next(iter(device_map.values()))
    elif device_map == "auto":
        device_map = None  # CUDA when available, else CPU: PairRM's own default
    elif isinstance(device_map, str) and device_map in ("balanced", "balanced_low_0", "sequential"):
        raise ValueError(f"device_map={device_map!r} splits the model over devices; PairRM runs on one: pass device=")
    if device_map is not None and device is not None and str(device_map) != str(device):
        raise ValueError(f"pass device= or device_map=, not both: {device!r} vs {device_map!r}")
    return dtype, device if device is not None else device_map


def _pick_reference(candidates: list[str], mode: str) -> str:
    if mode == "longest":
        return max(candidates, key=len)
    if mode == "longest_lexical":
        longest = max(map(len, candidates))
        return min(c for c in candidates if len(c) == longest)
    if mode == "shortest":
        return min(candidates, key=len)
    if mode == "median_length":
        return sorted(candidates, key=len)[len(candidates) // 2]
    if mode == "median_length_lexical":
        return sorted(candidates, key=lambda c: (len(c), c))[len(candidates) // 2]
    return candidates[0] if mode == "first" else candidates[-1]


_SHARED: dict[tuple, PairRM] = {}


def device_for_rank(device: str | None, rank: int | None) -> str:
    """``device`` when given, else ``cuda:<rank % GPUs>`` (the process's GPU in a multi-process job), else ``"cpu"``."""
    if device is not None:
        return device
    if torch.cuda.is_available():
        return f"cuda:{(rank or 0) % torch.cuda.device_count()}"
    return "cpu"


def shared_pairrm(
    model: str | os.PathLike,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 16,
    backbone_config: str | None = None,
    backend: str | None = None,
    attention: str | None = None,
    *,
    quantize: str | None = None,
    calibration=None,
    calibration_size: int | None = None,
    packing: bool = False,
) -> PairRM:
    """A :class:`PairRM` loaded once per process for these settings and reused by every later call (jobs, ``datasets.map``
    workers, Ray actors, ``label_preferences``). Its options never change: a caller who wants others (a batch size, a
    progress callback) takes a view with :meth:`PairRM.with_options`.

    ``quantize``, ``calibration`` and ``calibration_size`` are :meth:`PairRM.from_pretrained`'s. They are part of the
    key, the calibration by its content (:attr:`~pairrm_hf.ranking.openvino_quantization.Calibration.fingerprint`,
    read and checked here, before anything is loaded): callers asking for other numbers never share a model."""
    calibration = checked_calibration(calibration, calibration_size, quantize=quantize, backend=backend)
    key = (
        os.path.abspath(model) if os.path.isdir(model) else os.fspath(model),
        device,
        dtype,
        batch_size,
        backbone_config,
        backend,
        attention,
        quantize,
        None if calibration is None else calibration.fingerprint,
        bool(packing),
    )
    if key not in _SHARED:
        _SHARED[key] = PairRM.from_pretrained(
            model,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            backbone_config=backbone_config,
            backend=backend,
            attention=attention,
            quantize=quantize,
            calibration=calibration,
            packing=bool(packing),
        )
    return _SHARED[key]


def rank_one(
    ranker: Any,
    prompt: Any,
    candidates: Sequence[Any],
    *,
    aggregation: str = "max_logits",
    top_k: int | None = None,
    instruction: str | None = None,
    input_format: str = "auto",
) -> list[RankedCandidate]:
    """:meth:`PairRM.rank` for anything with PairRM's ``rank_batch`` (the local model or the server's client).

    Checks the prompt and ``top_k`` before any compute: one prompt (a str or a message list; a list of prompts points
    to ``rank_batch``), ``top_k`` a positive int no larger than the number of candidates.
    """
    if prompt is not None and not isinstance(prompt, str) and not is_messages(prompt):
        several = isinstance(prompt, Sequence) and all(isinstance(p, str) or is_messages(p) for p in prompt)
        hint = (
            "; for several prompts use rank_batch(prompts, candidate_lists), one list of candidates per prompt"
            if several and prompt
            else ""
        )
        raise TypeError(
            f"prompt must be a str or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}{hint}"
        )
    check_top_k(top_k)
    if isinstance(candidates, Sequence) and not isinstance(candidates, str):
        check_top_k(top_k, len(candidates))
    ranking = ranker.rank_batch(
        [prompt],
        [candidates],
        aggregation=aggregation,
        instructions=None if instruction is None else [instruction],
        input_format=input_format,
    )[0]
    ranked = ranking.ranked()
    return ranked if top_k is None else ranked[:top_k]
