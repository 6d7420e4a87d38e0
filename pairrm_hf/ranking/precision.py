"""Check a fast path (bf16/fp16, autocast, ``torch.compile``) against plain fp32 on the caller's own data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..utils.checks import check_candidate_lists, check_same_length, check_texts
from .aggregation import competition_ranks, scores_from_matrix
from .inputs import source_texts
from .rewards import symmetric_matrix

__all__ = ["PrecisionReport", "check_precision"]


@dataclass(frozen=True)
class PrecisionReport:
    """Differences between the current settings and fp32 eager over every ordered pair of the inputs.

    Attributes:
        max_abs_logit_diff: max |C_fast[i,j] − C_fp32[i,j]| over all ordered pairs.
        symmetric_flips: unordered pairs whose symmetric logit ``C[i,j] − C[j,i]`` changed sign (a decision flip).
        inputs_with_rank_changes: inputs whose ``max_logits`` ranks differ from fp32.
        top1_changes: inputs whose best candidate (rank 1 set) differs from fp32.
        pairs: ordered pairs compared.
    """

    max_abs_logit_diff: float
    symmetric_flips: int
    inputs_with_rank_changes: int
    top1_changes: int
    pairs: int

    @property
    def decisions_unchanged(self) -> bool:
        """True when no comparison flipped and no ranking changed."""
        return self.symmetric_flips == 0 and self.inputs_with_rank_changes == 0


def check_precision(
    rm: Any,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    *,
    instructions: Sequence[str] | None = None,
) -> PrecisionReport:
    """See :meth:`PairRM.check_precision`."""
    prompts = check_texts("prompts", prompts)
    candidates = check_candidate_lists("candidates", candidates)
    check_same_length("prompts", prompts, candidates=candidates)
    engine = rm.engine
    examples = engine.encode(source_texts(prompts, instructions), candidates)
    pairs = np.array(
        [(ex, i, j) for ex, c in enumerate(candidates) for i in range(len(c)) for j in range(len(c)) if i != j],
        dtype=np.int64,
    ).reshape(-1, 3)
    fast = engine.pair_logits(examples, pairs)
    ref = engine.reference_pair_logits(examples, pairs)
    flips = rank_changes = top1 = 0
    start = 0
    for c in candidates:
        n = len(c)
        mats = []
        for logits in (fast, ref):
            m = np.zeros((n, n), dtype=np.float32)
            block = pairs[start : start + n * (n - 1)]
            m[block[:, 1], block[:, 2]] = logits[start : start + n * (n - 1)]
            mats.append(m)
        start += n * (n - 1)
        sym_fast, sym_ref = (symmetric_matrix(m) for m in mats)
        iu = np.triu_indices(n, k=1)
        flips += int((np.sign(sym_fast[iu]) != np.sign(sym_ref[iu])).sum())
        r_fast, r_ref = (competition_ranks(scores_from_matrix(m)) for m in mats)
        rank_changes += int(not np.array_equal(r_fast, r_ref))
        top1 += int(not np.array_equal(r_fast == 1, r_ref == 1))
    diff = float(np.abs(fast - ref).max()) if len(pairs) else 0.0
    return PrecisionReport(diff, flips, rank_changes, top1, len(pairs))
