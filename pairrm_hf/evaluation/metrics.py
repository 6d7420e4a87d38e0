"""Measure rankers as the LLM-Blender paper and RewardBench do.

**Preference accuracy** (RewardBench's rule for PairRM): a row counts as won iff the symmetric logit
``C[chosen, rejected] − C[rejected, chosen] > 0``. A margin of exactly 0 is a *tie* and scores ``tie_value``
(default 0.0, i.e. a loss, as RewardBench's strict ``>``); ties are reported separately. Per-subset accuracies,
and with a ``{section: [subsets]}`` map, RewardBench section scores: the example-weighted mean of the section's
subset accuracies (``Σ acc_s · n_s / Σ n_s``); ``score`` is the unweighted mean of the sections.

**Ranking metrics** for candidate sets with reference ranks (1 = best; use :func:`ranks_from_scores` for metric
scores, higher = better). Equal reference scores share a rank (competition ranks):

* GPT-Rank: the mean reference rank of the selected candidate (lower is better).
* Top-k %: the percentage of examples whose selection has reference rank ≤ k.
* Beat-X %: per example the selection scores 1 when its reference rank is better than baseline X's, ``tie_value``
  (0.5) when equal (selecting X itself is a tie), 0 when worse; the mean as a percentage. Ranks cannot express
  upstream's "Same bad" (0) vs "Same good" (0.5) distinction; pass ``tie_value`` to choose.
* Pearson / Spearman / Kendall: per example, between predicted and reference ranks, averaged over the examples
  where it is defined (a constant ranking gives NaN and is skipped; ``n_defined`` counts the others). Upstream
  correlated the transposed matrix (per candidate slot across examples); per-example is what a ranking of one
  candidate set means.
* Spearman's footrule: per example ``Σ_j |pred_rank_j − ref_rank_j|``, averaged (a distance: lower is better).

**Ranker comparison** (the paper's main table): :func:`compare_rankers` runs every metric above for several rankers
(PairRM, PairRanker, SummaReranker, DualReranker) on the same MixInstruct-style rows, with the model cost per
example, and :func:`format_comparison_table` prints them side by side.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..ranking.aggregation import competition_ranks
from ..ranking.inputs import preference_texts
from ..ranking.methods import RANKING_METHODS
from ..utils.checks import check_positive_int

__all__ = [
    "kendall_tau",
    "accuracy_from_margins",
    "pairwise_accuracy",
    "ranks_from_scores",
    "gpt_rank",
    "top_k_percent",
    "beat_percent",
    "rank_correlations",
    "selection_tradeoff",
    "plot_tradeoff",
    "compare_rankers",
    "format_comparison_table",
]


# ---------------------------------------------------------------------------------------------- preference accuracy
def accuracy_from_margins(
    margins: Sequence[float],
    subsets: Sequence[str] | None = None,
    *,
    section_map: Mapping[str, Sequence[str]] | None = None,
    tie_value: float = 0.0,
) -> dict[str, Any]:
    """Accuracy dict from symmetric margins (> 0: chosen wins; == 0: tie worth ``tie_value``; < 0: loss).

    Returns ``{"accuracy", "n", "ties", "subsets": {name: {"accuracy", "n", "ties"}}}`` plus, with
    ``section_map``, ``"sections": {section: score}`` and ``"score"`` (mean of the sections that have data).
    """
    m = np.asarray(margins, dtype=np.float64).reshape(-1)
    if not 0.0 <= tie_value <= 1.0:
        raise ValueError(f"tie_value must be in [0, 1], got {tie_value!r}")
    if np.isnan(m).any():
        raise ValueError(f"margins[{int(np.isnan(m).argmax())}] is NaN")
    if subsets is not None and len(subsets) != len(m):
        raise ValueError(f"subsets has {len(subsets)} items but margins has {len(m)}; they must match")
    credit = np.where(m > 0, 1.0, np.where(m == 0, tie_value, 0.0))
    names = list(subsets) if subsets is not None else ["all"] * len(m)
    out: dict[str, Any] = {
        "accuracy": float(credit.mean()) if len(m) else math.nan,
        "n": int(len(m)),
        "ties": int((m == 0).sum()),
        "subsets": {},
    }
    for name in dict.fromkeys(names):
        idx = np.array([k for k, s in enumerate(names) if s == name])
        out["subsets"][name] = {
            "accuracy": float(credit[idx].mean()),
            "n": int(len(idx)),
            "ties": int((m[idx] == 0).sum()),
        }
    if section_map is not None:
        sections = {}
        for section, members in section_map.items():
            present = [s for s in members if s in out["subsets"]]
            total = sum(out["subsets"][s]["n"] for s in present)
            if total:
                sections[section] = sum(out["subsets"][s]["accuracy"] * out["subsets"][s]["n"] for s in present) / total
        out["sections"] = sections
        out["score"] = float(np.mean(list(sections.values()))) if sections else math.nan
    return out


def pairwise_accuracy(
    rm,
    dataset: Sequence[Mapping[str, Any]],
    *,
    subset_key: str | None = "subset",
    section_map: Mapping[str, Sequence[str]] | None = None,
    tie_value: float = 0.0,
    input_format: str = "auto",
) -> dict[str, Any]:
    """RewardBench-style accuracy of a :class:`~pairrm_hf.PairRM` on preference rows (TRL standard or
    conversational ``prompt``/``chosen``/``rejected``); rows are grouped by ``row[subset_key]`` when present.
    See :func:`accuracy_from_margins` for the result; it also holds ``"margins"`` (one float per row).

    Rows become PairRM texts by the one input rule (:mod:`pairrm_hf.ranking.inputs`). ``input_format="conversation"``
    is RewardBench's PairRM scoring: every row, plain strings included, goes through the original's
    conversation template (``[user: prompt, assistant: answer]``), and a row is won iff
    ``C[chosen, rejected] − C[rejected, chosen] > 0`` (ties lose, ``tie_value=0``). The default ``"auto"`` keeps
    plain rows plain (the original's ``compare``)."""
    rows = list(dataset)
    if not rows:
        raise ValueError("dataset is empty")
    texts = [preference_texts(row, k, input_format=input_format) for k, row in enumerate(rows)]
    margins = rm.compare([t[0] for t in texts], [t[1] for t in texts], [t[2] for t in texts], mode="symmetric")
    subsets = None
    if subset_key is not None and all(isinstance(r, Mapping) and subset_key in r for r in rows):
        subsets = [str(r[subset_key]) for r in rows]
    out = accuracy_from_margins(margins, subsets, section_map=section_map, tie_value=tie_value)
    out["margins"] = [float(x) for x in margins]
    return out


# ---------------------------------------------------------------------------------------------- ranking metrics
def ranks_from_scores(scores: Sequence[float]) -> np.ndarray:
    """Competition ranks (1 = highest score; equal scores share the best rank)."""
    return competition_ranks(np.asarray(scores, dtype=np.float64))


def _ranks_list(name: str, ref_ranks: Sequence[Sequence[float]]) -> list[np.ndarray]:
    out = []
    for k, r in enumerate(ref_ranks):
        arr = np.asarray(r, dtype=np.float64).reshape(-1)
        if arr.size == 0:
            raise ValueError(f"{name}[{k}] is empty")
        out.append(arr)
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def _check_selected(selected: Sequence[int], ranks: list[np.ndarray]) -> list[int]:
    if len(selected) != len(ranks):
        raise ValueError(f"selected has {len(selected)} items but ref_ranks has {len(ranks)}; they must match")
    out = []
    for k, (s, r) in enumerate(zip(selected, ranks)):
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) < len(r):
            raise ValueError(f"selected[{k}] must be a candidate index in [0, {len(r)}), got {s!r}")
        out.append(int(s))
    return out


