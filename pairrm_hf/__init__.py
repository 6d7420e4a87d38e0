"""pairrm-hf: PairRM (LLM-Blender) on transformers 5 — rank, compare and fuse LLM answers, and reward RLHF."""

from .aggregation import competition_ranks, scores_from_matrix
from .blender import Blender, get_topk_candidates_from_ranks
from .loading import LoadedPairRM, convert_legacy_checkpoint, detect_layout, load_pairrm
from .modeling_pairrm import DebertaV2PairRM, PairRMOutput
from .ranker import PairRM, RankedCandidate, Ranking
from .tokenization_pairrm import PairEncoder, PairLengths, load_pairrm_tokenizer
from .auto import AutoModelForPairwiseRanking
from .fusion import fuse_generate, load_fuser
from .generation import best_of_n_generate, sample_n
from .pipelines import GenerativeFusionPipeline, PairwiseRankingPipeline  # registers the pipeline tasks

__version__ = "0.1.0"

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
]
