"""Training PairRM and the paper's other rankers with ``transformers.Trainer``."""

from .distillation import DISTILL_LOSSES, distill_pairrm
from .pairrm import init_pairrm_from_backbone, train_pairrm
from .rankers import init_ranker_from_backbone, train_ranker
from .trainer import PairRMDataCollator, PairRMTrainer, pairwise_accuracy_metric, run_trainer

__all__ = [
    "DISTILL_LOSSES",
    "distill_pairrm",
    "PairRMDataCollator",
    "PairRMTrainer",
    "init_pairrm_from_backbone",
    "init_ranker_from_backbone",
    "pairwise_accuracy_metric",
    "run_trainer",
    "train_pairrm",
    "train_ranker",
]