def gpt_rank(selected: Sequence[int], ref_ranks: Sequence[Sequence[float]]) -> float:
    """Mean reference rank of the selected candidates (the paper's GPT-Rank when ranks come from ChatGPT)."""
    ranks = _ranks_list("ref_ranks", ref_ranks)
    sel = _check_selected(selected, ranks)
    return float(np.mean([r[s] for r, s in zip(ranks, sel)]))


def top_k_percent(selected: Sequence[int], ref_ranks: Sequence[Sequence[float]], k: int = 1) -> float:
    """Percentage of examples whose selection has reference rank ≤ ``k``."""
    check_positive_int("k", k)
    ranks = _ranks_list("ref_ranks", ref_ranks)
    sel = _check_selected(selected, ranks)
    return 100.0 * float(np.mean([r[s] <= k for r, s in zip(ranks, sel)]))


def beat_percent(
    selected: Sequence[int],
    baseline: int | Sequence[int],
    ref_ranks: Sequence[Sequence[float]],
    *,
    tie_value: float = 0.5,
) -> float:
    """Beat-X %: win 1, tie ``tie_value`` (equal reference rank, or the baseline itself), loss 0; as a percentage.

    ``baseline`` is the baseline's candidate index, one for all examples or one per example.
    """
    ranks = _ranks_list("ref_ranks", ref_ranks)
    sel = _check_selected(selected, ranks)
    base = [baseline] * len(ranks) if isinstance(baseline, (int, np.integer)) else list(baseline)
    if len(base) != len(ranks):
        raise ValueError(f"baseline has {len(base)} items but ref_ranks has {len(ranks)}; they must match")
    base = [int(b) if isinstance(b, (int, np.integer)) and not isinstance(b, bool) else b for b in base]
    for k, (b, r) in enumerate(zip(base, ranks)):
        if not isinstance(b, int) or not 0 <= b < len(r):
            raise ValueError(f"baseline[{k}] must be a candidate index in [0, {len(r)}), got {b!r}")
    credit = [1.0 if r[s] < r[b] else tie_value if r[s] == r[b] else 0.0 for r, s, b in zip(ranks, sel, base)]
    return 100.0 * float(np.mean(credit))


