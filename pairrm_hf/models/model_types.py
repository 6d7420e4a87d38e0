"""Our ranker model types, registered with ``AutoConfig`` under new names (nothing of transformers' own is replaced).

``AutoModel``'s mapping is left alone; :class:`~pairrm_hf.AutoModelForPairwiseRanking` registers these classes in
its own mapping.
"""

from __future__ import annotations

from transformers import AutoConfig

from .modeling_dual_reranker import DualReranker, DualRerankerConfig
from .modeling_pair_ranker import PairRanker, PairRankerConfig
from .modeling_summareranker import SummaReranker, SummaRerankerConfig

__all__ = ["RANKER_MODEL_TYPES"]

#: ``model_type`` → (config class, model class) of every ranker type this package defines.
RANKER_MODEL_TYPES = {
    PairRankerConfig.model_type: (PairRankerConfig, PairRanker),
    SummaRerankerConfig.model_type: (SummaRerankerConfig, SummaReranker),
    DualRerankerConfig.model_type: (DualRerankerConfig, DualReranker),
}
for _model_type, (_config_class, _model_class) in RANKER_MODEL_TYPES.items():
    AutoConfig.register(_model_type, _config_class, exist_ok=True)
