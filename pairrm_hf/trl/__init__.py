"""PairRM adapters for TRL (≥ 1.0, written against 1.16): reward functions, judges, DPO preference labelling.

Importing this package does not import ``trl``: TRL takes rewards and judges as plain callables. Labelling needs
``datasets``; both come with the ``trl`` extra (``pip install "pairrm-hf[trl]"``).

* :class:`PairRMReward` — ``GRPOTrainer``/``RLOOTrainer`` ``reward_funcs=`` (modes ``reference``/``group``/``baseline``).
* :class:`PairRMRemoteReward` — :class:`PairRMReward` computed by a ``pairrm serve`` server (same modes, results);
  :class:`AsyncPairRMRemoteReward` (``.as_async()``) is the same reward as an ``async`` function.
* :class:`StudentReward` — a student distilled with :func:`~pairrm_hf.training.distillation.distill_pairrm` (one row per completion).
* :class:`PairRMPairwiseReward` — ``trl.experimental.online_dpo.OnlineDPOTrainer`` ``reward_funcs=``.
* :class:`PairRMJudge`, :class:`PairRMRankJudge` — the classic ``trl.judges`` contract (removed from TRL in 1.1).
* :func:`label_preferences`, :func:`generate_and_label` — ``prompt``/``chosen``/``rejected`` data for ``DPOTrainer``.

TRL 1.16 has no ``PPOTrainer``; use ``GRPOTrainer``/``RLOOTrainer`` with :class:`PairRMReward`.
"""

from .judges import PairRMJudge, PairRMRankJudge
from .labeling import STRATEGIES, generate_and_label, label_preferences
from .remote import AsyncPairRMRemoteReward, PairRMRemoteReward
from .rewards import REWARD_MODES, PairRMPairwiseReward, PairRMReward
from .student import StudentReward

__all__ = [
    "AsyncPairRMRemoteReward",
    "PairRMJudge",
    "PairRMPairwiseReward",
    "PairRMRankJudge",
    "PairRMRemoteReward",
    "PairRMReward",
    "REWARD_MODES",
    "STRATEGIES",
    "StudentReward",
    "generate_and_label",
    "label_preferences",
]