def _scipy_stats():
    try:
        from scipy import stats
    except ImportError as err:
        raise ImportError("rank correlations need scipy: pip install 'pairrm-hf[eval]' (or pip install scipy)") from err
    return stats


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two score (or rank) vectors; 1 = same order, −1 = reversed, NaN when undefined."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"a and b must be 1-D of the same length, got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        return float("nan")
    return float(_scipy_stats().kendalltau(x, y).statistic)


def rank_correlations(pred_ranks: Sequence[Sequence[float]], ref_ranks: Sequence[Sequence[float]]) -> dict[str, float]:
    """Per-example Pearson, Spearman and Kendall (tau-b) correlations averaged over examples, plus the mean
    Spearman footrule distance. ``n_defined`` counts examples with a defined correlation (both rankings non-constant)."""
    stats = _scipy_stats()
    preds, refs = _ranks_list("pred_ranks", pred_ranks), _ranks_list("ref_ranks", ref_ranks)
    if len(preds) != len(refs):
        raise ValueError(f"pred_ranks has {len(preds)} items but ref_ranks has {len(refs)}; they must match")
    cols: dict[str, list[float]] = {"pearson": [], "spearman": [], "kendall": []}
    footrule = []
    for k, (p, r) in enumerate(zip(preds, refs)):
        if p.shape != r.shape:
            raise ValueError(f"pred_ranks[{k}] has {p.size} candidates but ref_ranks[{k}] has {r.size}")
        footrule.append(float(np.abs(p - r).sum()))
        if p.size < 2 or np.all(p == p[0]) or np.all(r == r[0]):
            continue
        cols["pearson"].append(float(stats.pearsonr(p, r)[0]))
        cols["spearman"].append(float(stats.spearmanr(p, r)[0]))
        cols["kendall"].append(float(stats.kendalltau(p, r)[0]))
    out = {name: (float(np.mean(v)) if v else math.nan) for name, v in cols.items()}
    out["footrule"] = float(np.mean(footrule))
    out["n_defined"] = len(cols["pearson"])
    return out


