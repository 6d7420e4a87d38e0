"""Load every published PairRM layout from a local folder or a Hub id, and convert legacy ones.

Layouts (detected from ``config.json``):

* ``hf`` — ``llm-blender/PairRM-hf``, ``mightbe/Better-PairRM``: a ``DebertaV2Config`` with the PairRM fields,
  ``model.safetensors``, tokenizer files.
* ``legacy`` — ``llm-blender/PairRM`` and ``llm-blender/pair-ranker``: upstream's ``RankerConfig`` dump
  (``ranker_type``, lengths; pair-ranker spells them ``source_max_length``/``candidate_max_length``), weights in
  ``model.safetensors`` or ``pytorch_model.bin``, tokenizer files with the prefix tokens added. The backbone
  config is rebuilt from the weight shapes; the head count, which weights cannot show, comes from
  ``backbone_config`` or else from the ``config.json`` of the backbone named by ``model_name`` (as upstream
  resolved it): a local folder, the Hugging Face cache, the DeBERTa-v3 family table, or the Hub. Only that small
  config file is ever fetched, never the backbone's weights.
* ``ranker`` — the other LLM-Blender rankers saved by this package (``PairRanker`` on any encoder,
  ``SummaReranker``, ``DualReranker``): ``config.json`` with one of our model types (``pairrm-pair-ranker``,
  ``pairrm-summareranker``, ``pairrm-dual-reranker``), ``model.safetensors``, the encoder's fast tokenizer with the
  prefix tokens added. Loaded with :class:`~pairrm_hf.AutoModelForPairwiseRanking`.

Weights are read with safetensors, or ``torch.load(weights_only=True)`` for ``.bin`` files; nothing shipped with
a checkpoint is executed (``training_args.bin`` is never read).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DebertaV2Config, PreTrainedTokenizerBase

from ..models.model_types import RANKER_MODEL_TYPES
from ..models.modeling_pairrm import PAIRRM_CONFIG_DEFAULTS, DebertaV2PairRM
from ..tokenization.tokenization_pairrm import PREFIX_TOKENS, PairLengths, load_pairrm_tokenizer, load_ranker_tokenizer
from ..utils.devices import resolve_dtype

__all__ = [
    "LoadedPairRM",
    "resolve_checkpoint",
    "detect_layout",
    "load_pairrm",
    "convert_legacy_checkpoint",
    "save_pairrm",
    "read_config",
    "unsafe_weights_error",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "llm-blender/PairRM-hf"

_CHECKPOINT_FILES = [
    "config.json",
    "ranker_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "pytorch_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "spm.model",
    "added_tokens.json",
    "special_tokens_map.json",
]

# DeBERTa-v3 shapes (hidden, layers, heads, intermediate); heads cannot be read off the weights.
_DEBERTA_V3 = {
    "microsoft/deberta-v3-large": (1024, 24, 16, 4096),
    "microsoft/deberta-v3-base": (768, 12, 12, 3072),
    "microsoft/deberta-v3-small": (768, 6, 12, 3072),
    "microsoft/deberta-v3-xsmall": (384, 12, 6, 1536),
}
# Keys a legacy checkpoint may carry that no current module has (non-persistent buffers since transformers 4.31).
_IGNORABLE_KEYS = re.compile(r"^pretrained_model\.embeddings\.position_ids$")


@dataclass
class LoadedPairRM:
    """What :func:`load_pairrm` returns: the model, its tokenizer, the row budgets and the detected layout."""

    model: DebertaV2PairRM
    tokenizer: PreTrainedTokenizerBase
    lengths: PairLengths
    layout: str
    folder: str


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
) -> str:
    """A local folder for ``name_or_path``: the folder itself, or a snapshot of the Hub repo's model files."""
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise ValueError(f"model path {path!r} is a file; pass the checkpoint folder")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            path, revision=revision, token=token, cache_dir=cache_dir, allow_patterns=_CHECKPOINT_FILES
        )
    except Exception as err:  # offline, unknown repo, bad id: one clear message
        raise OSError(
            f"could not find {path!r}: not a local folder, and fetching it from the Hugging Face Hub failed "
            f"({type(err).__name__}: {err})"
        ) from err


_REDOWNLOAD = "download the checkpoint again (for a Hub id: delete it from the Hugging Face cache first)"


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); the file is damaged or "
            f"was edited by hand: fix it, or {_REDOWNLOAD}"
        ) from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}), so not a JSON config; {_REDOWNLOAD}") from None


