"""A traceable disentangled attention for exporting the backbone (``attention="export"``): the graph OpenVINO runs.

Why it exists: the OpenVINO backend converts the backbone by tracing one forward pass with batch and length left
dynamic. The fused path (:mod:`pairrm_hf.models.attention`) cannot be traced that way (a Python loop over score
tiles, a branch on ``bool(mask.all())``), and transformers' eager module traces into a graph that makes many
elementwise passes over ``[B, H, L, L]`` tensors (three score tensors scaled, both position terms gathered through
int64 ``[B, H, L, L]`` index tensors built by expands, a transposed copy, adds, the mask) and holds about a dozen
of them at its peak. This forward computes the same scores on whole tensors with no Python loop and no branch on
values; every size is a traced op, so one converted model serves every batch shape:

* the ``1/sqrt(d·scale_factor)`` factor is folded into the ``[L, d]`` query and position-query projections;
* the position tables are cut to the buckets the row's relative positions reach (``index.min()``..``index.max()``,
  a slice with traced bounds): short rows use ~2L of the 2·span position columns, so the c2p/p2c products shrink
  with the row (at L = 64 on a 256-bucket model, 127 columns instead of 512); long rows use them all;
* both position terms are gathered straight into ``[query, key]`` order with one ``[Lq·Lk]`` index shared by every
  row and head (``index_select`` on the flattened ``[query·position]`` / ``[position·key]`` products, an OpenVINO
  ``Gather``), not with ``[B, H, L, L]`` index tensors;
* the position terms and the padding (one ``masked_fill``) form a float bias for
  ``torch.nn.functional.scaled_dot_product_attention`` (q·k, bias, softmax, · V). OpenVINO converts it to its
  ``ScaledDotProductAttention`` op; its CPU plugin lowers that to MatMul + one fused softmax subgraph for this
  pattern (no flash-style kernel; measured a little faster than the same steps written out, within the noise of a
  shared machine);
* with ``heads_per_group`` (the converted graph uses
  :attr:`~pairrm_hf.models.attention.PairRMSelfAttention.export_heads_per_group`), the position terms, bias and
  attention run for a few heads at a time and the contexts are concatenated. OpenVINO's dynamic-shape graph frees a
  group's ``[B, n, L, L]`` tensors before the next group's are allocated, so a long row's peak holds a group's
  score tensors rather than every head's (numbers in ``benchmarks/RESULTS.md``, Speed III part 8).

The numbers match the eager module to float rounding (tests hold them to 1e-5). Like the fused path it runs in eval
mode with gradients off and without attention maps; other calls take transformers' eager code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["export_attention"]


def _used_columns(table: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``table`` ``[1, H, 2·span, d]`` cut to the positions ``index`` reaches, and ``index`` shifted to match.

    The bounds are tensors, so a trace keeps them as ops of the row length instead of freezing the example's.
    """
    low = index.min()
    return table[:, :, low : index.max() + 1], index - low


def export_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    relative_index: torch.Tensor | None = None,
    pos_key: torch.Tensor | None = None,
    pos_query: torch.Tensor | None = None,
    span: int = 0,
    heads_per_group: int | None = None,
) -> torch.Tensor:
    """The attention context ``[B, H, L, d]`` of ``query`` (already scaled), ``key`` and ``value`` ``[B, H, L, d]``.

    ``attention_mask`` ``[B, 1, L, L]`` (or ``[B, L, L]``), nonzero where a query may attend to a key;
    ``relative_index`` the ``[L, L]`` relative position ids; ``pos_key`` / ``pos_query`` the projected relative
    embeddings ``[1, H, 2·span, d]`` (the position query scaled), ``None`` for a term not configured
    (:meth:`~pairrm_hf.models.attention.PairRMSelfAttention.position_projections`); ``span`` the position span.
    ``heads_per_group``: score at most this many heads at a time (``None``: all at once); see the module notes.
    """
    b, heads, length = query.shape[:3]
    mask = attention_mask if attention_mask.dim() == 4 else attention_mask.unsqueeze(1)
    masked = ~mask.bool()
    positions = torch.arange(length, device=query.device)
    c2p_index = p2c_index = None  # flat [Lq·Lk] gather indices, shared by every row, head and head group
    if pos_key is not None:
        index = torch.clamp(relative_index + span, 0, span * 2 - 1)  # term[q, k] = c2p[q, index[q, k]]
        pos_key, index = _used_columns(pos_key, index)
        c2p_index = (index + (positions * pos_key.size(2)).unsqueeze(1)).reshape(-1)
    if pos_query is not None:
        # eager: term[q, k] = p2c[k, clamp(span - rel[k, q])] in [key, position] order, then transposed
        index = torch.clamp(span - relative_index.transpose(0, 1), 0, span * 2 - 1)
        pos_query, index = _used_columns(pos_query, index)
        p2c_index = (index * length + positions).reshape(-1)
    step = heads if not heads_per_group else min(heads_per_group, heads)
    contexts = []
    for h0 in range(0, heads, step):
        group = slice(h0, min(h0 + step, heads))
        q, k = query[:, group], key[:, group]
        n = q.size(1)
        terms = []  # the position terms, [B, n, L, L] each
        if c2p_index is not None:
            c2p = torch.matmul(q, pos_key[:, group].transpose(-1, -2))  # [B, n, L, P]
            terms.append(torch.index_select(c2p.flatten(2), 2, c2p_index).view(b, n, length, length))
        if p2c_index is not None:
            p2c = torch.matmul(pos_query[:, group], k.transpose(-1, -2))  # [B, n, P, L]
            terms.append(torch.index_select(p2c.flatten(2), 2, p2c_index).view(b, n, length, length))
        # A float mask, not a boolean one: a padded query row (every key masked) then gets eager's uniform weights,
        # not NaN. q is already scaled, hence scale=1.
        if terms:
            bias = sum(terms[1:], terms[0])
        else:
            bias = torch.zeros(mask.shape, dtype=query.dtype, device=query.device)  # broadcast over heads
        bias = bias.masked_fill(masked, torch.finfo(bias.dtype).min)
        contexts.append(F.scaled_dot_product_attention(q, k, value[:, group], attn_mask=bias, scale=1.0))
    return contexts[0] if len(contexts) == 1 else torch.cat(contexts, dim=1)  # [B, H, L, d]