# ---------------------------------------------------------------------------------------------- selection trade-off
def _summary(selected: list[int], ranks: list[np.ndarray], scores: list[np.ndarray] | None) -> dict[str, float]:
    row = {"gpt_rank": gpt_rank(selected, ranks), "top1_percent": top_k_percent(selected, ranks, 1)}
    if scores is not None:
        row["mean_ref_score"] = float(np.mean([s[i] for s, i in zip(scores, selected)]))
    return row


def selection_tradeoff(
    rm,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    *,
    ref_scores: Sequence[Sequence[float]] | None = None,
    ref_ranks: Sequence[Sequence[float]] | None = None,
    aggregations: Sequence[str] = ("max_logits", "max_wins", "bubble"),
    budgets: Sequence[float] = (0.25, 0.5, 1.0),
    instructions: Sequence[str] | None = None,
    seed: int = 0,
    input_format: str = "auto",
) -> list[dict[str, Any]]:
    """Quality of the selected candidate vs the number of comparisons (the paper's trade-off), as table rows.

    The model scores every ordered pair once (``rm.comparison_matrices``); ``max_logits``/``max_wins`` at budget
    fraction ``f`` then use a seeded random ``f`` share of the unordered pairs (both orders each, at least one pair),
    so ``f = 1`` is the full ranking; that holds for every method of
    :data:`~pairrm_hf.ranking.methods.RANKING_METHODS` with ``matrix_scores``. The others (``bubble``,
    ``reference``, ``sort``, ``knockout``, and methods you register) run through ``rm.rank_batch`` at their own cost.
    Two reference rows frame the table: ``random`` (the expected value of a uniform pick, 0 comparisons) and
    ``oracle`` (the best reference candidate). Each row: ``aggregation``, ``budget``, ``comparisons`` (mean ordered
    pairs per example), ``gpt_rank``, ``top1_percent`` and, with ``ref_scores``, ``mean_ref_score``.
    """
    if (ref_scores is None) == (ref_ranks is None):
        raise ValueError("pass exactly one of ref_scores (higher = better) or ref_ranks (1 = best)")
    for b in budgets:
        if not 0 < b <= 1:
            raise ValueError(f"budgets must be fractions in (0, 1], got {b!r}")
    unknown = [a for a in aggregations if a not in RANKING_METHODS]
    if unknown:
        raise ValueError(f"aggregations must be among {tuple(RANKING_METHODS)}; got {unknown}")
    scores = _ranks_list("ref_scores", ref_scores) if ref_scores is not None else None
    ranks = [ranks_from_scores(s) for s in scores] if scores is not None else _ranks_list("ref_ranks", ref_ranks)
    for k, (r, c) in enumerate(zip(ranks, candidates)):
        if len(r) != len(c):
            raise ValueError(f"reference for example {k} has {len(r)} values but candidates[{k}] has {len(c)}")
    if len(ranks) != len(candidates):
        raise ValueError(f"references have {len(ranks)} examples but candidates has {len(candidates)}")
    rows: list[dict[str, Any]] = []
    rand = {
        "aggregation": "random",
        "budget": 0.0,
        "comparisons": 0.0,
        "gpt_rank": float(np.mean([r.mean() for r in ranks])),
        "top1_percent": 100.0 * float(np.mean([np.mean(r <= 1) for r in ranks])),
    }
    if scores is not None:
        rand["mean_ref_score"] = float(np.mean([s.mean() for s in scores]))
    rows.append(rand)
    full = [a for a in aggregations if RANKING_METHODS[a].matrix_scores is not None]
    if full:
        matrices = rm.comparison_matrices(prompts, candidates, instructions=instructions, input_format=input_format)
        rng = np.random.default_rng(seed)
        for budget in budgets:
            chosen_pairs = []
            for matrix in matrices:
                n = matrix.shape[0]
                all_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
                m = min(len(all_pairs), max(1, round(budget * len(all_pairs)))) if all_pairs else 0
                order = rng.permutation(len(all_pairs))[:m] if budget < 1 else np.arange(len(all_pairs))
                chosen_pairs.append([all_pairs[t] for t in order])
            for agg in full:
                selected = []
                for matrix, pairs in zip(matrices, chosen_pairs):
                    s = RANKING_METHODS[agg].matrix_scores(matrix, None if budget == 1 else pairs)
                    selected.append(int(np.argmax(s)))
                comps = float(np.mean([2 * len(p) for p in chosen_pairs]))
                rows.append(
                    {
                        "aggregation": agg,
                        "budget": float(budget),
                        "comparisons": comps,
                        **_summary(selected, ranks, scores),
                    }
                )
    for agg in (a for a in aggregations if a not in full):
        # A budgeted schedule (bubble, reference, sort, knockout) spends its own number of comparisons.
        rankings = rm.rank_batch(
            prompts, candidates, aggregation=agg, instructions=instructions, seed=seed, input_format=input_format
        )
        selected = [int(np.argmin(r.ranks)) for r in rankings]
        comps = float(np.mean([r.comparisons for r in rankings]))
        full_comps = float(np.mean([RANKING_METHODS["max_logits"].cost(len(c)) for c in candidates]))
        rows.append(
            {
                "aggregation": agg,
                "budget": comps / full_comps if full_comps else 1.0,
                "comparisons": comps,
                **_summary(selected, ranks, scores),
            }
        )
    best = [int(np.argmin(r)) for r in ranks]
    rows.append({"aggregation": "oracle", "budget": math.nan, "comparisons": math.nan, **_summary(best, ranks, scores)})
    return rows


