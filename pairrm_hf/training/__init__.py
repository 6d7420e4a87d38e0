"""Training PairRM and the paper's other rankers with ``transformers.Trainer``."""

from .pairrm import init_pairrm_from_backbone, train_pairrm
from .rankers import init_ranker_from_backbone, train_ranker
from .trainer import PairRMDataCollator, PairRMTrainer, pairwise_accuracy_metric, run_trainer

__all__ = [
    "PairRMDataCollator",
    "PairRMTrainer",
    "init_pairrm_from_backbone",
    "init_ranker_from_backbone",
    "pairwise_accuracy_metric",
    "run_trainer",
    "train_pairrm",
    "train_ranker",
]
