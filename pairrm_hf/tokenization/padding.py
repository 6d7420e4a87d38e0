"""Token rows → a padded batch: the one right-padding helper of the engine and the training collators."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["pad_rows"]


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 ``input_ids`` and ``attention_mask`` of shape ``[len(rows), width]``: each row left-aligned, then
    ``pad_id`` with mask 0 (right padding).

    ``width`` defaults to the longest row; a longer row is a ``ValueError``. An empty row is all padding (the
    collators use one for a missing candidate slot).
    """
    longest = max((len(r) for r in rows), default=0)
    width = longest if width is None else width
    if longest > width:
        raise ValueError(f"a row has {longest} tokens but the batch width is {width}")
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