def read_config(path: str) -> dict:
    """A checkpoint's JSON config as a dict; ``ValueError`` naming the file when it is no JSON object."""
    config = _read_json(path)
    if not isinstance(config, dict):
        raise ValueError(
            f"{path}: holds a JSON {type(config).__name__}, not an object of config fields; the file is damaged or "
            f"was edited by hand: fix it, or {_REDOWNLOAD}"
        )
    return config


def _length(config: dict, key: str, default: int, path: str) -> int:
    """A row budget from a config (``source_max_length`` …): a positive integer, else ``ValueError`` naming it."""
    value = config.get(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1 or (isinstance(value, float) and value != number):
        raise ValueError(f"{path}: {key} must be a positive integer (a token budget), got {value!r}")
    return number


def _load_tokenizer(folder: str, loader):
    """``loader(folder)``; when it fails, a damaged tokenizer JSON file is named instead of a bare parser error."""
    try:
        return loader(folder)
    except Exception as err:  # the tokenizers library and transformers raise many types for a broken file
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                _read_json(path)  # raises, naming the file, when it is not JSON
        if isinstance(err, ValueError):
            raise
        raise ValueError(
            f"cannot load the tokenizer in {folder!r} ({type(err).__name__}: {err}); {_REDOWNLOAD}"
        ) from err


def detect_layout(folder: str) -> str:
    """``"hf"``, ``"legacy"`` or ``"ranker"``; ``ValueError`` for a folder that is none of them (naming what is missing)."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"{folder!r} is not a PairRM checkpoint: it has no config.json")
    config = read_config(config_path)
    if "ranker_type" in config:
        if config["ranker_type"] != "pairranker":
            raise ValueError(f"{folder!r} holds a {config['ranker_type']!r} ranker; only 'pairranker' is supported")
        return "legacy"
    if config.get("model_type") == "deberta-v2":
        return "hf"
    if config.get("model_type") in RANKER_MODEL_TYPES:
        return "ranker"
    raise ValueError(
        f"{folder!r} is not a PairRM checkpoint: config.json has model_type {config.get('model_type')!r} "
        "and no 'ranker_type' (expected a deberta-v2 PairRM, an llm-blender ranker config or one of "
        "'pairrm-pair-ranker', 'pairrm-summareranker', 'pairrm-dual-reranker')"
    )


def _weights_file(folder: str) -> str:
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise ValueError(f"{folder!r} has no weights: expected 'model.safetensors' or 'pytorch_model.bin'")


def _check_safetensors(path: str) -> None:
    """Read a safetensors file's header (cheap; no tensor data) and name the file when it is damaged."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            f.keys()
    except Exception as err:  # SafetensorError, OSError: a truncated or overwritten download
        raise ValueError(
            f"{path}: not a valid safetensors file ({err}); it is probably an incomplete or damaged download: "
            f"{_REDOWNLOAD}"
        ) from None


#: Words of torch's advice that must never reach a user: each would run the code a pickle may carry.
_UNSAFE_ADVICE = re.compile(r"weights_only|safe_globals|add_safe_globals|trust the source|Weights only load failed")


def unsafe_weights_error(path: str, err: pickle.UnpicklingError) -> ValueError:
    """The ``ValueError`` for a ``.bin`` file that ``torch.load(weights_only=True)`` refused, without torch's advice
    to set ``weights_only=False`` or allow-list globals (that would run whatever code the pickle carries).

    A refused global (a class or function the file would call) means the file carries Python objects besides
    tensors: use a safetensors copy. Anything else is a damaged file: download it again.
    """
    text = str(err)
    lines = [ln.strip() for ln in text.split("WeightsUnpickler error:", 1)[-1].splitlines()]
    reason = next((ln for ln in lines if ln and not _UNSAFE_ADVICE.search(ln)), "bad pickle data")
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found or re.search(r"global|reduce|function|class", reason, re.IGNORECASE):
        what = f"it would call {found.group(1)}" if found else reason
        return ValueError(
            f"{path}: holds Python objects besides tensors ({what}); they are not loaded, for safety (nothing in "
            "the file was run). Use a safetensors copy of this checkpoint (model.safetensors), or re-save its "
            "weights as plain tensors from a trusted environment"
        )
    return ValueError(f"{path}: not a readable PyTorch weights file ({reason}); it is probably damaged: {_REDOWNLOAD}")


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        _check_safetensors(path)
        return load_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise unsafe_weights_error(path, err) from None
    except (RuntimeError, EOFError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"{path}: not a readable PyTorch weights file ({first.split('. ')[0]}); it is probably an incomplete or "
            f"damaged download: {_REDOWNLOAD}"
        ) from None


def _backbone_config_dict(backbone_config: Any) -> dict | None:
    if backbone_config is None:
        return None
    if isinstance(backbone_config, DebertaV2Config):
        return backbone_config.to_dict()
    if isinstance(backbone_config, dict):
        return dict(backbone_config)
    path = os.fspath(backbone_config)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    return _read_json(path)


def _fits(config: dict, hidden: int, layers: int) -> bool:
    return config.get("hidden_size") == hidden and config.get("num_hidden_layers") == layers


def _shape_of(config: dict) -> str:
    return f"hidden {config.get('hidden_size')}, {config.get('num_hidden_layers')} layers"


def _cached_config(name: str, cache_dirs: list[str | None]) -> str | None:
    """The path of ``name``'s ``config.json`` in a local Hugging Face cache, or None (never goes online)."""
    from huggingface_hub import try_to_load_from_cache

    for cache_dir in cache_dirs:
        try:
            path = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir)
        except Exception:  # not a valid repo id: it cannot be in a cache
            return None
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _model_name_config(ranker: dict, hidden: int, layers: int, token: str | bool | None) -> dict:
    """The backbone config named by a legacy ranker config's ``model_name``, checked against the weight shapes.

    Tried in order: ``model_name`` as a local folder; its ``config.json`` in the Hugging Face cache (the default
    cache, then the ranker config's ``cache_dir``); the DeBERTa-v3 table (the same values the Hub serves for those
    ids, so no request is made for them); the Hub. A config whose hidden size or depth disagrees with the weights
    is skipped. ``ValueError`` naming each attempt when none fits.
    """
    name = ranker.get("model_name")
    tried: list[str] = []
    if isinstance(name, str) and name:
        found: list[tuple[str, str]] = []
        if os.path.isdir(name) and os.path.isfile(os.path.join(name, "config.json")):
            found.append(("local folder", os.path.join(name, "config.json")))
        cache_dirs = [None] + ([ranker["cache_dir"]] if isinstance(ranker.get("cache_dir"), str) else [])
        if not found and (path := _cached_config(name, cache_dirs)) is not None:
            found.append(("Hugging Face cache", path))
        for where, path in found:
            config = _read_json(path)
            if _fits(config, hidden, layers):
                return config
            tried.append(f"{where} {path} ({_shape_of(config)})")
        shape = _DEBERTA_V3.get(name)
        if shape is not None:
            if shape[0] == hidden and shape[1] == layers:
                return {"num_attention_heads": shape[2]}
            tried.append(f"the DeBERTa-v3 table (hidden {shape[0]}, {shape[1]} layers)")
        elif not found:
            config = _hub_config(name, token, tried)
            if config is not None and _fits(config, hidden, layers):
                return config
            if config is not None:
                tried.append(f"the Hub ({_shape_of(config)})")
    raise ValueError(
        f"cannot tell the attention head count of this checkpoint (hidden {hidden}, {layers} layers) from its "
        f"model_name {name!r} (tried: {'; '.join(tried) or 'nothing'}); pass backbone_config= "
        "(a DeBERTa config, dict or folder)"
    )


