"""BENCHMARK-ONLY re-creation of the original llm-blender schedule; not part of the package, never used by it.

Upstream ``Blender.rank`` loads ``batch_size`` inputs at a time and, for every ordered candidate pair ``(i, j)``,
runs one forward pass over that batch of inputs, padded to the longest row of the batch, with no sorting.
This module reproduces exactly that schedule on the rows our :class:`~pairrm_hf.tokenization.tokenization_pairrm.PairEncoder`
builds (same rows, same model), so the only difference to :class:`~pairrm_hf.ranking.engine.PairwiseEngine` is the
schedule. Upstream's batch-dependent truncation is not reproduced (rows are identical on both sides). It runs
transformers' eager attention, as upstream did.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pairrm_hf.ranking.engine import EncodedExample


def baseline_pair_logits(
    model, encoder, examples: Sequence[EncodedExample], schedule: Sequence[tuple[int, int]], batch_size: int = 8
) -> tuple[np.ndarray, dict[str, int]]:
    """``out[ex, k] = C[ex][schedule[k]]`` for every input, run upstream's way; returns (logits, stats)."""
    out = np.zeros((len(examples), len(schedule)), dtype=np.float32)
    stats = {"forward_calls": 0, "rows": 0, "real_tokens": 0, "padded_tokens": 0, "max_batch_rows": 0}
    device = next(model.parameters()).device
    with torch.inference_mode(), model.use_attention("eager"):
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            for k, (i, j) in enumerate(schedule):
                rows = [encoder.pack(e.source, e.candidates[i], e.candidates[j]) for e in batch]
                width = max(map(len, rows))
                ids = torch.full((len(rows), width), encoder.pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, row in enumerate(rows):
                    ids[r, : len(row)] = torch.tensor(row)
                    mask[r, : len(row)] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                out[start : start + len(batch), k] = logits.float().cpu().numpy()
                stats["forward_calls"] += 1
                stats["rows"] += len(rows)
                stats["real_tokens"] += sum(map(len, rows))
                stats["padded_tokens"] += width * len(rows)
                stats["max_batch_rows"] = max(stats["max_batch_rows"], len(rows))
    return out, stats
