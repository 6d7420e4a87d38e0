"""pairrm-hf: PairRM (LLM-Blender) on transformers 5 — rank, compare and fuse LLM answers, and reward RLHF."""

from .aggregation import competition_ranks, preference_pairs, scores_from_matrix
from .blender import Blender, get_topk_candidates_from_ranks
from .loading import LoadedPairRM, convert_legacy_checkpoint, detect_layout, load_pairrm
from .modeling_pairrm import DebertaV2PairRM, PairRMOutput
from .ranker import PairRM, RankedCandidate, Ranking
from .tokenization_pairrm import PairEncoder, PairLengths, load_pairrm_tokenizer
from .auto import AutoModelForPairwiseRanking
from .fusion import fuse_generate, load_fuser
from .generation import best_of_n_generate, sample_n
from .pipelines import GenerativeFusionPipeline, PairwiseRankingPipeline  # registers the pipeline tasks
from .precision import PrecisionReport, check_precision
from .schedules import kendall_tau, merge_sort_rank

__version__ = "0.1.0"

# Training, evaluation and data helpers import heavier modules (Trainer, scipy); load them on first use.
_LAZY = {
    "init_pairrm_from_backbone": "training", "train_pairrm": "training", "PairRMTrainer": "training",
    "PairRMDataCollator": "training", "save_pairrm": "training",
    "pairwise_accuracy": "evaluation", "selection_tradeoff": "evaluation", "gpt_rank": "evaluation",
    "top_k_percent": "evaluation", "beat_percent": "evaluation", "rank_correlations": "evaluation",
    "MixInstructExample": "training_data", "Candidate": "training_data", "load_mixinstruct": "training_data",
    "generate_candidates": "candidates",
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
    "load_pairrm_tokenizer",
    "scores_from_matrix",
    "preference_pairs",
    "PrecisionReport",
    "check_precision",
    "kendall_tau",
    "merge_sort_rank",
    *_LAZY,
]
