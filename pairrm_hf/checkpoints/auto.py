"""`AutoModelForPairwiseRanking`: an auto class for PairRM checkpoints that leaves transformers' own mappings alone.

``AutoModel.register(DebertaV2Config, DebertaV2PairRM, exist_ok=True)`` would make *every* DeBERTa-v2 load in the
process return PairRM; this class has its own mapping instead, so ``AutoModel`` keeps returning ``DebertaV2Model``.
It also reads the legacy layouts (``llm-blender/PairRM``, ``llm-blender/pair-ranker``) through
:func:`pairrm_hf.checkpoints.loading.load_pairrm`, so the ``pairwise-ranking`` pipeline, which loads through it, takes every
folder ``PairRM.from_pretrained`` takes.

>>> AutoModelForPairwiseRanking.from_pretrained("llm-blender/PairRM-hf")   # doctest: +SKIP
DebertaV2PairRM(...)
"""

from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict
from typing import Any

from transformers import DebertaV2Config
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from ..models.model_types import RANKER_MODEL_TYPES
from ..models.modeling_pairrm import DebertaV2PairRM
from ..utils.devices import resolve_dtype
from .loading import load_pairrm, read_config, resolve_checkpoint, unsafe_weights_error

__all__ = ["AutoModelForPairwiseRanking", "MODEL_FOR_PAIRWISE_RANKING_MAPPING"]

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

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any):
        """Load a PairRM model from a folder or Hub id in the HF-native or a legacy layout.

        Legacy checkpoints are rebuilt by :func:`pairrm_hf.checkpoints.loading.load_pairrm` (``backbone_config=`` is passed
        on); their row budgets go into the config as ``source_max_length``/``candidate_max_length`` and
        ``name_or_path`` is the checkpoint folder, so tokenizer and pipeline settings follow the checkpoint.
        """
        folder = _legacy_folder(pretrained_model_name_or_path, kwargs)
        backbone_config = kwargs.pop("backbone_config", None)
        if folder is None:
            try:
                return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
            except pickle.UnpicklingError as err:  # never pass on torch's advice to load the pickle unsafely
                where = os.fspath(pretrained_model_name_or_path)
                path = os.path.join(where, "pytorch_model.bin") if os.path.isdir(where) else where
                raise unsafe_weights_error(path, err) from None

        loaded = load_pairrm(folder, backbone_config=backbone_config)
        model = loaded.model
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        dtype = None if dtype in (None, "auto") else resolve_dtype(dtype)
        if dtype is not None:
            model = model.to(dtype)
        model.config.source_max_length = loaded.lengths.source_max_length
        model.config.candidate_max_length = loaded.lengths.candidate_max_length
        model.config._name_or_path = folder
        return model


def _legacy_folder(name_or_path: str | os.PathLike, kwargs: dict) -> str | None:
    """The local folder of a legacy-layout checkpoint (``config.json`` with ``ranker_type``), else None.

    A Hub id is looked up by its ``config.json`` only (from the cache when offline); when that fails the normal
    loader runs and reports the problem.
    """
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
        if not os.path.isfile(config_path):
            return None
        return path if "ranker_type" in read_config(config_path) else None  # a damaged config.json is named
    try:
        from huggingface_hub import hf_hub_download

        config_path = hf_hub_download(
            path,
            "config.json",
            revision=kwargs.get("revision"),
            token=kwargs.get("token"),
            cache_dir=kwargs.get("cache_dir"),
        )
    except Exception:  # not a repo, offline without a cache: let transformers' loader say what is wrong
        return None
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "ranker_type" not in config:
        return None
    return resolve_checkpoint(
        path, revision=kwargs.get("revision"), token=kwargs.get("token"), cache_dir=kwargs.get("cache_dir")
    )


# exist_ok=True is required: for config classes defined inside transformers the mapping silently skips
# registration otherwise (transformers-notes §2).
AutoModelForPairwiseRanking.register(DebertaV2Config, DebertaV2PairRM, exist_ok=True)

for _config_class, _model_class in RANKER_MODEL_TYPES.values():
    AutoModelForPairwiseRanking.register(_config_class, _model_class, exist_ok=True)
