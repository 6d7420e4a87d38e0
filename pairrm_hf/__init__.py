"""pairrm-hf: PairRM (LLM-Blender) on transformers 5 — rank, compare and fuse LLM answers, and reward RLHF."""

from .aggregation import competition_ranks, scores_from_matrix
from .loading import LoadedPairRM, convert_legacy_checkpoint, detect_layout, load_pairrm
from .modeling_pairrm import DebertaV2PairRM, PairRMOutput
from .ranker import PairRM, RankedCandidate, Ranking
from .tokenization_pairrm import PairEncoder, PairLengths, load_pairrm_tokenizer

__version__ = "0.1.0"

__all__ = [
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
