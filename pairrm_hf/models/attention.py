"""Faster inference paths for DeBERTa-v2's disentangled self-attention, with the same parameters and results.

Four implementations (:data:`ATTENTION_IMPLEMENTATIONS`, chosen per model with ``config.pairrm_attention`` /
``set_attention_implementation`` or per engine with ``attention=``): ``"fused"`` (this module's path below; the
default, see :data:`DEFAULT_ATTENTION`), ``"eager"`` (transformers' module), ``"flex"`` (PyTorch FlexAttention,
compiled, in :mod:`pairrm_hf.models.flex_attention`; it uses the query scaling and position tables built here and
falls back to the fused path, with one warning, where flex or its compiler is missing) and ``"export"`` (a
traceable whole-tensor forward in :mod:`pairrm_hf.models.export_attention`: the graph the OpenVINO backend converts;
in torch, ``"fused"`` runs it for short CPU rows, where it measured faster than both eager and the tiles).

transformers ships only an eager ``DisentangledSelfAttention``. At PairRM's row lengths (1–2k tokens) most of its
time goes to elementwise passes over ``[batch·heads, L, L]`` tensors (scaling the scores three times, gathering the
two position terms, adding them, masking), not to matrix products. This module computes the same scores with fewer
passes:

* the ``1/sqrt(d·scale_factor)`` factor is folded into the query and position-query projections (``[L, d]``-sized),
  instead of dividing three ``[L, L]`` score tensors;
* the position→content term is gathered straight into ``[query, key]`` order (no transposed copy);
* the content→content product is accumulated onto the position terms by ``baddbmm`` (no separate add), the mask is
  applied in place and skipped for unpadded batches;
* on CPU the scores are built in tiles of a few query rows (all heads, all keys), so every pass over them stays in
  cache instead of streaming ``[B·H, L, L]`` tensors through memory. On GPU one tile covers a whole row.

The numbers match the eager module to float rounding (~1e-6); tests hold the paths to 1e-5. The fused and flex paths
run only in eval mode with gradients off (``torch.no_grad``/``inference_mode``, as every pairrm-hf engine call),
without ``output_attentions`` and outside ``torch.compile`` tracing; training, attention maps and compiled graphs
take transformers' eager code, so gradients and outputs there are exactly upstream's. With ``"fused"`` on CPU,
short rows with large heads take the whole-tensor export forward instead of the tiles, where it measured faster
(:attr:`PairRMSelfAttention.cpu_export_below_length`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.models.deberta_v2.modeling_deberta_v2 import (
    DisentangledSelfAttention,
    build_relative_position,
    make_log_bucket_position,
)

from .export_attention import export_attention
from .flex_attention import flex_attention, flex_packed_attention
from .packing import PackedLayout

__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "DEFAULT_ATTENTION",
    "PairRMSelfAttention",
    "default_attention",
    "set_attention_implementation",
]

#: Values of ``config.pairrm_attention``: ``"fused"`` (this module's inference path), ``"eager"`` (transformers'),
#: ``"flex"`` (FlexAttention, compiled; see :mod:`pairrm_hf.models.flex_attention`) or ``"export"`` (traceable with
#: dynamic shapes, for conversion; see :mod:`pairrm_hf.models.export_attention`).
ATTENTION_IMPLEMENTATIONS = ("fused", "eager", "flex", "export")

#: The attention a new PairRM model uses, per device type; the one place to change it. ``"fused"`` everywhere: on CPU
#: flex measured 0.55–0.67× fused's time at 2 × 1024 tokens but 0.93–1.47× at 8 × 256 (base shape, a loaded 2-core
#: VM), needs a C++ compiler and costs seconds of compiling per padded length; on CUDA nothing has been
#: measured yet (``benchmarks/gpu_check.py`` will), so the measured-safe path stays the default there too.
DEFAULT_ATTENTION = {"cpu": "fused", "cuda": "fused"}


def default_attention(device: str | torch.device = "cpu") -> str:
    """The default attention implementation for a device (type): :data:`DEFAULT_ATTENTION`, ``"fused"`` if unlisted."""
    return DEFAULT_ATTENTION.get(torch.device(device).type, "fused")


class PairRMSelfAttention(DisentangledSelfAttention):
    """``DisentangledSelfAttention`` with fused and flex inference paths; parameter names and shapes are unchanged.

    ``implementation`` (``"fused"``, ``"flex"``, ``"export"`` or ``"eager"``) picks the path for eval-mode calls
    without gradients;
    training, calls with gradients and ``output_attentions=True`` always use the eager parent. ``"flex"`` falls back
    to the fused path where flex cannot run (see :mod:`pairrm_hf.models.flex_attention`).
    """

    #: Score elements per CPU tile (``heads × query block × Lk``): 2 MB of fp32, measured best among 2^17–2^21 on
    #: a 2-core EPYC (512 KB L2 per core, shared L3). ``None``: one tile per call, as on GPU.
    tile_elements: int | None = 1 << 19

    #: On CPU, rows shorter than this take the whole-tensor export forward (:mod:`.export_attention`) instead of the
    #: tiles when the head size is 32 or more: there the tile loop's overhead outweighs the ``[L, L]`` passes it
    #: saves. One DeBERTa-v3-base layer (``benchmarks/bench_attention.py``, 2 threads) took 0.60 / 0.73 / 0.81× eager's
    #: time with export at 32 / 64 / 96 tokens, against 0.99–1.02× with the tiles; from 128 tokens on the tiles were
    #: faster (0.82× vs 0.89× at 128, 0.69–0.71× vs 0.93–0.96× at 192–512). ``0`` disables it.
    cpu_export_below_length: int = 128

    #: When the export forward is traced (the graph OpenVINO converts), the scores are built this many heads at a
    #: time (:func:`.export_attention`'s ``heads_per_group``), so the converted graph holds one group's
    #: ``[B, n, L, L]`` tensors at once instead of every head's; torch itself always runs every head at once.
    #: ``None``: no grouping. 2 was measured (``benchmarks/bench_head_groups.py``, RESULTS.md Speed III part 8):
    #: large shape at L = 2048, peak RSS weights + 2.9 GB against + 4.2 GB with all heads, at 1.00–1.06× their
    #: speed; and a group's position-term Gather stays exact in OpenVINO up to 2,896-token rows
    #: (:data:`~pairrm_hf.ranking.openvino_backend.GATHER_SAFE_ELEMENTS`).
    export_heads_per_group: int | None = 2

    #: ``False`` runs flex uncompiled (PyTorch's slow reference of the same kernel): for exactness tests only.
    flex_compiled: bool = True

    def __init__(self, config, implementation: str = "fused"):
        super().__init__(config)
        self.implementation = _checked(implementation)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, H·d]`` → ``[B, H, L, d]`` (contiguous)."""
        b, length, _ = x.shape
        return x.view(b, length, self.num_attention_heads, -1).transpose(1, 2).contiguous()

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        output_attentions: bool = False,
        query_states: torch.Tensor | None = None,
        relative_pos: torch.Tensor | None = None,
        rel_embeddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same contract as ``DisentangledSelfAttention.forward``: ``hidden_states`` ``[B, L, hidden]`` and an
        attention mask ``[B, 1, L, L]`` (or ``[B, L, L]``) → ``(context [B, L, hidden], attention maps or None)``.
        A :class:`~pairrm_hf.models.packing.PackedLayout` in place of the mask means ``hidden_states`` ``[1, T,
        hidden]`` is a packed sequence (see :meth:`packed_forward`)."""
        if isinstance(attention_mask, PackedLayout):
            return self.packed_forward(hidden_states, attention_mask, rel_embeddings, output_attentions), None
        if not self.runs_fused(hidden_states, output_attentions, query_states):
            return super().forward(
                hidden_states, attention_mask, output_attentions, query_states, relative_pos, rel_embeddings
            )
        if query_states is None:
            query_states = hidden_states
        scale = self._scale()
        # The eager module divides q·k and each position term by the same scale; folding it into the [L, d]
        # query (and position-query) projections scales every term once, before the [L, L] products.
        query = self._heads(self.query_proj(query_states)) * scale  # [B, H, Lq, d]
        key = self._heads(self.key_proj(hidden_states))  # [B, H, Lk, d]
        value = self._heads(self.value_proj(hidden_states))
        b, h, lq, d = query.shape
        context = self._attend(query, key, value, attention_mask, relative_pos, rel_embeddings, scale)
        return context.transpose(1, 2).reshape(b, lq, h * d), None

    def _scale(self) -> float:
        # As in eager, the scale counts the configured position terms even when relative attention is off.
        types = self.pos_att_type
        return 1.0 / math.sqrt(self.attention_head_size * (1 + ("c2p" in types) + ("p2c" in types)))

    def packed_forward(
        self,
        hidden_states: torch.Tensor,
        layout: PackedLayout,
        rel_embeddings: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> torch.Tensor:
        """The context ``[1, T, hidden]`` of a packed sequence ``hidden_states`` ``[1, T, hidden]`` whose segments
        (``layout``) attend only to themselves, each with its own relative positions.

        ``"flex"`` runs one call over the sequence (:func:`~pairrm_hf.models.flex_attention.flex_packed_attention`);
        otherwise, or where flex cannot run, each segment's slice runs the fused path alone. Inference only."""
        if self.training or torch.is_grad_enabled() or output_attentions:
            raise ValueError("packed rows run in inference mode only (eval, no gradients, no attention maps)")
        scale = self._scale()
        query = self._heads(self.query_proj(hidden_states)) * scale  # [1, H, T, d]
        key = self._heads(self.key_proj(hidden_states))
        value = self._heads(self.value_proj(hidden_states))
        _, h, length, d = query.shape
        positional = self.relative_attention and bool(self.pos_att_type)
        context = None
        if self.implementation == "flex":
            c2p = p2c = None
            if positional:
                c2p, p2c = self.position_products(query, key, rel_embeddings, scale)
            context = flex_packed_attention(
                query,
                key,
                value,
                layout,
                self._bucket if positional else None,
                c2p,
                p2c,
                self.pos_ebd_size if positional else 0,
                compiled=self.flex_compiled,
            )
        if context is None:
            context = torch.empty_like(query)
            for start, stop in layout.spans():
                everything = torch.ones(1, 1, 1, stop - start, dtype=torch.bool, device=query.device)
                context[:, :, start:stop] = self._attend(
                    *(x[:, :, start:stop] for x in (query, key, value)),
                    everything,
                    None,
                    rel_embeddings,
                    scale,
                    flex=False,
                )
        return context.transpose(1, 2).reshape(1, length, h * d)

    def _bucket(self, relative: torch.Tensor) -> torch.Tensor:
        """DeBERTa's relative position ids of ``relative`` (``q − k``), as ``build_relative_position`` makes them."""
        if self.position_buckets > 0 and self.max_relative_positions > 0:
            relative = make_log_bucket_position(relative, self.position_buckets, self.max_relative_positions)
        return relative.to(torch.long)

    def _attend(self, query, key, value, attention_mask, relative_pos, rel_embeddings, scale, flex: bool = True):
        """The context ``[B, H, Lq, d]`` of scaled ``query`` and ``key``/``value`` ``[B, H, L, d]`` under
        ``attention_mask`` (``[B, 1, L, L]``, ``[B, L, L]`` or broadcastable): export, flex (unless ``flex=False``)
        or the fused tiles, as :meth:`forward` chooses."""
        types = self.pos_att_type
        b, h, lq, d = query.shape
        lk = key.size(2)
        if self._runs_export_at(lq, query.device):
            pos_key = pos_query = relative_index = None
            span = 0
            if self.relative_attention and types:
                relative_index = self.relative_index(query, key, relative_pos)
                pos_key, pos_query = self.position_projections(rel_embeddings, scale)
                span = self.pos_ebd_size
            # grouping saves OpenVINO memory; torch runs the heads at once (grouped, its export path measured slower)
            tracing = self.implementation == "export" and torch.jit.is_tracing()
            group = self.export_heads_per_group if tracing else None
            return export_attention(
                query, key, value, attention_mask, relative_index, pos_key, pos_query, span, heads_per_group=group
            )
        if flex and self.implementation == "flex":
            context = self._flex(query, key, value, attention_mask, relative_pos, rel_embeddings, scale)
            if context is not None:
                return context
        mask = attention_mask if attention_mask.dim() == 4 else attention_mask.unsqueeze(1)
        mask = None if bool(mask.all()) else ~mask.bool()  # length-bucketed batches are often unpadded
        positions = (
            self._position_index(query, key, relative_pos, rel_embeddings, scale)
            if self.relative_attention and types
            else None
        )

        context = torch.empty_like(query)
        rows, block = self._tile_shape(b, h, lq, lk, query.device)
        for r0 in range(0, b, rows):
            r1 = min(r0 + rows, b)
            # The p2c product is built per row group, not for the whole batch: it is [R, H, 2·span, L], which at 8
            # rows of 2048 tokens (large shape) would be 0.27 GB.
            position = None if positions is None else self._position_tables(positions, key[r0:r1])
            keys_t = key[r0:r1].transpose(-1, -2).reshape(-1, d, lk)  # [R·H, d, Lk]
            for start in range(0, lq, block):
                stop = min(start + block, lq)
                tile_queries = query[r0:r1, :, start:stop]  # [R, H, block, d]
                queries = tile_queries.reshape(-1, stop - start, d)  # [R·H, block, d]
                if position is not None:
                    scores = self._position_tile(position, tile_queries, start, stop)
                    scores.view(-1, stop - start, lk).baddbmm_(queries, keys_t)
                else:
                    scores = torch.bmm(queries, keys_t).view(r1 - r0, h, stop - start, lk)
                if mask is not None:  # [R, 1, block or 1, Lk], broadcast over heads (and queries)
                    rows_mask = mask[r0:r1, :, start:stop] if mask.size(2) > 1 else mask[r0:r1]
                    scores.masked_fill_(rows_mask, torch.finfo(scores.dtype).min)
                probs = torch.softmax(scores, dim=-1)
                context[r0:r1, :, start:stop] = torch.matmul(probs, value[r0:r1])
        return context

    def runs_fused(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, query_states: torch.Tensor | None = None
    ) -> bool:
        """Whether a call with these inputs (``hidden_states`` ``[B, L, hidden]``) takes this module's own path
        (fused tiles, flex or export) rather than transformers' eager code: eval mode with gradients off, no attention
        maps, not inside ``torch.compile`` tracing (the eager graph compiles whole; the tile loop would be
        unrolled)."""
        return not (
            self.training
            or torch.is_grad_enabled()
            or output_attentions
            or self.implementation == "eager"
            or (query_states is not None and query_states.shape != hidden_states.shape)
            or torch.compiler.is_compiling()
        )

    def runs_export(self, hidden_states: torch.Tensor) -> bool:
        """Whether a call that :meth:`runs_fused` takes the whole-tensor export forward: ``"export"``, or ``"fused"``
        on a short CPU row with a large head size (:attr:`cpu_export_below_length`)."""
        return self._runs_export_at(hidden_states.size(1), hidden_states.device)

    def _runs_export_at(self, length: int, device: torch.device) -> bool:
        return self.implementation == "export" or (
            self.implementation == "fused"
            and device.type == "cpu"
            and self.attention_head_size >= 32
            and length < self.cpu_export_below_length
        )

    def _tile_shape(self, b: int, h: int, lq: int, lk: int, device: torch.device) -> tuple[int, int]:
        """(rows, query block) of one score tile ``[rows, H, block, Lk]``.

        On CPU a tile holds as many queries as fit in ``tile_elements``, so the passes over the scores (position
        terms, mask, softmax, product with V) stay in cache instead of streaming ``[B·H, L, L]`` tensors through
        memory: part of one row for long rows, several whole rows for short ones (one row of 70 tokens is too
        little work per product to keep both cores busy; measured 0.9× eager that way). Elsewhere (GPU) one tile
        is the whole batch: fewer, larger kernels.
        """
        if device.type != "cpu" or self.tile_elements is None:
            return b, lq
        per_row = h * lq * lk
        if per_row <= self.tile_elements:
            return max(1, min(b, self.tile_elements // per_row)), lq
        return 1, max(8, min(lq, self.tile_elements // max(h * lk, 1)))

    def relative_index(
        self, query: torch.Tensor, key: torch.Tensor, relative_pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The ``[Lq, Lk]`` relative position ids for ``query``/``key`` ``[B, H, L, d]`` (``relative_pos`` as the
        encoder passes it, or built here), the same for every row and head."""
        lq, lk = query.size(2), key.size(2)
        if relative_pos is None:
            relative_pos = build_relative_position(
                query, key, bucket_size=self.position_buckets, max_position=self.max_relative_positions
            )
        relative_pos = relative_pos.to(device=query.device, dtype=torch.long)
        if relative_pos.dim() == 4:
            relative_pos = relative_pos[:, 0]
        return relative_pos.reshape(-1, lq, lk)[0]

    def position_projections(
        self, rel_embeddings: torch.Tensor, scale: float
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(pos_key, pos_query)``: the relative embeddings projected to keys and (scaled) queries,
        ``[1, H, 2·span, d]`` each; ``None`` for a term not configured. Per call, not per token."""
        rel = rel_embeddings[: self.pos_ebd_size * 2].unsqueeze(0)  # [1, 2·span, hidden]
        pos_key = pos_query = None
        if "c2p" in self.pos_att_type:
            pos_key = self._heads(self.key_proj(rel) if self.share_att_key else self.pos_key_proj(rel))
        if "p2c" in self.pos_att_type:
            pos_query = self._heads(self.query_proj(rel) if self.share_att_key else self.pos_query_proj(rel)) * scale
        return pos_key, pos_query

    def position_products(
        self, query: torch.Tensor, key: torch.Tensor, rel_embeddings: torch.Tensor, scale: float
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(c2p, p2c)``: the query × position-key products ``[B, H, Lq, 2·span]`` and the position-query × key
        products ``[B, H, 2·span, Lk]``, for a ``query`` already multiplied by ``scale`` (the position queries are
        scaled here); ``None`` for a term not configured."""
        pos_key, pos_query = self.position_projections(rel_embeddings, scale)
        c2p = None if pos_key is None else torch.matmul(query, pos_key.transpose(-1, -2))  # query is already scaled
        p2c = None if pos_query is None else torch.matmul(pos_query, key.transpose(-1, -2))
        return c2p, p2c

    def _flex(self, query, key, value, attention_mask, relative_pos, rel_embeddings, scale):
        """The flex path (``[B, H, Lq, d]``), or ``None`` where flex cannot run this call (then fused runs)."""
        if query.size(2) != key.size(2):
            return None
        relative_index = c2p = p2c = None
        span = 0
        if self.relative_attention and self.pos_att_type:
            relative_index = self.relative_index(query, key, relative_pos)
            c2p, p2c = self.position_products(query, key, rel_embeddings, scale)
            span = self.pos_ebd_size
        return flex_attention(
            query, key, value, attention_mask, relative_index, c2p, p2c, span, compiled=self.flex_compiled
        )

    def _position_index(self, query, key, relative_pos, rel_embeddings, scale) -> dict:
        """What every row group's position terms share: the projected relative embeddings and the gather indices,
        int32 offsets into flattened tables (``[Lq, Lk]`` into a ``[query·position]`` c2p tile, ``[Lq·Lk]`` into
        the ``[position·key]`` p2c rows). int32, not int64: at 2048 tokens each ``[L, L]`` index is 17 MB, not 34."""
        lq, lk = query.size(2), key.size(2)
        relative_pos = self.relative_index(query, key, relative_pos).to(torch.int32)
        span = self.pos_ebd_size
        pos_key, pos_query = self.position_projections(rel_embeddings, scale)
        shared = {"lk": lk, "pos_key": pos_key, "pos_query": pos_query}
        if pos_key is not None:
            # term[q, k] = c2p[q, clamp(rel[q, k] + span)]; the tile's row offset is added per tile
            index = torch.clamp(relative_pos + span, 0, span * 2 - 1)
            shared["c2p_index"] = index + (torch.arange(lq, dtype=torch.int32, device=index.device) * 2 * span)[:, None]
        if pos_query is not None:
            # Eager: term[q, k] = p2c_eager[k, clamp(span - rel[k, q])], i.e. p2c[index[q, k], k] here. A gather
            # along the position axis is slow on CPU; indexing the flattened [position·key] rows is not.
            index = torch.clamp(span - relative_pos.transpose(0, 1), 0, span * 2 - 1)
            shared["p2c_index"] = (index * lk + torch.arange(lk, dtype=torch.int32, device=index.device)).reshape(-1)
        return shared

    @staticmethod
    def _position_tables(shared: dict, key: torch.Tensor) -> dict:
        """The p2c product of one row group (``key`` ``[R, H, L, d]``), ``[R, H, 2·span·Lk]``, with the shared
        indices. c2p is built per tile (:meth:`_position_tile`): a row group's whole ``[R, H, Lq, 2·span]`` table
        would be 67 MB at one 2048-token row of the large shape."""
        tables = dict(shared)
        if shared["pos_query"] is not None:
            tables["p2c"] = torch.matmul(shared["pos_query"], key.transpose(-1, -2)).flatten(2)
        return tables

    @staticmethod
    def _position_tile(tables, queries: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """The position terms of ``queries`` ``[R, H, block, d]`` (scaled), rows ``start:stop`` of a row group:
        ``[R, H, block, Lk]`` (a new tensor)."""
        lk = tables["lk"]
        rows, heads = queries.shape[:2]
        if tables["pos_key"] is not None:
            c2p = torch.matmul(queries, tables["pos_key"].transpose(-1, -2))  # [R, H, block, 2·span]
            index = tables["c2p_index"][start:stop].reshape(-1) - start * c2p.size(-1)
            tile = torch.index_select(c2p.view(rows * heads, -1), 1, index).view(rows, heads, stop - start, lk)
        if "p2c" in tables:
            p2c = tables["p2c"].reshape(rows * heads, -1)  # [R·H, 2·span·Lk]
            p2c = torch.index_select(p2c, 1, tables["p2c_index"][start * lk : stop * lk])
            p2c = p2c.view(rows, heads, stop - start, lk)
            tile = tile.add_(p2c) if tables["pos_key"] is not None else p2c
        return tile


def set_attention_implementation(backbone: nn.Module, implementation: str = "fused") -> int:
    """Make every self-attention module of a DeBERTa-v2 ``backbone`` use ``implementation`` (one of
    :data:`ATTENTION_IMPLEMENTATIONS`).

    Plain ``DisentangledSelfAttention`` modules are swapped in place for :class:`PairRMSelfAttention` holding the
    very same parameter tensors, so ``state_dict`` keys and values are unchanged. Returns how many modules were set.
    """
    implementation = _checked(implementation)
    replaced = 0
    for module in backbone.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, PairRMSelfAttention):
                child.implementation = implementation
            elif isinstance(child, DisentangledSelfAttention):
                # Re-class a shallow copy: nn.Module keeps parameters, buffers and submodules in its __dict__.
                fused = PairRMSelfAttention.__new__(PairRMSelfAttention)
                fused.__dict__.update(child.__dict__)
                fused.implementation = implementation
                setattr(module, name, fused)
            else:
                continue
            replaced += 1
    return replaced


def _checked(implementation: str) -> str:
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}")
    return implementation
