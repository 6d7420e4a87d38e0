"""The one forward loop of pairrm-hf: encoded texts → pair schedule → length-bucketed batches → logits.

Every public operation (ranking, comparison, references, bubble, pipelines, TRL adapters, CLI) asks this engine
for the logits of a set of ordered pairs ``(input, i, j)``; ``C[input][i, j]`` is the logit with candidate ``i``
in slot 1 and ``j`` in slot 2. The engine

* tokenizes every distinct text once and reuses it in every pair that contains it,
* sorts the pairs of a call by row length and cuts batches by row count and a token budget, padding each batch
  only to its own longest row (never to 2048),
* runs under ``torch.inference_mode`` and returns logits in the order the pairs were asked for, so results do
  not depend on batch size or input order.

Non-finite logits (NaN/inf, e.g. fp16 overflow) never leave the engine. The one policy, inherited by every
surface: the affected pairs are computed again in fp32 eager mode (a warning says how many); if a logit is still
not finite, :class:`NonFiniteLogitsError` names the input, the candidates and the start of their texts.

Pointwise and dual-encoder rankers (``model.ranking_style``, see :mod:`pairrm_hf.models.modeling_encoder_ranker`) go
through :meth:`PairwiseEngine.point_scores`: one score per distinct (source, candidate), from n rows per input
(pointwise) or 1 + n encodings (dual: each distinct source and candidate text embedded once), with the same
tokenize-once, dedup and length bucketing. For them a pair's logit is defined as the score difference
``C[i, j] = s_i − s_j``, so every pairwise schedule still runs, at the cost of the distinct candidates it touches.

A plain transformers sequence classifier that reads ``(prompt, response)`` as a text pair (a student distilled from
PairRM, :mod:`pairrm_hf.training.distillation`) runs with a :class:`~pairrm_hf.tokenization.text_pair.TextPairEncoder`
(``ranking_style`` ``"text_pair"``) through :meth:`PairwiseEngine.text_pair_scores`: its tokenizer's own rows, the
same dedup, length bucketing and non-finite policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..models.attention import default_attention
from ..models.flex_attention import flex_stats
from ..models.modeling_pairrm import DebertaV2PairRM
from ..models.packing import check_packable, pack_rows
from ..tokenization.padding import pad_rows
from ..tokenization.text_pair import TextPairEncoder
from ..tokenization.tokenization_pairrm import DualEncoder, PairEncoder, PointEncoder
from ..utils.checks import check_positive_int, check_same_length
from ..utils.devices import resolve_dtype
from .openvino_backend import (
    OpenVINOBackbone,
    auto_backend,
    bf16_may_run_on_openvino,
    check_backend,
    engine_device,
    gather_heads,
    load_openvino_backbone,
    log_backend_choice,
    longest_exact_row,
    restore_backbone_weights,
)
from .openvino_quantization import (
    CALIBRATION_BATCH_ROWS,
    StaticInt8,
    calibration_pairs,
    checked_calibration,
)
from .quantization import check_quantize, quantize_int8

__all__ = [
    "DEFAULT_MAX_BATCH_TOKENS",
    "EncodedExample",
    "EngineOptions",
    "NonFiniteLogitsError",
    "PairwiseEngine",
    "default_max_batch_tokens",
]

logger = logging.getLogger(__name__)


class NonFiniteLogitsError(FloatingPointError):
    """PairRM gave NaN or infinite logits even in fp32 (see the engine's non-finite policy)."""


@dataclass
class EncodedExample:
    """One prompt with its candidates, tokenized once.

    Attributes:
        source: the packed source segment ``[CLS]<|source|>…[SEP]``.
        candidates: each candidate's text ids, already cut to this example's candidate budget.
        source_key / candidate_keys: ids of the distinct texts of one ``encode`` call; equal keys mean equal rows.
    """

    source: list[int]
    candidates: list[list[int]]
    source_key: int = -1
    candidate_keys: tuple[int, ...] = ()


#: Padded tokens per forward pass under ``max_batch_tokens="auto"`` (the default), per device type; a device type
#: not listed has no limit. On CPU, 2048 tokens run 8 rows of 2048 tokens (large shape) as 8 passes of one row:
#: peak RSS weights + 0.99 GB, against + 1.91 GB at 8192 tokens and + 2.94 GB with no limit; on the base shape
#: passes of 2048 tokens measured 0.99–1.00× the time of passes of 8192 (16 × 256 and 4 × 1024, torch and
#: OpenVINO), because a matmul over 2048 rows of tokens already keeps 2 cores busy (benchmarks/RESULTS.md).
#: CUDA has no limit until a GPU run measures one (``benchmarks/gpu_check.py``).
DEFAULT_MAX_BATCH_TOKENS: dict[str, int] = {"cpu": 2048}


def default_max_batch_tokens(device: str | torch.device = "cpu") -> int | None:
    """The token budget ``max_batch_tokens="auto"`` means on ``device``: :data:`DEFAULT_MAX_BATCH_TOKENS`, or
    ``None`` (no limit) for a device type not listed."""
    return DEFAULT_MAX_BATCH_TOKENS.get(torch.device(device).type)


@dataclass(frozen=True)
class EngineOptions:
    """How an engine cuts and reports its work; none of it changes a logit beyond float rounding of the batching.

    Frozen: a caller who wants other options takes a view (:meth:`PairwiseEngine.with_options`,
    :meth:`pairrm_hf.PairRM.with_options`) instead of changing an engine that others may share.

    Attributes:
        batch_size: most rows per forward pass.
        max_batch_tokens: most padded tokens (rows × longest row) per forward pass; ``None`` = no limit;
            ``"auto"`` (default) = :data:`DEFAULT_MAX_BATCH_TOKENS` for the engine's device (2048 on CPU).
        autocast_dtype: run the forward under ``torch.autocast`` in this dtype (e.g. bf16 on CPU); logits are fp32.
        show_progress: show a tqdm bar over the rows of each call.
        progress_callback: called after every forward batch with the number of requested ordered pairs it answered
            (pairs that share one row count once each); the ``pairrm`` command moves its progress bar with it.
    """

    batch_size: int = 16
    max_batch_tokens: int | str | None = "auto"
    autocast_dtype: torch.dtype | None = None
    show_progress: bool = False
    progress_callback: Callable[[int], None] | None = None

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.max_batch_tokens not in (None, "auto") and (
            not isinstance(self.max_batch_tokens, int)
            or isinstance(self.max_batch_tokens, bool)
            or self.max_batch_tokens < 1
        ):
            raise ValueError(f"max_batch_tokens must be a positive int, 'auto' or None, got {self.max_batch_tokens!r}")
        # accept the names resolve_dtype knows ("bf16", "bfloat16", ...) and store the torch dtype
        object.__setattr__(self, "autocast_dtype", resolve_dtype(self.autocast_dtype))
        if self.progress_callback is not None and not callable(self.progress_callback):
            raise TypeError(f"progress_callback must be callable or None, got {type(self.progress_callback).__name__}")


def check_packing(model, backend: str, compile: bool) -> str:  # noqa: A002 - torch.compile's name
    """The backend a ``packing=True`` engine runs on (``"torch"``), or ``ValueError`` saying why this model or these
    options cannot pack rows: packed sequences run through the torch model's layers, uncompiled, and only a pairwise
    PairRM model has :meth:`~pairrm_hf.models.modeling_pairrm.DebertaV2PairRM.packed_logits`."""
    if backend == "openvino":
        raise ValueError("packing=True runs on the torch backend; backend='openvino' cannot pack rows")
    if compile:
        raise ValueError("packing=True runs the model uncompiled; drop compile=True (or packing)")
    if not callable(getattr(model, "packed_logits", None)):
        raise ValueError(f"packing=True needs a pairwise PairRM model; {type(model).__name__} cannot pack rows")
    check_packable(model.pretrained_model.config)
    return "torch"


class PairwiseEngine:
    """Runs a :class:`DebertaV2PairRM` over ordered candidate pairs in length-bucketed batches.

    Args:
        model: the PairRM model (moved to ``device``/``dtype`` and put in eval mode).
        encoder: the pair encoder holding the tokenizer and token budgets.
        device: where to run; ``None`` picks CUDA when available.
        dtype: weights dtype (``torch.float32``, ``torch.bfloat16``, ``torch.float16``); ``None`` keeps it. bfloat16
            on the CPU with OpenVINO keeps the fp32 weights and compiles OpenVINO for bf16 instead.
        batch_size: most rows per forward pass.
        max_batch_tokens: most padded tokens (rows × longest row) per forward pass; ``None`` = no limit;
            ``"auto"`` (default) = :data:`DEFAULT_MAX_BATCH_TOKENS` for ``device`` (2048 on CPU, none on CUDA).
        autocast_dtype: run the forward under ``torch.autocast`` in this dtype (e.g. bf16 on CPU); logits are fp32.
        show_progress: show a tqdm bar over batches.
        compile: run the model through ``torch.compile(dynamic=True)``. Same logits up to float rounding; the first
            call pays a one-off warm-up (tens of seconds on CPU for a base-size model, once per process) and a new
            batch shape may add a short recompile. Pays off for long jobs, mostly together with bf16 autocast.
        attention: ``"fused"``, ``"eager"`` or ``"flex"`` self-attention for this engine's model (see
            :mod:`pairrm_hf.models.attention`); ``None``: the model's setting, or, while the model has the default,
            the default for this engine's device type (``DEFAULT_ATTENTION``: ``"fused"`` on CPU and CUDA today).
            With ``"flex"``, ``last_stats["flex_compiles"]`` counts the flex graphs the call compiled.
        quantize: ``"int8"`` runs the linear layers as dynamically quantized int8 on CPU (see
            :mod:`pairrm_hf.ranking.quantization`); the fp32 model is kept as ``reference_model`` for reference runs.
            With ``backend="openvino"``: the OpenVINO model's linear weights are compressed to int8 (NNCF).
        calibration: with ``quantize="int8"`` on OpenVINO, static int8 calibrated on these rows (a JSONL path, a list
            of ``{"prompt", "candidates"}`` rows or a :class:`~pairrm_hf.ranking.openvino_quantization.Calibration`);
            see :mod:`pairrm_hf.ranking.openvino_quantization`. An error with the torch backend or without quantize.
        calibration_size: ordered pairs to calibrate on (default
            :data:`~pairrm_hf.ranking.openvino_quantization.CALIBRATION_SIZE`).
        packing: run each batch's pairs as one packed sequence with no padding, each pair attending only to itself
            (see :mod:`pairrm_hf.models.packing`): at most ``batch_size`` pairs and ``max_batch_tokens`` real tokens
            per pass. Same logits to float rounding; with ``attention="flex"`` one block-sparse kernel covers the
            sequence, otherwise each pair's attention runs on its slice. Runs on the torch backend (``"auto"``
            picks it; ``"openvino"`` or ``compile`` with it is an error), for pairwise PairRM models.
        backend: ``"auto"``, ``"torch"`` or ``"openvino"``; ``None`` (default) reads ``$PAIRRM_BACKEND``, else
            ``"auto"``. ``"openvino"`` runs the backbone as an OpenVINO model on CPU, converted once and cached (see
            :mod:`pairrm_hf.ranking.openvino_backend`); the torch model stays ``self.model`` for the head and for
            fp32 reference runs. ``"auto"`` picks OpenVINO when it is installed and applies (CPU, a fp32
            :class:`DebertaV2PairRM`, no ``compile``/autocast/eager attention) and torch otherwise; ``self.backend``
            says which runs.

    ``batch_size``, ``max_batch_tokens``, ``autocast_dtype`` and ``show_progress`` form the engine's
    :class:`EngineOptions` (``engine.options``, read-only). :meth:`with_options` gives a view with other options that
    shares the model, encoder and compiled module; nothing a caller does to a view reaches the engine it came from.
    """

    def __init__(
        self,
        model: DebertaV2PairRM,
        encoder: PairEncoder,
        *,
        device: str | int | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 16,
        max_batch_tokens: int | str | None = "auto",
        autocast_dtype: str | torch.dtype | None = None,
        show_progress: bool = False,
        compile: bool = False,  # noqa: A002 - the name users know from torch.compile
        attention: str | None = None,
        quantize: str | None = None,
        backend: str | None = None,
        calibration=None,
        calibration_size: int | None = None,
        packing: bool = False,
    ):
        check_positive_int("batch_size", batch_size)
        options = EngineOptions(batch_size, max_batch_tokens, autocast_dtype, bool(show_progress))
        # int8 runs on CPU only: with no device named, pick the CPU even when a GPU is present
        check_quantize(quantize, device)
        requested = check_backend(backend, device=device, dtype=dtype, compile=compile, autocast_dtype=autocast_dtype)
        if packing:
            requested = check_packing(model, requested, compile)
        # calibration rows are read and checked now, before the model is moved, converted or run
        calibration = checked_calibration(calibration, calibration_size, quantize=quantize, backend=requested)
        self.device = engine_device(device, quantize=quantize, backend=requested)
        dtype = resolve_dtype(dtype)
        # another engine's OpenVINO backend may have released this model's backbone weights: moving or casting needs them
        restore_backbone_weights(getattr(model, "pretrained_model", None))
        # bf16 on the CPU may run on OpenVINO, which keeps the fp32 weights and computes in bf16 itself: the cast
        # waits until the backend is known
        cast_later = bf16_may_run_on_openvino(dtype, self.device, requested)
        cast = None if cast_later or dtype == "auto" else dtype
        self.model = model.to(self.device) if cast is None else model.to(self.device, dtype=cast)
        self.model.eval()
        built_with = default_attention("cpu")  # what a model gets at construction
        if attention is None and getattr(self.model, "attention_implementation", None) == built_with:
            # the one place a device-specific default is applied (a no-op while every device defaults to fused)
            attention = default_attention(self.device) if default_attention(self.device) != built_with else None
        if attention is not None:
            self.model.set_attention_implementation(attention)
        chose_auto = requested == "auto"
        if chose_auto:
            requested, reason = auto_backend(
                self.model,
                device=self.device,
                compile=compile,
                autocast_dtype=options.autocast_dtype,
                attention=attention,
                quantize=quantize,
            )
            log_backend_choice(requested, reason)
            if calibration is not None and requested != "openvino":
                raise ValueError(
                    f"calibration= calibrates OpenVINO's static int8, but backend='auto' picked torch ({reason})"
                )
        #: the backend that runs: ``"torch"`` or ``"openvino"`` (``"auto"`` resolved; see
        #: :mod:`pairrm_hf.ranking.openvino_backend`).
        self.backend = requested
        #: the fp32 model that :meth:`reference_pair_logits` runs when ``self.model`` is quantized, else None.
        self.reference_model: DebertaV2PairRM | None = None
        #: the OpenVINO stand-in for ``self.model.pretrained_model`` when ``backend="openvino"``, else None.
        self.openvino_backbone = None
        self.encoder = encoder
        self._options = options
        if self.backend == "openvino":
            backbone = getattr(self.model, "pretrained_model", None)
            if getattr(getattr(backbone, "config", None), "model_type", None) != "deberta-v2":
                raise ValueError("backend='openvino' supports PairRM models on a DeBERTa-v2/v3 backbone")
            static = self.static_int8(calibration) if calibration is not None else None
            bf16 = torch.bfloat16 in (dtype, options.autocast_dtype)
            try:
                self.openvino_backbone = load_openvino_backbone(
                    backbone, quantize=quantize, calibration=static, inference_precision="bf16" if bf16 else "f32"
                )
            except Exception as err:
                if not chose_auto or static is not None:  # calibration was asked for: never drop it silently
                    raise
                # the default must not make a model unusable: say why and run it on torch
                logger.warning("PairRM: OpenVINO conversion failed (%s: %s); running on torch", type(err).__name__, err)
                self.backend = "torch"
        if self.backend == "torch" and cast_later:
            self.model = self.model.to(dtype=dtype)
        if self.backend == "torch" and quantize == "int8":
            self.reference_model, self.model = self.model, quantize_int8(self.model)
        self.compile = bool(compile)
        #: whether a batch's pairs run as one packed sequence (no padding; see :mod:`pairrm_hf.models.packing`).
        self.packing = bool(packing)
        # a one-slot box, shared by every view, so the backbone is compiled once whichever view runs first
        self._compiled: list = [None]
        #: counters of the last call: forward passes, rows, real tokens, padded tokens fed to the model and the
        #: most rows assembled at once (memory grows with the batch, never with the number of pairs).
        self.last_stats: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------------ options
    @property
    def options(self) -> EngineOptions:
        """This engine's :class:`EngineOptions` (frozen; take a view with :meth:`with_options` to change them)."""
        return self._options

    @property
    def batch_size(self) -> int:
        """Most rows per forward pass (``options.batch_size``)."""
        return self._options.batch_size

    @property
    def max_batch_tokens(self) -> int | None:
        """Most padded tokens per forward pass (``options.max_batch_tokens``, ``"auto"`` resolved for this
        engine's device; ``None``: no limit)."""
        tokens = self._options.max_batch_tokens
        return default_max_batch_tokens(self.device) if tokens == "auto" else tokens

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the forward pass, or None (``options.autocast_dtype``)."""
        return self._options.autocast_dtype

    @property
    def show_progress(self) -> bool:
        """Whether each call shows a tqdm bar (``options.show_progress``)."""
        return self._options.show_progress

    @property
    def progress_callback(self) -> Callable[[int], None] | None:
        """Called with the pairs each forward batch answered (``options.progress_callback``)."""
        return self._options.progress_callback

    def with_options(self, **changes) -> PairwiseEngine:
        """A view of this engine with some :class:`EngineOptions` changed (e.g. ``batch_size=64``).

        The view shares the model, encoder, device and compiled module (taking one costs no copy of any of them)
        and has its own ``last_stats``; this engine is left exactly as it was.
        """
        options = replace(self._options, **changes)
        # Same class and fields (a subclass keeps its routing, e.g. the server's batcher); only the options and
        # the per-call counters are the view's own.
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._options = options
        view.last_stats = {}
        return view

    def adopt(self, engine: PairwiseEngine, options: EngineOptions | None = None) -> None:
        """Make this (new) object a view of ``engine``: same model, encoder, device and compiled module, with
        ``options`` (default: ``engine``'s). For subclasses that route calls elsewhere (the server's batcher)."""
        self.device = engine.device
        self.model = engine.model
        self.reference_model = engine.reference_model
        self.encoder = engine.encoder
        self.compile = engine.compile
        self._compiled = engine._compiled
        self.backend = engine.backend
        self.openvino_backbone = engine.openvino_backbone
        self._options = engine.options if options is None else options
        self.last_stats = {}

    def credit_progress(self, pairs: int) -> None:
        """Move the progress callback by ``pairs`` that will not be computed.

        A schedule whose registered cost is its worst case (merge sort) credits the comparisons an early-finished
        merge did not need, so a progress total taken from the cost ends exactly at its total.
        """
        if pairs > 0 and self.progress_callback is not None:
            self.progress_callback(int(pairs))

    @contextmanager
    def _compiled_backbone(self, reference: bool):
        """Swap in the compiled DeBERTa backbone (``torch.compile`` or OpenVINO) for one call, then restore the plain
        module.

        Only the backbone is compiled: it traces as one graph, while the PairRM wrapper checks its inputs with
        data-dependent branches that would split the graph. Swapping per call keeps ``self.model`` (its
        ``state_dict`` included) untouched for the caller and for fp32 reference runs.
        """
        if reference or not (self.compile or self.openvino_backbone is not None):
            yield
            return
        backbone = self.model.pretrained_model
        if self.openvino_backbone is not None:
            module = self.openvino_backbone
        else:
            if self._compiled[0] is None:
                # dynamic=True: batch widths change with every bucket; static shapes would recompile for each one.
                self._compiled[0] = torch.compile(backbone, dynamic=True)
            module = self._compiled[0]
        self.model.pretrained_model = module
        try:
            yield
        finally:
            self.model.pretrained_model = backbone

    # ----------------------------------------------------------------------------------------------- encoding
    def encode(self, sources: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[EncodedExample]:
        """Tokenize each distinct text once and cut it to its example's budget."""
        if self.ranking_style == "text_pair":
            raise ValueError(
                "this engine runs a text-pair classifier (a distilled student): score (prompt, response) pairs "
                "with text_pair_scores; it has no candidate-pair encoding"
            )
        distinct: dict[str, int] = {}
        for text in sources:
            distinct.setdefault(text, len(distinct))
        for cands in candidates:
            for text in cands:
                distinct.setdefault(text, len(distinct))
        ids = self.encoder.tokenize(list(distinct))
        # Keys name distinct token sequences, so texts that tokenize alike (e.g. two whitespace-only answers)
        # share one row and tie exactly.
        row_keys: dict[tuple[int, ...], int] = {}
        examples = []
        for source, cands in zip(sources, candidates):
            segment = self.encoder.source_segment(ids[distinct[source]])
            budget = self.encoder.candidate_budget(len(segment))
            bodies = [self.encoder.candidate_body(ids[distinct[c]], budget) for c in cands]
            source_key = row_keys.setdefault(tuple(segment), len(row_keys))
            keys = tuple(row_keys.setdefault((-1, *body), len(row_keys)) for body in bodies)
            examples.append(EncodedExample(segment, bodies, source_key, keys))
        return examples

    def static_int8(self, calibration) -> StaticInt8:
        """The calibration rows as this engine would run them: encoded by its pair encoder, ordered pairs cut into
        length-bucketed ``[B, L]`` batches of :data:`CALIBRATION_BATCH_ROWS` rows (a fixed size, not this engine's
        ``batch_size``: the batches are part of the cache key, and a server batching by 32 should find the entry a
        script batching by 16 wrote)."""
        text = calibration.text
        examples = self.encode(list(text.sources), [list(c) for c in text.candidates])
        pairs = calibration_pairs([len(c) for c in text.candidates], calibration.size)
        lengths = self._row_lengths(examples, pairs)
        batches = []
        heads = int(self.model.pretrained_model.config.num_attention_heads)
        longest = longest_exact_row(gather_heads(heads))
        for batch in self.with_options(batch_size=CALIBRATION_BATCH_ROWS, max_batch_tokens=None)._batches(lengths):
            width = int(lengths[batch].max())
            if width > longest:  # such rows run on torch (OpenVINOBackbone.longest_row): nothing to calibrate
                continue
            ids, mask = self._assemble(examples, pairs, batch, width)
            # as OpenVINOBackbone cuts a long batch into requests, so calibration never holds more at once
            step = OpenVINOBackbone.request_rows(heads, width)
            batches += [(ids[k : k + step].numpy(), mask[k : k + step].numpy()) for k in range(0, len(batch), step)]
        return StaticInt8(batches, calibration.options())

    # ------------------------------------------------------------------------------------------------ forward
    def _row_lengths(self, examples: Sequence[EncodedExample], pairs: np.ndarray) -> np.ndarray:
        src = np.array([len(e.source) for e in examples], dtype=np.int64)
        offsets = np.zeros(len(examples) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(e.candidates) for e in examples])
        cand = np.fromiter((len(b) for e in examples for b in e.candidates), dtype=np.int64, count=int(offsets[-1]))
        ex, i, j = pairs[:, 0], pairs[:, 1], pairs[:, 2]
        return src[ex] + cand[offsets[ex] + i] + cand[offsets[ex] + j] + 6

    def _batches(self, lengths: np.ndarray, packed: bool = False) -> list[np.ndarray]:
        """Pair indices grouped into batches of similar length, longest first (peak memory shows up at once).

        Padded (default): at most ``batch_size`` rows and ``rows × longest ≤ max_batch_tokens``. ``packed``: at most
        ``batch_size`` rows whose lengths sum to at most ``max_batch_tokens`` (never fewer than one row)."""
        order = np.argsort(-lengths, kind="stable")
        batches, start = [], 0
        budget = self.max_batch_tokens
        while start < len(order):
            longest = int(lengths[order[start]])
            rows = self.batch_size
            if budget is not None and packed:
                total = np.cumsum(lengths[order[start : start + rows]])
                rows = max(1, int(np.searchsorted(total, budget, side="right")))
            elif budget is not None:
                rows = max(1, min(rows, budget // max(longest, 1)))
            batches.append(order[start : start + rows])
            start += rows
        return batches

    def _rows(self, examples: Sequence[EncodedExample], pairs: np.ndarray, batch: np.ndarray) -> list[list[int]]:
        enc = self.encoder
        rows = []
        for k in batch:
            ex, i, j = pairs[k]
            e = examples[ex]
            rows.append(enc.pack(e.source, e.candidates[i], e.candidates[j]))
        return rows

    def _assemble(self, examples: Sequence[EncodedExample], pairs: np.ndarray, batch: np.ndarray, width: int):
        return pad_rows(self._rows(examples, pairs, batch), self.encoder.pad_id, width)

    def pair_logits(
        self, examples: Sequence[EncodedExample], pairs: np.ndarray | Sequence[Sequence[int]]
    ) -> np.ndarray:
        """Logits ``C[ex][i, j]`` (float32, shape ``[len(pairs)]``) for ordered pairs ``(ex, i, j)``.

        For a pointwise or dual model: the score differences ``s_i − s_j`` (see :meth:`point_scores`).
        """
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
        if self.ranking_style != "pairwise":
            return self._score_difference_logits(examples, pairs, reference=False)
        if len(pairs):
            # Pairs whose texts are identical (duplicate candidates, repeated prompts) share one row.
            keys = np.array(
                [
                    (examples[ex].source_key, examples[ex].candidate_keys[i], examples[ex].candidate_keys[j])
                    for ex, i, j in pairs.tolist()
                ],
                dtype=np.int64,
            )
            _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
            inverse = inverse.reshape(-1)
            weights = np.bincount(inverse, minlength=len(first))
            logits = self._unique_pair_logits(examples, pairs[first], weights=weights)
            return self._finite(examples, pairs[first], logits)[inverse]
        self.last_stats = {"forward_calls": 0, "rows": 0, "real_tokens": 0, "padded_tokens": 0, "max_batch_rows": 0}
        return np.zeros(0, dtype=np.float32)

    def reference_pair_logits(
        self, examples: Sequence[EncodedExample], pairs: np.ndarray | Sequence[Sequence[int]]
    ) -> np.ndarray:
        """Like :meth:`pair_logits` but in plain fp32 eager mode (transformers' attention, no autocast, no compile,
        fp32 weights).

        The yardstick for the fast paths; when the weights are not fp32 it runs on a temporary fp32 copy.
        """
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
        if self.ranking_style != "pairwise":
            return self._score_difference_logits(examples, pairs, reference=True)
        logits = self._unique_pair_logits(examples, pairs, reference=True)
        bad = ~np.isfinite(logits)
        if bad.any():
            self._raise_non_finite(examples, pairs[bad], logits[bad])
        return logits

    def _finite(self, examples: Sequence[EncodedExample], pairs: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """The non-finite policy: recompute NaN/inf logits in fp32 eager mode, raise if they stay non-finite."""
        bad = ~np.isfinite(logits)
        if not bad.any():
            return logits
        stats = self.last_stats
        logger.warning(
            "PairRM: %d of %d pairs gave non-finite logits (%s weights%s); computing them again in float32",
            int(bad.sum()),
            len(logits),
            str(next(self.model.parameters()).dtype).replace("torch.", ""),
            f", {self.autocast_dtype} autocast" if self.autocast_dtype is not None else "",
        )
        again = self._unique_pair_logits(examples, pairs[bad], reference=True)
        self.last_stats = {**stats, "recomputed_fp32": int(bad.sum())}
        still = ~np.isfinite(again)
        if still.any():
            self._raise_non_finite(examples, pairs[bad][still], again[still])
        logits = logits.copy()
        logits[bad] = again
        return logits

    def _raise_non_finite(self, examples: Sequence[EncodedExample], pairs: np.ndarray, values: np.ndarray):
        decode = self.encoder.tokenizer.decode

        def snippet(ids: list[int]) -> str:
            text = decode(ids[:40], skip_special_tokens=True)
            return repr(text[:60] + ("…" if len(text) > 60 else ""))

        ex, i, j = (int(x) for x in pairs[0])
        e = examples[ex]
        raise NonFiniteLogitsError(
            f"PairRM gave a non-finite logit ({values[0]}) even in float32 for input {ex} (source {snippet(e.source)}), "
            f"candidates {i} ({snippet(e.candidates[i])}) and {j} ({snippet(e.candidates[j])})"
            + (f", and {len(pairs) - 1} more pairs" if len(pairs) > 1 else "")
            + "; the model's weights are probably damaged (check them for NaN/inf, or reload the checkpoint)"
        )

    def _unique_pair_logits(
        self,
        examples: Sequence[EncodedExample],
        pairs: np.ndarray,
        reference: bool = False,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        lengths = self._row_lengths(examples, pairs) if len(pairs) else np.zeros(0, dtype=np.int64)
        if self.packing and not reference:
            return self._run_batches(
                lengths,
                lambda batch, width: pack_rows(self._rows(examples, pairs, batch)),
                lambda model, ids, layout: model.packed_logits(ids, layout),
                weights=weights,
                unit="pair",
                packed=True,
            )
        return self._run_batches(
            lengths,
            lambda batch, width: self._assemble(examples, pairs, batch, width),
            lambda model, ids, mask: model(input_ids=ids, attention_mask=mask).logits,
            reference=reference,
            weights=weights,
            unit="pair",
        )

    def _run_batches(
        self,
        lengths: np.ndarray,
        assemble,
        forward,
        *,
        reference: bool = False,
        weights: np.ndarray | None = None,
        unit: str = "pair",
        packed: bool = False,
    ) -> np.ndarray:
        """The one batch loop: rows of these ``lengths`` in length-bucketed batches through the model.

        ``assemble(batch, width)`` builds one batch's ``(input_ids, attention_mask, *extra)`` (``[rows, width]`` int64
        CPU tensors; ``extra``: more per-token inputs such as token type ids), ``forward(model, input_ids,
        attention_mask, *extra)`` returns one output per row (``[rows, ...]``).
        Returns the float32 outputs in row order and fills ``last_stats``. ``reference`` runs plain fp32 eager
        (no autocast, no compile, fp32 weights); ``weights`` counts how many asked-for items each row stands for
        (for ``progress_callback``). ``packed``: batches are cut by real tokens and ``assemble`` returns
        ``(input_ids [1, T], PackedLayout)`` (:func:`~pairrm_hf.models.packing.pack_rows`).
        """
        stats = {"forward_calls": 0, "rows": 0, "real_tokens": 0, "padded_tokens": 0, "max_batch_rows": 0}
        out = np.zeros(len(lengths), dtype=np.float32)
        if reference or self.openvino_backbone is None:
            # torch runs the backbone: read its weights back if an OpenVINO engine on this model released them
            restore_backbone_weights(getattr(self.model, "pretrained_model", None))
        model = self.reference_model if reference and self.reference_model is not None else self.model
        if reference and any(p.dtype != torch.float32 for p in model.parameters()):
            import copy

            model = copy.deepcopy(model).float()
        if len(lengths):
            progress = None
            if self.show_progress:
                from huggingface_hub.utils import tqdm  # honours the Hugging Face progress-bar switches

                progress = tqdm(total=len(lengths), desc="PairRM", unit=unit)
            autocast = (
                torch.autocast(self.device.type, dtype=self.autocast_dtype)
                if self.autocast_dtype is not None and not reference
                else nullcontext()
            )
            # a plain transformers model (a text-pair student) has no attention switch: it runs as it is
            use_attention = getattr(model, "use_attention", None)
            attention = use_attention("eager" if reference else None) if use_attention is not None else nullcontext()
            flex = not reference and getattr(model, "attention_implementation", None) == "flex"
            compiles_before = flex_stats()["compiles"] if flex else 0
            with torch.inference_mode(), autocast, attention, self._compiled_backbone(reference):
                for batch in self._batches(lengths, packed):
                    width = int(lengths[batch].max())
                    tensors = [
                        t.to(self.device, non_blocking=True) if isinstance(t, torch.Tensor) else t
                        for t in assemble(batch, width)
                    ]
                    value = forward(model, *tensors)
                    value = value.float().cpu().numpy()
                    if out.ndim != value.ndim:
                        out = np.zeros((len(lengths), *value.shape[1:]), dtype=np.float32)
                    out[batch] = value
                    stats["forward_calls"] += 1
                    stats["rows"] += len(batch)
                    stats["real_tokens"] += int(lengths[batch].sum())
                    stats["padded_tokens"] += int(lengths[batch].sum()) if packed else width * len(batch)
                    stats["max_batch_rows"] = max(stats["max_batch_rows"], len(batch))
                    if progress is not None:
                        progress.update(len(batch))
                    if self.progress_callback is not None and not reference:
                        self.progress_callback(int(weights[batch].sum()) if weights is not None else len(batch))
            if progress is not None:
                progress.close()
            if flex:
                stats["flex_compiles"] = flex_stats()["compiles"] - compiles_before
        self.last_stats = stats
        return out

    # ---------------------------------------------------------------------------------- pointwise and dual models
    @property
    def ranking_style(self) -> str:
        """``"pairwise"`` (PairRM, PairRanker), ``"pointwise"`` (SummaReranker), ``"dual"`` (DualReranker) or
        ``"text_pair"`` (a plain sequence classifier with a :class:`TextPairEncoder`, e.g. a distilled student)."""
        if isinstance(self.encoder, TextPairEncoder):
            return "text_pair"
        return getattr(self.model, "ranking_style", "pairwise")

    def point_scores(
        self,
        examples: Sequence[EncodedExample],
        items: np.ndarray | Sequence[Sequence[int]],
        *,
        reference: bool = False,
    ) -> np.ndarray:
        """Scores ``s[ex][i]`` (float32, shape ``[len(items)]``, higher is better) for items ``(ex, i)``.

        Pointwise models run one row per distinct (source, candidate); dual models embed each distinct source and
        each distinct candidate once (1 + n rows for one input) and score by cosine similarity. ``reference``: plain
        fp32, no autocast or compile (the yardstick of :meth:`reference_pair_logits`).
        """
        style = self.ranking_style
        if style not in ("pointwise", "dual"):
            raise ValueError(f"point_scores needs a pointwise or dual model; this engine's model is {style}")
        items = np.asarray(items, dtype=np.int64).reshape(-1, 2)
        if not len(items):
            self.last_stats = {"forward_calls": 0, "rows": 0, "real_tokens": 0, "padded_tokens": 0, "max_batch_rows": 0}
            return np.zeros(0, dtype=np.float32)
        keys = np.array(
            [(examples[ex].source_key, examples[ex].candidate_keys[i]) for ex, i in items.tolist()], dtype=np.int64
        )
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        unique = items[first]
        if style == "pointwise":
            enc: PointEncoder = self.encoder  # type: ignore[assignment]
            rows = [enc.pack_point(examples[ex].source, examples[ex].candidates[i]) for ex, i in unique.tolist()]
            scores = self._run_rows(
                rows, lambda model, ids, mask: model(input_ids=ids, attention_mask=mask).logits, reference
            )
            return scores.astype(np.float32)[inverse.reshape(-1)]
        enc: DualEncoder = self.encoder  # type: ignore[assignment,no-redef]
        row_of: dict[tuple[str, int], int] = {}
        rows: list[list[int]] = []  # type: ignore[no-redef]
        pairs = []
        for ex, i in unique.tolist():
            e = examples[ex]
            src = row_of.setdefault(("s", e.source_key), len(rows))
            if src == len(rows):
                rows.append(list(e.source))
            cand = row_of.setdefault(("c", e.candidate_keys[i]), len(rows))
            if cand == len(rows):
                rows.append(enc.candidate_row(e.candidates[i]))
            pairs.append((src, cand))
        emb = self._run_rows(rows, lambda model, ids, mask: model.embed(ids, mask), reference).astype(np.float64)
        index = np.asarray(pairs, dtype=np.int64)
        scores = (emb[index[:, 0]] * emb[index[:, 1]]).sum(axis=-1).astype(np.float32)
        return scores[inverse.reshape(-1)]

    def text_pair_scores(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Scores (float32, shape ``[len(prompts)]``) of a text-pair classifier for ``(prompts[k], responses[k])``.

        For an engine built on a one-label ``AutoModelForSequenceClassification`` with a :class:`TextPairEncoder`
        (a distilled student): each distinct pair is tokenized once as the classifier was trained
        (:meth:`TextPairEncoder.encode`) and runs as one row, in length-bucketed batches, under the non-finite policy.
        """
        if self.ranking_style != "text_pair":
            raise ValueError(
                f"text_pair_scores needs an engine built with a TextPairEncoder; this engine's model is "
                f"{self.ranking_style}"
            )
        check_same_length("prompts", prompts, responses=responses)
        distinct: dict[tuple[str, str], int] = {}
        index = np.fromiter(
            (distinct.setdefault((p, r), len(distinct)) for p, r in zip(prompts, responses)),
            dtype=np.int64,
            count=len(prompts),
        )
        enc: TextPairEncoder = self.encoder  # type: ignore[assignment]
        rows, token_types = enc.encode([p for p, _ in distinct], [r for _, r in distinct])
        if not rows:
            self.last_stats = {"forward_calls": 0, "rows": 0, "real_tokens": 0, "padded_tokens": 0, "max_batch_rows": 0}
            return np.zeros(0, dtype=np.float32)

        def forward(model, ids, mask, types=None):
            extra = {} if types is None else {"token_type_ids": types}
            return model(input_ids=ids, attention_mask=mask, **extra).logits.reshape(len(ids))

        scores = self._run_rows(rows, forward, reference=False, token_types=token_types)
        return scores.astype(np.float32)[index]

    def _score_difference_logits(
        self, examples: Sequence[EncodedExample], pairs: np.ndarray, reference: bool
    ) -> np.ndarray:
        """``C[ex][i, j] = s_i − s_j`` for a pointwise or dual model, scoring each distinct candidate once."""
        if not len(pairs):
            return self.point_scores(examples, np.zeros((0, 2), dtype=np.int64), reference=reference)
        items = np.concatenate([pairs[:, [0, 1]], pairs[:, [0, 2]]])
        scores = self.point_scores(examples, items, reference=reference)
        return (scores[: len(pairs)] - scores[len(pairs) :]).astype(np.float32)

    def _run_rows(
        self, rows: list[list[int]], forward, reference: bool, token_types: list[list[int]] | None = None
    ) -> np.ndarray:
        """Token rows (pointwise rows, the dual encoder's texts, text pairs) through :meth:`_run_batches`, in the order
        given. ``token_types``: per-row token type ids, padded with 0 and passed to ``forward`` after the mask."""
        lengths = np.array([len(r) for r in rows], dtype=np.int64)

        def assemble(batch: np.ndarray, width: int) -> tuple[torch.Tensor, ...]:
            ids, mask = pad_rows([rows[k] for k in batch], self.encoder.pad_id, width)
            if token_types is None:
                return ids, mask
            return ids, mask, pad_rows([token_types[k] for k in batch], 0, width)[0]

        out = self._run_batches(lengths, assemble, forward, reference=reference, unit="row")
        if not reference and not np.isfinite(out).all():
            # The engine's non-finite policy, for per-candidate outputs: recompute in fp32 eager, else raise.
            out = self._run_batches(lengths, assemble, forward, reference=True, unit="row")
            if not np.isfinite(out).all():
                raise NonFiniteLogitsError(
                    f"{type(self.model).__name__} gave non-finite outputs even in float32 for "
                    f"{int((~np.isfinite(out)).any(axis=tuple(range(1, out.ndim))).sum())} rows; the model's weights "
                    "are probably damaged (check them for NaN/inf, or reload the checkpoint)"
                )
        return out
