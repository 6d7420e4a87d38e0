"""`AutoModelForPairwiseRanking`: an auto class for PairRM checkpoints that leaves transformers' own mappings alone.

``AutoModel.register(DebertaV2Config, DebertaV2PairRM, exist_ok=True)`` would make *every* DeBERTa-v2 load in the
process return PairRM; this class has its own mapping instead, so ``AutoModel`` keeps returning ``DebertaV2Model``.

>>> AutoModelForPairwiseRanking.from_pretrained("llm-blender/PairRM-hf")   # doctest: +SKIP
DebertaV2PairRM(...)
"""

from __future__ import annotations

from collections import OrderedDict

from transformers import AutoConfig, DebertaV2Config
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from .modeling_dual_reranker import DualReranker, DualRerankerConfig
from .modeling_pair_ranker import PairRanker, PairRankerConfig
from .modeling_pairrm import DebertaV2PairRM
from .modeling_summareranker import SummaReranker, SummaRerankerConfig

__all__ = ["AutoModelForPairwiseRanking", "MODEL_FOR_PAIRWISE_RANKING_MAPPING", "RANKER_MODEL_TYPES"]

#: config class → pairwise-ranking model class; starts with an empty name table and is filled by ``register``.
MODEL_FOR_PAIRWISE_RANKING_MAPPING = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


class AutoModelForPairwiseRanking(_BaseAutoModelClass):
    """Loads the ranking model of a config: ``DebertaV2Config`` → :class:`DebertaV2PairRM`, and our own model types
    ``pairrm-pair-ranker`` → :class:`PairRanker`, ``pairrm-summareranker`` → :class:`SummaReranker`,
    ``pairrm-dual-reranker`` → :class:`DualReranker`.

    Use ``from_pretrained(path_or_id)`` or ``from_config(config)``; register other backbones with
    ``AutoModelForPairwiseRanking.register(ConfigClass, ModelClass, exist_ok=True)``.
    """

    _model_mapping = MODEL_FOR_PAIRWISE_RANKING_MAPPING


# exist_ok=True is required: for config classes defined inside transformers the mapping silently skips
# registration otherwise (transformers-notes §2).
AutoModelForPairwiseRanking.register(DebertaV2Config, DebertaV2PairRM, exist_ok=True)

#: Our ranker config classes by ``model_type``; registered with ``AutoConfig`` (new names, nothing of transformers'
#: own is replaced) and with this auto class. ``AutoModel``'s mapping is left alone.
RANKER_MODEL_TYPES = {
    PairRankerConfig.model_type: (PairRankerConfig, PairRanker),
    SummaRerankerConfig.model_type: (SummaRerankerConfig, SummaReranker),
    DualRerankerConfig.model_type: (DualRerankerConfig, DualReranker),
}
for _model_type, (_config_class, _model_class) in RANKER_MODEL_TYPES.items():
    AutoConfig.register(_model_type, _config_class, exist_ok=True)
    AutoModelForPairwiseRanking.register(_config_class, _model_class, exist_ok=True)
