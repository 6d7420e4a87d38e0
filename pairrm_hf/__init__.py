"""pairrm-hf: PairRM (LLM-Blender) on transformers 5 — rank, compare and fuse LLM answers, and reward RLHF."""

from .aggregation import competition_ranks, scores_from_matrix
from .auto import AutoModelForPairwiseRanking
from .blender import Blender, get_topk_candidates_from_ranks
from .fusion import fuse_generate, load_fuser
from .generation import best_of_n_generate, sample_n
from .loading import LoadedPairRM, convert_legacy_checkpoint, detect_layout, load_pairrm, save_pairrm
from .modeling_dual_reranker import DualReranker, DualRerankerConfig
from .modeling_pair_ranker import PairRanker, PairRankerConfig
from .modeling_pairrm import DebertaV2PairRM, PairRMOutput
from .modeling_summareranker import SummaReranker, SummaRerankerConfig
from .pipelines import GenerativeFusionPipeline, PairwiseRankingPipeline  # registers the pipeline tasks
from .precision import PrecisionReport, check_precision
from .preferences import preference_pairs
from .ranker import PairRM, RankedCandidate, Ranking
from .schedules import RANKING_METHODS, merge_sort_rank
from .tokenization_pairrm import PairEncoder, PairLengths, load_pairrm_tokenizer

__version__ = "0.1.0"

# Training, evaluation and data helpers import heavier modules (Trainer, scipy); load them on first use.
_LAZY = {
    "init_pairrm_from_backbone": "training", "train_pairrm": "training", "PairRMTrainer": "training",
    "PairRMDataCollator": "training",
    "pairwise_accuracy": "evaluation", "selection_tradeoff": "evaluation", "gpt_rank": "evaluation",
    "top_k_percent": "evaluation", "kendall_tau": "evaluation", "beat_percent": "evaluation", "rank_correlations": "evaluation",
    "MixInstructExample": "data", "Candidate": "data", "load_mixinstruct": "data",
    "generate_candidates": "candidates",
    "train_ranker": "ranker_training", "init_ranker_from_backbone": "ranker_training",
    "compare_rankers": "evaluation", "format_comparison_table": "evaluation",
}  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AutoModelForPairwiseRanking",
    "GenerativeFusionPipeline",
    "PairwiseRankingPipeline",
    "best_of_n_generate",
    "fuse_generate",
    "load_fuser",
    "sample_n",
    "Blender",
    "get_topk_candidates_from_ranks",
    "DebertaV2PairRM",
    "DualReranker",
    "DualRerankerConfig",
    "PairRanker",
    "PairRankerConfig",
    "SummaReranker",
    "SummaRerankerConfig",
    "LoadedPairRM",
    "PairEncoder",
    "PairLengths",
    "PairRM",
    "PairRMOutput",
    "RankedCandidate",
    "Ranking",
    "competition_ranks",
    "convert_legacy_checkpoint",
    "detect_layout",
    "load_pairrm",
    "save_pairrm",
    "load_pairrm_tokenizer",
    "scores_from_matrix",
    "preference_pairs",
    "PrecisionReport",
    "check_precision",
    "RANKING_METHODS",
    "merge_sort_rank",
    *_LAZY,
]
