"""DeBERTa-v2/v3 disentangled attention through PyTorch's FlexAttention (``attention="flex"``).

FlexAttention (``torch.nn.attention.flex_attention``) runs attention as one compiled kernel that never stores the
``[L, L]`` scores; a ``score_mod`` function adds per-element terms while the kernel builds them. Here it adds the two
DeBERTa position terms read from small per-call tables: the content→position term ``c2p[b, h, q, c2p_index[q, k]]``
and the position→content term ``p2c[b, h, p2c_index[q, k], k]`` (the same indices as transformers' eager module).
The query is scaled before the call (as in the fused path), so flex runs with ``scale=1.0``.

Compilation and its cost:

* Flex is fast only compiled. One ``torch.compile(flex_attention)`` is shared by every layer of every model in the
  process. Inductor's CPU flex kernel does not compile with dynamic shapes for this ``score_mod`` (torch 2.13: a C++
  error), so shapes are static and kept few: every row runs as its own ``[1, heads, L', head_size]`` call, with
  ``L'`` the row length rounded up by :func:`padded_length` (fewer than 64 or 25% more keys, the larger; the
  extra keys are masked).
  So one graph is compiled per (rounded length, heads, head size, dtype, device), whatever the batch size.
* At most :data:`MAX_COMPILED_SHAPES` graphs are compiled per process; a row that would need another runs on a
  larger compiled length if there is one, else on the fused path (same numbers). :func:`flex_stats` reports the
  count.
* Compiled kernels are cached on disk by inductor and reused by the next process: unless the user has set
  ``TORCHINDUCTOR_CACHE_DIR``, it is pointed at ``$PAIRRM_INDUCTOR_CACHE`` or ``$HF_HOME/pairrm_hf/inductor`` before
  the first compile (a persistent folder instead of torch's temp one; other compiles in the process use it too).

If flex is missing (torch < 2.5) or the compiler fails (no C++ compiler, an inductor error), :func:`flex_attention`
returns ``None``, the caller uses the fused path, and one warning says so, once per process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

try:
    from torch.nn.attention.flex_attention import BlockMask
    from torch.nn.attention.flex_attention import flex_attention as _torch_flex_attention
except ImportError as error:  # torch without FlexAttention
    BlockMask = _torch_flex_attention = None
    _IMPORT_ERROR: str | None = f"torch {torch.__version__} has no torch.nn.attention.flex_attention ({error})"
else:
    _IMPORT_ERROR = None

__all__ = [
    "MAX_COMPILED_SHAPES",
    "flex_attention",
    "flex_available",
    "flex_packed_attention",
    "flex_stats",
    "inductor_cache_dir",
    "offset_tables",
    "packed_length",
    "padded_length",
    "point_inductor_cache",
    "position_indices",
    "position_score_mod",
]

logger = logging.getLogger(__name__)

#: Most flex graphs compiled per process (each a few seconds on CPU). Lengths up to 2048 need at most 16.
MAX_COMPILED_SHAPES = 24

#: Shortest padded length: flex's CPU kernel works in blocks of 128 keys, and short rows are cheap anyway.
MIN_PADDED_LENGTH = 64

#: Flex's block size (its default): the block mask lists, per 128 queries, which 128-key blocks to visit.
_BLOCK_SIZE = 128


class _FlexState:
    """Process-wide flex bookkeeping (one compiled function for all layers and models)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.compiled: Callable | None = None
        self.disabled: str | None = _IMPORT_ERROR
        self.warned = False
        self.compiles = 0
        self.compile_seconds = 0.0
        self.shapes: set[tuple] = set()
        self.fused_fallback_rows = 0


_STATE = _FlexState()


