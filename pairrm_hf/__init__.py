"""pairrm-hf: PairRM (LLM-Blender) on transformers 5 — rank, compare and fuse LLM answers, and reward RLHF."""

from .blender import Blender, get_topk_candidates_from_ranks
from .checkpoints.auto import AutoModelForPairwiseRanking
from .checkpoints.loading import LoadedPairRM, convert_legacy_checkpoint, detect_layout, load_pairrm, save_pairrm
from .generation.fusion import fuse_generate, load_fuser
from .generation.sampling import best_of_n_generate, sample_n
from .models.modeling_dual_reranker import DualReranker, DualRerankerConfig
from .models.modeling_pair_ranker import PairRanker, PairRankerConfig
from .models.modeling_pairrm import DebertaV2PairRM, PairRMOutput
from .models.modeling_summareranker import SummaReranker, SummaRerankerConfig
from .pipelines import GenerativeFusionPipeline, PairwiseRankingPipeline  # registers the pipeline tasks
from .ranking.aggregation import competition_ranks, scores_from_matrix
from .ranking.methods import RANKING_METHODS, register_ranking_method
from .ranking.precision import PrecisionReport, check_precision
from .ranking.preferences import preference_pairs
from .ranking.ranker import PairRM, RankedCandidate, Ranking
from .ranking.schedules import merge_sort_rank
from .tokenization.tokenization_pairrm import PairEncoder, PairLengths, load_pairrm_tokenizer
from .utils.version import __version__ as __version__

# Training, evaluation and data helpers import heavier modules (Trainer, scipy); load them on first use.
_LAZY = {
    "init_pairrm_from_backbone": "training.pairrm",
    "train_pairrm": "training.pairrm",
    "PairRMTrainer": "training.pairrm",
    "PairRMDataCollator": "training.pairrm",
    "pairwise_accuracy": "evaluation.metrics",
    "selection_tradeoff": "evaluation.metrics",
    "gpt_rank": "evaluation.metrics",
    "top_k_percent": "evaluation.metrics",
    "kendall_tau": "evaluation.metrics",
    "beat_percent": "evaluation.metrics",
    "rank_correlations": "evaluation.metrics",
    "MixInstructExample": "data.mixinstruct",
    "Candidate": "data.mixinstruct",
    "load_mixinstruct": "data.mixinstruct",
    "generate_candidates": "generation.candidates",
    "train_ranker": "training.rankers",
    "init_ranker_from_backbone": "training.rankers",
    "distill_pairrm": "training.distillation",
    "ModelCardInfo": "checkpoints.model_card",
    "compare_rankers": "evaluation.metrics",
    "format_comparison_table": "evaluation.metrics",
}


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
    "register_ranking_method",
    "merge_sort_rank",
    *_LAZY,
]
