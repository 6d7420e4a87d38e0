"""transformers pipelines of pairrm-hf, registered when ``pairrm_hf`` is imported.

* ``pipeline("pairwise-ranking", model="llm-blender/PairRM-hf")`` → :class:`PairwiseRankingPipeline`
* ``pipeline("generative-fusion", model="llm-blender/gen_fuser_3b")`` (or a chat causal LM) →
  :class:`GenerativeFusionPipeline`
"""

from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
from transformers.pipelines import PIPELINE_REGISTRY

from ..checkpoints.auto import AutoModelForPairwiseRanking
from ..checkpoints.loading import DEFAULT_MODEL
from .generative_fusion import GenerativeFusionPipeline
from .pairwise_ranking import PairwiseRankingPipeline

__all__ = ["GenerativeFusionPipeline", "PairwiseRankingPipeline", "register_pipelines"]

DEFAULT_FUSER = "llm-blender/gen_fuser_3b"


def register_pipelines() -> None:
    """Register both tasks with transformers' ``PIPELINE_REGISTRY`` (idempotent)."""
    # v5 reads defaults as {"model": (repo, revision)} (the v4 {"pt": ...} form breaks pipeline(task)).
    # The auto class loads the HF-native and the legacy layouts (as PairRM.from_pretrained does).
    PIPELINE_REGISTRY.register_pipeline(
        "pairwise-ranking",
        pipeline_class=PairwiseRankingPipeline,
        pt_model=AutoModelForPairwiseRanking,
        default={"model": (DEFAULT_MODEL, "main")},
        type="text",
    )
    PIPELINE_REGISTRY.register_pipeline(
        "generative-fusion",
        pipeline_class=GenerativeFusionPipeline,
        pt_model=(AutoModelForSeq2SeqLM, AutoModelForCausalLM),
        default={"model": (DEFAULT_FUSER, "main")},
        type="text",
    )


if "pairwise-ranking" not in PIPELINE_REGISTRY.get_supported_tasks():
    register_pipelines()