def padded_length(length: int) -> int:
    """The length a row of ``length`` tokens is padded to: at least :data:`MIN_PADDED_LENGTH`, then four steps per
    doubling (…, 256, 320, 384, 448, 512, 640, …), so a job sees a few distinct lengths and compiles a few graphs."""
    if length <= MIN_PADDED_LENGTH:
        return MIN_PADDED_LENGTH
    step = max(MIN_PADDED_LENGTH, 1 << max((length - 1).bit_length() - 3, 0))
    return -(-length // step) * step


def packed_length(length: int) -> int:
    """The length a packed sequence of ``length`` tokens is padded to for flex: the next power of two, at least
    :data:`MIN_PADDED_LENGTH`. Coarser than :func:`padded_length` because padding a packed sequence costs next to
    nothing (its padding blocks see no keys, so the kernel skips them), while every distinct length is a compile:
    sequences up to 32k tokens need at most 10 graphs."""
    return max(MIN_PADDED_LENGTH, 1 << max(length - 1, 1).bit_length())


def flex_available() -> bool:
    """Whether the flex path may run: FlexAttention imports and no compile has failed in this process."""
    return _STATE.disabled is None


def flex_stats() -> dict:
    """Process-wide counters: ``compiles`` (graphs compiled, including ones loaded from the disk cache),
    ``compile_seconds`` (wall time of the calls that compiled), ``shapes`` (distinct call shapes),
    ``fused_fallback_rows`` (rows run on the fused path because the shape cap was reached) and ``disabled``
    (why flex does not run, or ``None``)."""
    s = _STATE
    return {
        "compiles": s.compiles,
        "compile_seconds": round(s.compile_seconds, 3),
        "shapes": len(s.shapes),
        "fused_fallback_rows": s.fused_fallback_rows,
        "disabled": s.disabled,
    }


def inductor_cache_dir() -> Path:
    """Where pairrm-hf points inductor's on-disk cache when the user has not: ``$PAIRRM_INDUCTOR_CACHE``, else
    ``$HF_HOME/pairrm_hf/inductor``."""
    if os.environ.get("PAIRRM_INDUCTOR_CACHE"):
        return Path(os.environ["PAIRRM_INDUCTOR_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "pairrm_hf" / "inductor"


def _counting_backend(graph_module, example_inputs):
    """Inductor, counted: dynamo calls its backend once per graph it compiles."""
    from torch._inductor.compile_fx import compile_fx

    compiled = compile_fx(graph_module, example_inputs)
    _STATE.compiles += 1  # counted once it worked: a failed compile disables flex instead
    return compiled


def point_inductor_cache() -> None:
    """Point inductor's on-disk cache at :func:`inductor_cache_dir` unless the user chose one.

    Importing transformers already fills ``TORCHINDUCTOR_CACHE_DIR`` with torch's default (a temp folder, often
    wiped), so a value equal to that default counts as not chosen. Inductor reads the variable at every cache access.
    """
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        default = os.path.abspath(default_cache_dir())
    except ImportError:  # a torch that moved it: only an unset variable counts as not chosen
        default = None
    if current is None or os.path.abspath(current) == default:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache_dir())


def _compiled() -> Callable:
    if _STATE.compiled is None:
        point_inductor_cache()
        _STATE.compiled = torch.compile(_torch_flex_attention, backend=_counting_backend, dynamic=False, fullgraph=True)
    return _STATE.compiled


def _disable(reason: str) -> None:
    _STATE.disabled = reason
    _warn_once()


def _warn_once() -> None:
    reason = _STATE.disabled
    if not _STATE.warned:
        _STATE.warned = True
        logger.warning("PairRM flex attention is unavailable (%s); using the fused attention instead", reason)


def position_score_mod(
    c2p: torch.Tensor | None, c2p_index: torch.Tensor | None, p2c: torch.Tensor | None, p2c_index: torch.Tensor | None
) -> Callable:
    """The ``score_mod`` adding DeBERTa's position terms to a content score ``q·k``: ``c2p[b, h, q, c2p_index[q, k]]``
    and ``p2c[b, h, p2c_index[q, k], k]`` (tables ``[B, H, L, 2·span]`` and ``[B, H, 2·span, L]``, indices ``[L, L]``,
    see :func:`position_indices`); a ``None`` table leaves that term out."""

    def score_mod(score, b, h, q, kv):
        if c2p is not None:
            score = score + c2p[b, h, q, c2p_index[q, kv]]
        if p2c is not None:
            score = score + p2c[b, h, p2c_index[q, kv], kv]
        return score

    return score_mod


def position_indices(relative_index: torch.Tensor, span: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c2p_index, p2c_index)`` (int32 ``[L, L]``) from the relative position ids ``[L, L]``, as transformers' eager
    module indexes: ``c2p_index[q, k] = clamp(rel[q, k] + span)`` and ``p2c_index[q, k] = clamp(span - rel[k, q])``
    (eager's position→content term at ``[q, k]`` is its ``[k, q]`` gather, transposed), clamped to ``[0, 2·span)``."""
    c2p_index = torch.clamp(relative_index + span, 0, 2 * span - 1).to(torch.int32)
    p2c_index = torch.clamp(span - relative_index.transpose(0, 1), 0, 2 * span - 1).to(torch.int32).contiguous()
    return c2p_index, p2c_index


def _block_mask(partial: torch.Tensor, full: torch.Tensor, mask_mod, length: int):
    """A ``BlockMask`` from ``[query block, key block]`` booleans: ``partial`` blocks are visited with ``mask_mod``
    applied, ``full`` ones without it, the rest skipped."""
    # per query block: the selected key blocks first, in order (the kernel reads the first `num` of them)
    kv_num, kv_indices = partial.sum(-1), torch.argsort((~partial).to(torch.int8), dim=-1, stable=True)
    full_num, full_indices = full.sum(-1), torch.argsort((~full).to(torch.int8), dim=-1, stable=True)
    kv_num, kv_indices, full_num, full_indices = (
        x.to(torch.int32)[None, None].contiguous() for x in (kv_num, kv_indices, full_num, full_indices)
    )
    return BlockMask.from_kv_blocks(
        kv_num,
        kv_indices,
        full_num,
        full_indices,
        BLOCK_SIZE=_BLOCK_SIZE,
        mask_mod=mask_mod,
        seq_lengths=(length, length),
    )


def _key_mask(valid: torch.Tensor, length: int):
    """A block mask letting every query see the keys where ``valid`` (``[L']`` bool) is true.

    Built from per-block key counts rather than by ``create_block_mask`` (which evaluates the mask function on all
    ``L'²`` pairs: ~40 ms per 256-token row on CPU): key blocks with every key valid are "full" (no per-element
    mask), those with some are partial (``mask_mod`` applied), those with none are skipped; as in
    ``create_block_mask``, a short last key block is never full, nor is any block of a short last query block.
    """

    def mask_mod(b, h, q, kv):
        return valid[kv]

    size = _BLOCK_SIZE
    blocks = -(-length // size)  # query and key blocks alike (self-attention)
    counts = _pad(valid.to(torch.int32), 0, blocks * size).view(blocks, size).sum(-1)
    full = (counts == size).expand(blocks, -1).clone()  # [query block, key block]
    if length % size:
        full[-1] = False  # a short last query block has out-of-range queries: no tile of it is full
    partial = (counts > 0) & ~full
    return _block_mask(partial, full, mask_mod, length)


#: (the attention mask object, padded length, key-valid rows, block masks): every layer of a forward pass gets the
#: same mask object, so the masks are built once per pass.
_MASKS: tuple | None = None


def _row_masks(attention_mask: torch.Tensor, length: int):
    """``(key_valid [B, L'], one block mask per row)`` for DeBERTa's ``[B, 1, L, L]``/``[B, L, L]`` mask, or ``None``
    when the mask is not a key-padding mask (``valid_q ⊗ valid_k``, what DeBERTa builds), which flex's per-key
    mask cannot express."""
    global _MASKS
    cached = _MASKS
    if cached is not None and cached[0] is attention_mask and cached[1] == length:
        return cached[2], cached[3]
    mask = (attention_mask[:, 0] if attention_mask.dim() == 4 else attention_mask).bool()  # [B, L, L]
    valid = mask.any(dim=-2)  # [B, L]: keys some query sees
    if not torch.equal(mask, valid.unsqueeze(-1) & valid.unsqueeze(-2)):
        return None
    valid = _pad(valid, 1, length)
    masks = [_key_mask(valid[row], length) for row in range(valid.size(0))]
    _MASKS = (attention_mask, length, valid, masks)
    return valid, masks


def _pad(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    extra = length - x.size(dim)
    if extra == 0:
        return x.contiguous()
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim).contiguous()


def _reserve_shape(target: int, key_fn: tuple, rows: int) -> int | None:
    """The compiled length a call of ``target`` tokens runs at: ``target`` itself while fewer than
    :data:`MAX_COMPILED_SHAPES` graphs exist, else the next larger compiled length of the same kind, else ``None``
    (the ``rows`` then run on the fused path and are counted)."""
    with _STATE.lock:
        if (target, *key_fn) not in _STATE.shapes and len(_STATE.shapes) >= MAX_COMPILED_SHAPES:
            larger = sorted(s[0] for s in _STATE.shapes if s[1:] == key_fn and s[0] >= target)
            if not larger:
                _STATE.fused_fallback_rows += rows
                return None
            target = larger[0]
        _STATE.shapes.add((target, *key_fn))
    return target


def _run_flex(run, args, score_mod, block_mask, compiled: bool) -> torch.Tensor | None:
    """One flex call (``[1, H, L, d]`` out), compiled or the uncompiled reference; ``None`` (and flex disabled for
    the process) when compiling fails."""
    if not compiled:
        with warnings.catch_warnings():  # torch warns that uncompiled flex is slow: known, it is the reference
            warnings.simplefilter("ignore", UserWarning)
            return run(*args, score_mod=score_mod, block_mask=block_mask, scale=1.0)
    before, start = _STATE.compiles, time.perf_counter()
    try:
        with torch._dynamo.config.patch(recompile_limit=MAX_COMPILED_SHAPES + 8):
            out = run(*args, score_mod=score_mod, block_mask=block_mask, scale=1.0)
    except Exception as error:  # noqa: BLE001 - any compiler failure means: use the fused path
        _disable(f"compiling it failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:200]}")
        return None
    if _STATE.compiles != before:
        _STATE.compile_seconds += time.perf_counter() - start
    return out


def flex_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    relative_index: torch.Tensor | None,
    c2p: torch.Tensor | None,
    p2c: torch.Tensor | None,
    span: int,
    *,
    compiled: bool = True,
) -> torch.Tensor | None:
    """Disentangled attention of a batch through flex; ``None`` when flex cannot run (the caller uses fused).

    Args:
        query, key, value: ``[B, H, L, d]``; the query already scaled by DeBERTa's ``1/sqrt(d·factor)``.
        attention_mask: the layer's mask, ``[B, 1, L, L]`` or ``[B, L, L]``, true where a query sees a key; it must be
            a key-padding mask (DeBERTa's ``valid ⊗ valid``), else ``None`` is returned.
        relative_index: ``[L, L]`` relative position ids (transformers' ``build_relative_position``), or ``None``
            when no position term is configured.
        c2p: ``[B, H, L, 2·span]`` query × position-key products (scaled), or ``None`` (no c2p term).
        p2c: ``[B, H, 2·span, L]`` position-query (scaled) × key products, or ``None`` (no p2c term).
        span: the position embedding span (``pos_ebd_size``).
        compiled: ``False`` runs PyTorch's uncompiled flex (a slow reference; for tests).

    Returns ``[B, H, L, d]``. Query rows of padding tokens get an undefined but finite context, as in eager.
    """
    if _STATE.disabled is not None and (compiled or _torch_flex_attention is None):
        _warn_once()
        return None
    b, h, length, d = query.shape
    target = padded_length(length)
    # everything a compiled graph depends on besides the length: call shapes, dtype, and the score_mod's tables
    key_fn = (h, d, query.dtype, query.device.type, span, c2p is not None, p2c is not None)
    if compiled:
        target = _reserve_shape(target, key_fn, b)
        if target is None:
            return None
    masks = _row_masks(attention_mask, target)
    if masks is None:
        return None
    c2p_index = p2c_index = None
    if relative_index is not None:
        # padded positions get id 0: their keys are masked and their queries' outputs dropped
        c2p_index, p2c_index = position_indices(_pad(_pad(relative_index, 0, target), 1, target), span)
    query, key, value = (_pad(x, 2, target) for x in (query, key, value))
    c2p = _pad(c2p, 2, target) if c2p is not None else None
    p2c = _pad(p2c, 3, target) if p2c is not None else None
    run = _compiled() if compiled else _torch_flex_attention
    out = torch.empty_like(query)
    for row in range(b):
        # one row per call: shapes stay static whatever the batch size, so the batch size costs no compile
        score_mod = position_score_mod(
            c2p[row : row + 1] if c2p is not None else None,
            c2p_index,
            p2c[row : row + 1] if p2c is not None else None,
            p2c_index,
        )
        args = (query[row : row + 1], key[row : row + 1], value[row : row + 1])
        context = _run_flex(run, args, score_mod, masks[1][row], compiled)
        if context is None:
            return None
        out[row : row + 1] = context
    return out[:, :, :length]


# ------------------------------------------------------------------------------------------------------ packed rows
def offset_tables(bucket, span: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c2p_lut, p2c_lut)`` (int32 ``[2·length − 1]``): the position-table columns of the offset ``q − k``, stored
    at ``q − k + length − 1``. ``bucket`` maps relative positions to their (bucketed) ids as DeBERTa does; then
    ``c2p_index[q, k] = clamp(bucket(q − k) + span)`` and ``p2c_index[q, k] = clamp(span − bucket(k − q))``, the
    values :func:`position_indices` holds in ``[L, L]`` form."""
    offsets = torch.arange(-(length - 1), length, dtype=torch.long, device=device)
    c2p = torch.clamp(bucket(offsets) + span, 0, 2 * span - 1).to(torch.int32)
    p2c = torch.clamp(span - bucket(-offsets), 0, 2 * span - 1).to(torch.int32)
    return c2p, p2c


def _segment_mask(segments: torch.Tensor, real: int, length: int):
    """The block mask of a packed sequence: a query sees the keys of its own segment. ``segments`` ``[L']`` int32
    (padding positions hold ``real``, the number of segments, and see nothing).

    Built from each 128-token block's lowest and highest segment: blocks whose ranges meet are visited, and a pair
    of whole blocks inside one segment is "full" (no per-element mask)."""

    def mask_mod(b, h, q, kv):
        return (segments[q] == segments[kv]) & (segments[kv] < real)

    size = _BLOCK_SIZE
    blocks = -(-length // size)
    padded = torch.cat([segments, segments.new_full((blocks * size - length,), real)]).view(blocks, size)
    is_real = padded < real
    big = torch.iinfo(torch.int32).max
    low = torch.where(is_real, padded, torch.full_like(padded, big)).amin(-1)
    high = torch.where(is_real, padded, torch.full_like(padded, -1)).amax(-1)
    partial = (low[:, None] <= high[None, :]) & (low[None, :] <= high[:, None])
    whole = is_real.all(-1) & (low == high)  # every token real and of one segment
    full = whole[:, None] & whole[None, :] & (low[:, None] == low[None, :])
    return _block_mask(partial & ~full, full, mask_mod, length)


def flex_packed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout,
    bucket,
    c2p: torch.Tensor | None,
    p2c: torch.Tensor | None,
    span: int,
    *,
    compiled: bool = True,
) -> torch.Tensor | None:
    """Disentangled attention of one packed sequence through flex; ``None`` when flex cannot run (the caller then
    attends segment by segment).

    Args:
        query, key, value: ``[1, H, T, d]``, the query already scaled.
        layout: the :class:`~pairrm_hf.models.packing.PackedLayout` of the ``T`` positions.
        bucket: relative position → position id (DeBERTa's log buckets, or the identity), elementwise on a tensor;
            ``None`` when no position term is configured.
        c2p: ``[1, H, T, 2·span]`` query × position-key products, or ``None``.
        p2c: ``[1, H, 2·span, T]`` position-query × key products, or ``None``.
        span: the position embedding span.
        compiled: ``False`` runs PyTorch's uncompiled flex (the reference; for tests).

    Returns ``[1, H, T, d]``.
    """
    if _STATE.disabled is not None and (compiled or _torch_flex_attention is None):
        _warn_once()
        return None
    _, h, length, d = query.shape
    target = packed_length(length)
    key_fn = ("packed", h, d, query.dtype, query.device.type, span, c2p is not None, p2c is not None)
    if compiled:
        target = _reserve_shape(target, key_fn, len(layout.lengths))
        if target is None:
            return None
    real = len(layout.lengths)
    segments = _pad(layout.segment_ids(query.device), 0, target)
    segments[length:] = real
    mask = _segment_mask(segments, real, target)
    score_mod = None
    if bucket is not None and (c2p is not None or p2c is not None):
        c2p_lut, p2c_lut = offset_tables(bucket, span, target, query.device)
        shift = target - 1
        c2p = _pad(c2p, 2, target) if c2p is not None else None
        p2c = _pad(p2c, 3, target) if p2c is not None else None

        def score_mod(score, b, h, q, kv):
            offset = q - kv + shift
            if c2p is not None:
                score = score + c2p[b, h, q, c2p_lut[offset]]
            if p2c is not None:
                score = score + p2c[b, h, p2c_lut[offset], kv]
            return score

    args = tuple(_pad(x, 2, target) for x in (query, key, value))
    run = _compiled() if compiled else _torch_flex_attention
    out = _run_flex(run, args, score_mod, mask, compiled)
    return None if out is None else out[:, :, :length]
