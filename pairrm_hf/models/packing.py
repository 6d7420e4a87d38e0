"""Packed rows: a batch's token rows laid end to end in one sequence, each row attending only to itself.

A padded batch ``[rows, longest]`` spends the dense layers (most of the FLOPs) on padding tokens. Packed, the same
rows form one sequence ``[1, sum of lengths]`` with no padding; a :class:`PackedLayout` says where each row
(segment) starts and ends, and is what the attention modules receive instead of a mask:

* with ``attention="flex"`` one FlexAttention call covers the whole sequence, with a block mask that visits only
  the blocks where a segment meets itself and a ``score_mod`` that reads DeBERTa's position terms from lookup tables
  of the offset ``q − k`` (no ``[T, T]`` tensor is built);
* with ``"fused"`` (or where flex cannot run) each segment's attention runs alone on its slice of the packed
  queries, keys and values: the dense layers still see no padding, and no score crosses a segment.

Inside a segment the relative positions are the row's own (``q − k`` does not change when a row is shifted), so a
packed row's logits equal the unpacked row's up to float rounding. Packing is for inference (no gradients, no
attention maps) on models without DeBERTa's convolution layer or ``z_steps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["PackedLayout", "check_packable", "pack_rows"]


@dataclass(frozen=True)
class PackedLayout:
    """Where each segment (one original row) lies in a packed sequence.

    Attributes:
        starts: the first position of each segment, increasing.
        lengths: each segment's token count (all ≥ 1).
    """

    starts: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def total(self) -> int:
        """The packed sequence's length ``T`` (the sum of the segment lengths)."""
        return self.starts[-1] + self.lengths[-1] if self.starts else 0

    def spans(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every segment."""
        return [(s, s + n) for s, n in zip(self.starts, self.lengths)]

    def segment_ids(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[T]`` int32: the segment each position belongs to (0, 1, …)."""
        counts = torch.tensor(self.lengths, dtype=torch.long)
        return torch.repeat_interleave(torch.arange(len(self.lengths), dtype=torch.int32), counts).to(device)

    def positions(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[1, T]`` int64: each token's position inside its own segment (what an unpacked row would use)."""
        offsets = torch.repeat_interleave(torch.tensor(self.starts, dtype=torch.long), torch.tensor(self.lengths))
        return (torch.arange(self.total, dtype=torch.long) - offsets).unsqueeze(0).to(device)


def pack_rows(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, PackedLayout]:
    """``(input_ids [1, T] int64, layout)`` for token ``rows`` laid end to end in the given order.

    An empty row cannot be a segment (it has no tokens to pool): ``ValueError`` naming it.
    """
    lengths = [len(r) for r in rows]
    empty = next((k for k, n in enumerate(lengths) if n == 0), None)
    if empty is not None:
        raise ValueError(f"row {empty} is empty: a packed segment needs at least one token")
    starts, total = [], 0
    for n in lengths:
        starts.append(total)
        total += n
    ids = torch.tensor([t for r in rows for t in r], dtype=torch.long).unsqueeze(0)
    return ids, PackedLayout(tuple(starts), tuple(lengths))


def check_packable(config) -> None:
    """``ValueError`` when a DeBERTa-v2 ``config`` has a part that would mix packed segments: the convolution
    layer after the first block (``conv_kernel_size``) or repeated last-layer passes (``z_steps``)."""
    if int(getattr(config, "conv_kernel_size", 0) or 0) > 0:
        raise ValueError("packing=True needs a backbone without DeBERTa's convolution layer (conv_kernel_size=0)")
    if int(getattr(config, "z_steps", 0) or 0) > 1:
        raise ValueError("packing=True needs a backbone with z_steps <= 1")