def _hub_config(name: str, token: str | bool | None, tried: list[str]) -> dict | None:
    """``name``'s ``config.json`` from the Hub, or None (offline, unknown repo: noted in ``tried``)."""
    from huggingface_hub import hf_hub_download

    try:
        return _read_json(hf_hub_download(name, "config.json", token=token))
    except Exception as err:  # offline, not a repo id, no such repo: fall through to the clear error
        tried.append(f"the Hub ({type(err).__name__})")
        return None


def _legacy_config(
    state: dict[str, torch.Tensor], ranker: dict, tokenizer, backbone_config: Any, hub_token: str | bool | None = None
) -> DebertaV2Config:
    """Rebuild the DeBERTa-v2 config of a legacy checkpoint from its weight shapes."""
    prefix = "pretrained_model."
    vocab, hidden = state[prefix + "embeddings.word_embeddings.weight"].shape
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"pretrained_model\.encoder\.layer\.(\d+)\.", k)))
    intermediate = state[prefix + "encoder.layer.0.intermediate.dense.weight"].shape[0]
    rel = state.get(prefix + "encoder.rel_embeddings.weight")
    known = _backbone_config_dict(backbone_config)
    if known is None:
        known = _model_name_config(ranker, hidden, layers, hub_token)
    fields = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": intermediate,
        "num_attention_heads": known.get("num_attention_heads"),
        "hidden_act": known.get("hidden_act", "gelu"),
        "layer_norm_eps": known.get("layer_norm_eps", 1e-7),
        "max_position_embeddings": known.get("max_position_embeddings", 512),
        "relative_attention": rel is not None,
        "max_relative_positions": known.get("max_relative_positions", -1),
        "position_buckets": rel.shape[0] // 2 if rel is not None else -1,
        "norm_rel_ebd": "layer_norm" if prefix + "encoder.LayerNorm.weight" in state else "none",
        "share_att_key": not any("pos_key_proj" in k for k in state),
        "pos_att_type": known.get("pos_att_type", ["p2c", "c2p"]),
        "position_biased_input": prefix + "embeddings.position_embeddings.weight" in state,
        "type_vocab_size": 0
        if prefix + "embeddings.token_type_embeddings.weight" not in state
        else state[prefix + "embeddings.token_type_embeddings.weight"].shape[0],
        "pad_token_id": tokenizer.pad_token_id or 0,
        "n_tasks": state["head_layer.4.weight"].shape[0],
        "drop_out": ranker.get("drop_out", 0.05),
    }
    vocab_ids = tokenizer.get_vocab()
    for field, token in zip(
        ("source_prefix_id", "cand1_prefix_id", "cand2_prefix_id", "cand_prefix_id"), PREFIX_TOKENS
    ):
        fields[field] = vocab_ids.get(token, PAIRRM_CONFIG_DEFAULTS[field])
    config = DebertaV2Config(**fields)
    config.architectures = ["DebertaV2PairRM"]
    return config