def plot_tradeoff(table: Sequence[Mapping[str, Any]], path: str | os.PathLike, *, metric: str = "gpt_rank") -> str:
    """Plot ``metric`` against comparisons per example for each aggregation of a :func:`selection_tradeoff`
    table into a PNG (random and oracle as horizontal lines). Needs matplotlib. Returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "plotting needs matplotlib: pip install 'pairrm-hf[eval]' (or pip install matplotlib)"
        ) from err
    if not table or any(metric not in row for row in table):
        raise ValueError(f"every table row must have {metric!r}")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for agg in dict.fromkeys(row["aggregation"] for row in table):
        pts = sorted((row["comparisons"], row[metric]) for row in table if row["aggregation"] == agg)
        if agg in ("random", "oracle"):
            ax.axhline(pts[0][1], linestyle="--", linewidth=1, label=agg, color="gray" if agg == "random" else "black")
        else:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=agg)
    ax.set_xlabel("comparisons per example")
    ax.set_ylabel(metric)
    ax.legend()
    fig.tight_layout()
    path = os.fspath(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- ranker comparison
def _reference(rows: Sequence[Any], metrics: Sequence[str] | None):
    from ..data.mixinstruct import MixInstructExample, candidate_scores

    examples = [
        r if isinstance(r, MixInstructExample) else MixInstructExample.from_dict(r, k) for k, r in enumerate(rows)
    ]
    if not examples:
        raise ValueError("rows is empty")
    ref = []
    for ex in examples:
        if len(ex.candidates) < 2:
            raise ValueError(f"example {ex.id!r} has {len(ex.candidates)} candidates; ranking needs at least 2")
        ref.append(ranks_from_scores(candidate_scores(ex, metrics)))
    return examples, ref


def compare_rankers(
    rankers: Mapping[str, Any] | Sequence[Any],
    rows: Sequence[Any],
    *,
    metrics: Sequence[str] | None = None,
    top_k: Sequence[int] = (1, 3),
    beat: Sequence[str | int] = (),
    aggregation: str = "max_logits",
) -> list[dict[str, Any]]:
    """The paper's ranker comparison on the same rows: one result dict per ranker.

    Args:
        rankers: ``{name: PairRM}`` or a list of :class:`~pairrm_hf.PairRM` (named by their model class); any
            ranking style (pairwise, pointwise, dual).
        rows: MixInstruct-style rows (``candidates`` with metric ``scores``; see :class:`~pairrm_hf.data.mixinstruct.MixInstructExample`).
        metrics: the metrics whose weighted sum is the reference (default: every metric of each candidate).
        top_k: the k of the Top-k % columns. beat: baselines of the Beat-X % columns: a candidate ``model`` name
            (examples without it are skipped for that column) or a candidate index.
        aggregation: how pairwise rankers rank (``rank_batch``); pointwise and dual rankers use their own scores.
    Returns:
        Per ranker: ``ranker``, ``model`` (class), ``style``, ``gpt_rank``, ``top{k}_percent``, ``beat_{x}_percent``,
        ``pearson``/``spearman``/``kendall`` (per-example correlations of the predicted ranks with the reference),
        ``comparisons_per_example`` (model cost: ordered pairs, or rows/encodings) and ``examples``.
    """
    named = dict(rankers) if isinstance(rankers, Mapping) else {}
    if not isinstance(rankers, Mapping):
        for rm in rankers:
            name = type(rm.model).__name__
            named[name if name not in named else f"{name}#{len(named)}"] = rm
    if not named:
        raise ValueError("rankers is empty")
    examples, ref = _reference(rows, metrics)
    prompts = [ex.source for ex in examples]
    candidates = [[c.text for c in ex.candidates] for ex in examples]
    results = []
    for name, rm in named.items():
        rankings = rm.rank_batch(prompts, candidates, aggregation=aggregation)
        selected = [int(np.argmin(r.ranks)) for r in rankings]
        row: dict[str, Any] = {
            "ranker": name,
            "model": type(rm.model).__name__,
            "style": rm.ranking_style,
            "gpt_rank": gpt_rank(selected, ref),
        }
        for k in top_k:
            row[f"top{k}_percent"] = top_k_percent(selected, ref, k)
        for x in beat:
            keep, base = [], []
            for e, ex in enumerate(examples):
                if isinstance(x, str):
                    idx = [i for i, c in enumerate(ex.candidates) if c.model == x]
                    if idx:
                        keep.append(e)
                        base.append(idx[0])
                elif 0 <= int(x) < len(ex.candidates):
                    keep.append(e)
                    base.append(int(x))
            row[f"beat_{x}_percent"] = (
                beat_percent([selected[e] for e in keep], base, [ref[e] for e in keep]) if keep else math.nan
            )
        correlations = rank_correlations([r.ranks for r in rankings], ref)
        row.update({k: correlations[k] for k in ("pearson", "spearman", "kendall")})
        row["comparisons_per_example"] = float(np.mean([r.comparisons for r in rankings]))
        row["examples"] = len(examples)
        results.append(row)
    return results


def format_comparison_table(results: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`compare_rankers` results, one row per ranker (GPT-Rank: lower is better)."""
    if not results:
        raise ValueError("results is empty")
    skip = {"ranker", "examples"}
    columns = ["ranker"] + [k for k in results[0] if k not in skip]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in results:
        cells = []
        for c in columns:
            v = r.get(c)
            cells.append(
                f"{v:.3f}"
                if isinstance(v, float) and not c.endswith("_percent") and c != "comparisons_per_example"
                else f"{v:.1f}"
                if isinstance(v, float)
                else str(v)
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