def _legacy_lengths(ranker: dict, path: str) -> PairLengths:
    # pair-ranker's config spells the keys with underscores; upstream's loader silently read them as None.
    keys = [
        next((k for k in (f"{part}_maxlength", f"{part}_max_length") if ranker.get(k)), None)
        for part in ("source", "candidate")
    ]
    if None in keys:
        return PairLengths()
    return PairLengths(*(_length(ranker, key, 0, path) for key in keys))


def _load_legacy(
    folder: str, backbone_config: Any, token: str | bool | None = None
) -> tuple[DebertaV2PairRM, PreTrainedTokenizerBase, PairLengths]:
    ranker = read_config(os.path.join(folder, "config.json"))
    lengths = _legacy_lengths(ranker, os.path.join(folder, "config.json"))
    tokenizer = _load_tokenizer(folder, load_pairrm_tokenizer)
    state = _read_state_dict(_weights_file(folder))
    config = _legacy_config(state, ranker, tokenizer, backbone_config, token)
    model = DebertaV2PairRM(config)
    ignored = [k for k in state if _IGNORABLE_KEYS.match(k)]
    for key in ignored:
        state.pop(key)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ValueError(
            f"checkpoint in {folder!r} lacks weights {result.missing_keys[:5]} (of {len(result.missing_keys)})"
        )
    if result.unexpected_keys:
        logger.warning(
            "ignored %d unexpected weights in %s: %s", len(result.unexpected_keys), folder, result.unexpected_keys[:5]
        )
    model.eval()
    return model, tokenizer, lengths


def _mismatch_error(folder: str, weights: str | None, model_class, config, err: Exception) -> ValueError:
    """A clear error for weights whose shapes disagree with ``config.json`` (instead of transformers' advice to
    ``ignore_mismatched_sizes``, which would load random weights in their place)."""
    shown = ""
    if weights is not None and weights.endswith(".safetensors"):
        from safetensors import safe_open

        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}
        with safe_open(weights, framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        wrong = [f"{k} {found[k]} (config: {expected[k]})" for k in found if k in expected and found[k] != expected[k]]
        shown = f": {'; '.join(wrong[:3])}" + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "") if wrong else ""
    return ValueError(
        f"{weights or folder}: weights of the wrong shape for its config.json{shown}; the weights and config.json "
        f"come from different checkpoints, or one was edited: {_REDOWNLOAD}"
    )


def _from_pretrained(model_class, folder: str, weights: str | None, **kwargs):
    """``model_class.from_pretrained(folder, **kwargs)`` with this module's errors for refused pickles and
    mismatched shapes."""
    try:
        return model_class.from_pretrained(folder, **kwargs)
    except pickle.UnpicklingError as err:
        raise unsafe_weights_error(weights or os.path.join(folder, "pytorch_model.bin"), err) from None
    except RuntimeError as err:
        if "ignore_mismatched_sizes" not in str(err):
            raise
        config = model_class.config_class.from_pretrained(folder)
        raise _mismatch_error(folder, weights, model_class, config, err) from None


def _load_hf(folder: str, dtype: Any) -> tuple[DebertaV2PairRM, PreTrainedTokenizerBase, PairLengths]:
    config_path = os.path.join(folder, "config.json")
    config = read_config(config_path)
    weights = None
    if not os.path.isfile(os.path.join(folder, "model.safetensors.index.json")):
        weights = _weights_file(folder)  # a clear error naming the expected files, before transformers' own
        if weights.endswith(".safetensors"):
            _check_safetensors(weights)
    if "source_prefix_id" not in config:
        raise ValueError(
            f"{folder!r} holds a plain DeBERTa-v2 model, not PairRM (config.json has no 'source_prefix_id'); "
            "to start training from a backbone use pairrm_hf.init_pairrm_from_backbone"
        )
    lengths = PairLengths(
        _length(config, "source_max_length", PairLengths.source_max_length, config_path),
        _length(config, "candidate_max_length", PairLengths.candidate_max_length, config_path),
    )
    tokenizer = _load_tokenizer(folder, load_pairrm_tokenizer)
    model, info = _from_pretrained(
        DebertaV2PairRM,
        folder,
        weights,
        dtype=dtype if dtype is not None else torch.float32,
        output_loading_info=True,
    )
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ValueError(f"checkpoint in {folder!r} lacks weights {missing[:5]} (of {len(missing)})")
    return model, tokenizer, lengths


def _load_ranker(folder: str, dtype: Any) -> tuple[Any, PreTrainedTokenizerBase, PairLengths]:
    """A ``PairRanker``/``SummaReranker``/``DualReranker`` folder: safetensors weights only, no remote code."""
    if not os.path.isfile(os.path.join(folder, "model.safetensors.index.json")):
        path = _weights_file(folder)
        if not path.endswith(".safetensors"):
            raise ValueError(f"{folder!r}: ranker checkpoints are read from model.safetensors only")
    tokenizer = _load_tokenizer(folder, load_ranker_tokenizer)
    model_type = read_config(os.path.join(folder, "config.json")).get("model_type")
    weights = os.path.join(folder, "model.safetensors")
    model, info = _from_pretrained(
        RANKER_MODEL_TYPES[model_type][1],
        folder,
        weights if os.path.isfile(weights) else None,
        dtype=dtype if dtype is not None else torch.float32,
        output_loading_info=True,
        use_safetensors=True,
    )
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ValueError(f"checkpoint in {folder!r} lacks weights {missing[:5]} (of {len(missing)})")
    config = model.config
    return model, tokenizer, PairLengths(int(config.source_max_length), int(config.candidate_max_length))


def load_pairrm(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    backbone_config: Any = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
) -> LoadedPairRM:
    """Load a PairRM checkpoint in any published layout (or a ranker of :mod:`pairrm_hf.checkpoints.auto`'s model types), with its
    tokenizer and row budgets.

    Args:
        name_or_path: a local folder or a Hub repo id (default ``llm-blender/PairRM-hf``).
        dtype: weights dtype for the HF-native layout (legacy checkpoints load in fp32); cast later as needed.
        backbone_config: for legacy checkpoints, the backbone's config (a ``DebertaV2Config``, a dict or a folder
            with its ``config.json``); by default it is read from the folder, cache or Hub repo that the checkpoint's
            ``model_name`` names (see the module docstring).
        revision: passed to the Hub download.
        token: passed to the Hub download.
        cache_dir: passed to the Hub download.
    """
    folder = resolve_checkpoint(name_or_path, revision=revision, token=token, cache_dir=cache_dir)
    layout = detect_layout(folder)
    if layout == "legacy":
        model, tokenizer, lengths = _load_legacy(folder, backbone_config, token)
    elif layout == "ranker":
        model, tokenizer, lengths = _load_ranker(folder, resolve_dtype(dtype))
    else:
        model, tokenizer, lengths = _load_hf(folder, resolve_dtype(dtype))
    vocab = tokenizer.get_vocab()
    expected = [vocab[t] for t in PREFIX_TOKENS[:3]]
    if list(model.prefix_ids) != expected:
        raise ValueError(
            f"model prefix ids {list(model.prefix_ids)} disagree with the tokenizer's {expected} in {folder!r}"
        )
    return LoadedPairRM(model, tokenizer, lengths, layout, folder)


def convert_legacy_checkpoint(
    source: str | os.PathLike, destination: str | os.PathLike, *, backbone_config: Any = None
) -> str:
    """Write a legacy checkpoint (``llm-blender/PairRM``, ``pair-ranker``) in the HF-native layout.

    The destination loads with ``DebertaV2PairRM.from_pretrained`` and :func:`load_pairrm`; its ``config.json``
    records the row budgets as ``source_max_length``/``candidate_max_length``. Returns the destination path.
    """
    folder = resolve_checkpoint(source)
    if detect_layout(folder) != "legacy":
        raise ValueError(f"{folder!r} is already in the HF-native layout")
    model, tokenizer, lengths = _load_legacy(folder, backbone_config)
    destination = save_pairrm(model, tokenizer, destination, lengths, spm_source=folder)
    return destination


def save_pairrm(
    model: Any,
    tokenizer: Any,
    output_dir: str | os.PathLike,
    lengths: PairLengths | None = None,
    *,
    spm_source: str | os.PathLike | None = None,
    push_to_hub: bool | str = False,
    model_card: Any = None,
    **save_kwargs: Any,
) -> str:
    """The one checkpoint writer: the HF-native layout that :func:`load_pairrm` / ``PairRM.from_pretrained`` load.

    Writes the weights (safetensors), the config (with the row budgets when ``lengths`` is given), the tokenizer
    (its SentencePiece normalizer lives in ``tokenizer.json``) and ``spm.model`` when one is known (from
    ``spm_source``, the model's origin or the tokenizer's ``vocab_file``), so the NFKC normalizer can always be
    rebuilt. ``save_kwargs`` go to the model's ``save_pretrained`` (e.g. ``state_dict``). Returns the folder.
    Used by training checkpoints, :func:`convert_legacy_checkpoint` and the pipeline's ``save_pretrained``.

    ``push_to_hub``: a Hub repo id (``"owner/name"``) to upload the folder to after saving; the folder then gets a
    model card (``README.md``, from ``model_card``, a :class:`~pairrm_hf.checkpoints.model_card.ModelCardInfo`)
    unless it has one. ``model_card`` alone writes the card without uploading.
    """
    output_dir = os.fspath(output_dir)
    if os.path.isfile(output_dir):
        raise ValueError(f"output_dir {output_dir!r} is a file; pass a folder")
    os.makedirs(output_dir, exist_ok=True)
    if lengths is not None:
        model.config.source_max_length = lengths.source_max_length
        model.config.candidate_max_length = lengths.candidate_max_length
    model.save_pretrained(output_dir, **save_kwargs)
    tokenizer.save_pretrained(output_dir)
    candidates = [
        os.path.join(os.fspath(spm_source), "spm.model") if spm_source is not None else None,
        getattr(model, "_pairrm_spm_file", None),
        getattr(tokenizer, "vocab_file", None),
    ]
    target = os.path.join(output_dir, "spm.model")
    for spm in candidates:
        if spm and os.path.isfile(spm) and spm.endswith(".model"):
            if os.path.abspath(spm) != os.path.abspath(target):
                shutil.copyfile(spm, target)
            break
    if push_to_hub is True:
        raise ValueError("push_to_hub takes the repo id to upload to ('owner/name'), not True")
    if push_to_hub or model_card is not None:
        from .model_card import ModelCardInfo, write_model_card

        info = (model_card or ModelCardInfo()).with_defaults(
            repo_id=push_to_hub or None, base_model=getattr(model.config, "_name_or_path", None)
        )
        kind = "pairrm" if isinstance(model, DebertaV2PairRM) else "ranker"
        if model_card is not None or not os.path.isfile(os.path.join(output_dir, "README.md")):
            write_model_card(output_dir, kind=kind, info=info)
    if push_to_hub:
        from .hub import push_folder

        push_folder(output_dir, push_to_hub)
    return output_dir
