"""The OpenVINO CPU backend: PairRM's DeBERTa backbone converted once to an OpenVINO model, run by the one engine.

``PairRM.from_pretrained(..., backend="openvino")`` (extra ``pairrm-hf[openvino]``) keeps the torch model for the
per-row head, the prefix checks and fp32 reference runs, and swaps in an :class:`OpenVINOBackbone` for the
backbone's forward pass. Everything else (tokenize once, dedup, length-sorted batches, the non-finite policy,
progress) is the engine's, unchanged.

* **Default.** ``backend=None`` reads ``$PAIRRM_BACKEND``, else ``"auto"``: :func:`auto_backend` picks OpenVINO for
  a fp32 :class:`~pairrm_hf.DebertaV2PairRM` on the CPU when openvino imports (and no ``compile``, autocast or
  eager attention was asked for), torch otherwise, and never raises where OpenVINO would refuse.
* **Conversion.** ``openvino.convert_model`` traces the backbone with batch and length left dynamic, so one converted
  model serves every batch shape. The attention traced is :data:`CONVERTED_ATTENTION`: ``"export"``
  (:mod:`pairrm_hf.models.export_attention`, whole tensors, no data-dependent branch, shared gather indices and
  position tables cut to the row's length, attention scored a head group at a time) by default; ``"eager"``
  (transformers' module) for comparison.
* **Requests.** A batch goes to OpenVINO in requests bounded by a score budget and by :data:`GATHER_SAFE_ELEMENTS`
  (OpenVINO's dynamic-shape ``Gather`` is exact only up to 2^24 output elements); a row too long for the second runs
  on the torch backbone (:attr:`OpenVINOBackbone.longest_row`).
* **Cache.** The converted model (fp32 IR, or weight-compressed int8) is written once, atomically, under
  ``$HF_HOME/pairrm_hf/openvino/<key>`` (``PAIRRM_OPENVINO_CACHE`` overrides the root) together with OpenVINO's
  compiled-blob cache, so a second process skips both conversion and compilation. ``<key>`` hashes the config
  (less the fields that only say where it was saved), the weights (named by their checkpoint files while torch's
  version counters show them unchanged since loading, else by a CRC of every tensor's bytes), the precision and
  the OpenVINO/torch versions and the converted graph's version (:data:`GRAPH_VERSIONS`): a changed checkpoint or
  graph gets a new entry, never a stale one.
* **Memory.** Once compiled, the torch backbone's parameters are released to the meta device (written once to the
  entry as ``torch_backbone.safetensors``) and read back only when a torch forward pass needs them.
* **Precision.** fp32 is compiled with ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO would otherwise pick bf16 on CPUs
  that have it). ``dtype="bfloat16"`` (or ``autocast_dtype="bfloat16"``) compiles the same fp32 model with
  ``INFERENCE_PRECISION_HINT=bf16``: the weights stay fp32 in the cache and on the torch side, OpenVINO computes in
  bf16 on CPUs with native bf16 (AVX512-BF16, AMX) and in f32 elsewhere, where emulated bf16 would only be slower
  (said once in the log; :attr:`OpenVINOBackbone.inference_precision` tells which). ``quantize="int8"`` compresses
  the weights of the linear layers to int8 with NNCF (``nncf.compress_weights``, extra ``[openvino]``), and
  combines with bf16 for the layers it leaves in floating point; logits move, so check decisions with
  ``check_precision``.
* **Threads.** ``INFERENCE_NUM_THREADS`` follows ``torch.get_num_threads()``, so both backends use the same cores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from ..models.attention import PairRMSelfAttention, default_attention, set_attention_implementation
from ..models.modeling_pairrm import DebertaV2PairRM
from ..utils.devices import resolve_dtype

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "bf16_may_run_on_openvino",
    "engine_device",
    "gather_heads",
    "longest_exact_row",
    "INFERENCE_PRECISIONS",
    "CONVERTED_ATTENTION",
    "GATHER_SAFE_ELEMENTS",
    "GRAPH_VERSIONS",
    "OpenVINOBackbone",
    "auto_backend",
    "check_backend",
    "load_openvino_backbone",
    "log_backend_choice",
    "openvino_available",
    "openvino_cache_root",
    "openvino_inference_precision",
    "record_checkpoint_identity",
    "release_backbone_weights",
    "requested_backend",
    "restore_backbone_weights",
]

logger = logging.getLogger(__name__)

#: Accepted values of ``backend=``: ``"auto"`` (the default: OpenVINO where it applies, else torch), ``"torch"`` or
#: ``"openvino"`` (CPU only, extra ``[openvino]``).
BACKENDS = ("auto", "torch", "openvino")

#: The environment variable that sets the backend when ``backend=None`` (e.g. ``PAIRRM_BACKEND=torch``).
BACKEND_ENV = "PAIRRM_BACKEND"

#: The attention implementation traced when converting: ``"export"`` (the default) or ``"eager"`` (transformers'
#: module, the graph converted before; kept selectable for comparisons such as ``benchmarks/bench_backends.py``).
CONVERTED_ATTENTION = "export"

#: The version of each convertible graph, part of the cache key: bump it when the traced forward changes, so entries
#: converted from the older graph are never reused.
GRAPH_VERSIONS = {"eager": "eager-1", "export": "export-2"}

#: Most output elements one OpenVINO ``Gather`` may produce. The CPU plugin's JIT ``Gather`` for dynamic shapes
#: (openvino 2026.4) computes each thread's start position in float32, exact only up to 2^24: a thread starting past it
#: gathers some elements from the wrong head and reads past its input, which gave wrong values near head boundaries
#: and the segfaults on 2048-token rows (``benchmarks/RESULTS.md``, Speed III part 8). The export graph's largest
#: Gathers are one head group's position terms, ``rows × heads_per_group × L²`` elements; requests are sized to keep
#: them within this, and a row too long for it runs on the torch backbone.
GATHER_SAFE_ELEMENTS = 1 << 24

#: OpenVINO's floating-point inference precisions on the CPU: ``"f32"`` (the default; within ~1e-6 of torch fp32)
#: and ``"bf16"`` (what ``dtype``/``autocast_dtype`` ``bfloat16`` ask for).
INFERENCE_PRECISIONS = ("f32", "bf16")

_LOGGED_CHOICES: set[tuple[str, str]] = set()


def openvino_available(quantize: str | None = None) -> bool:
    """Whether the ``openvino`` package imports (and ``nncf`` too when ``quantize="int8"``)."""
    try:
        import openvino  # noqa: F401

        if quantize == "int8":
            import nncf  # noqa: F401
    except ImportError:
        return False
    return True


def requested_backend(backend: str | None) -> str:
    """``backend`` checked against :data:`BACKENDS`; ``None`` reads ``$PAIRRM_BACKEND``, else ``"auto"``."""
    if backend is None:
        value = os.environ.get(BACKEND_ENV, "").strip()
        if not value:
            return "auto"
        if value.lower() not in BACKENDS:
            raise ValueError(f"environment variable {BACKEND_ENV} must be one of {BACKENDS} (or unset), got {value!r}")
        return value.lower()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _as_device(device: str | int | torch.device | None) -> torch.device | None:
    if device is None:
        return None
    if isinstance(device, int):
        return torch.device("cpu") if device < 0 else torch.device("cuda", device)
    return torch.device(device)


def check_backend(
    backend: str | None,
    *,
    device: str | int | torch.device | None,
    dtype,
    compile: bool,  # noqa: A002 - the engine's option name
    autocast_dtype,
) -> str:
    """Validate ``backend`` against the other engine options before anything is loaded or converted; returns it.

    ``None`` is read from ``$PAIRRM_BACKEND`` (else ``"auto"``). ``"auto"`` is returned as it is (it never refuses a
    combination: :func:`auto_backend` picks torch where OpenVINO does not apply); ``"openvino"`` raises for
    options it cannot honour.
    """
    backend = requested_backend(backend)
    if backend in ("torch", "auto"):
        return backend
    device = _as_device(device)
    if device is not None and device.type != "cpu":
        raise ValueError(f"backend='openvino' runs on CPU only; got device {device}")
    if resolve_dtype(dtype) not in (None, "auto", torch.float32, torch.bfloat16):
        raise ValueError(
            f"backend='openvino' runs fp32 weights, computing in fp32 or bfloat16 (or quantize='int8'); got dtype={dtype!r}"
        )
    if compile:
        raise ValueError("backend='openvino' compiles its own model; drop compile=True")
    if resolve_dtype(autocast_dtype) not in (None, torch.bfloat16):
        raise ValueError(f"backend='openvino' computes in fp32 or bfloat16; got autocast_dtype={autocast_dtype!r}")
    if not openvino_available():
        raise ImportError("backend='openvino' needs the openvino package: pip install 'pairrm-hf[openvino]'")
    return backend


def auto_backend(
    model: nn.Module,
    *,
    device: torch.device,
    compile: bool,  # noqa: A002 - the engine's option name
    autocast_dtype,
    attention: str | None,
    quantize: str | None,
) -> tuple[str, str]:
    """What ``backend="auto"`` runs for this (already placed and typed) ``model``: ``(backend, reason)``.

    OpenVINO when it imports (with nncf for ``quantize="int8"``), the device is the CPU, the model is a
    :class:`~pairrm_hf.DebertaV2PairRM` with fp32 weights, and neither ``compile``, an autocast other than bfloat16
    (which OpenVINO computes itself, see :func:`openvino_inference_precision`) nor an attention other than the
    device's default (``"eager"``, ``"flex"``) was asked for; torch otherwise. Never raises for a combination
    OpenVINO would refuse.
    """
    backbone = getattr(model, "pretrained_model", None)
    if device.type != "cpu":
        return "torch", f"device {device} is not the CPU"
    if not isinstance(model, DebertaV2PairRM) or getattr(backbone.config, "model_type", None) != "deberta-v2":
        return "torch", f"{type(model).__name__} is not a PairRM on a DeBERTa-v2 backbone"
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return "torch", f"weights are {next(p.dtype for p in model.parameters() if p.dtype != torch.float32)}"
    if compile:
        return "torch", "compile=True"
    if autocast_dtype not in (None, torch.bfloat16):
        return "torch", f"autocast_dtype={autocast_dtype}"
    chosen = attention or getattr(model, "attention_implementation", None) or default_attention(device)
    if chosen != default_attention(device):
        return "torch", f"attention={chosen!r} was asked for"
    if not openvino_available(quantize):
        return "torch", "openvino is not installed (pip install 'pairrm-hf[openvino]')"
    return "openvino", "openvino is installed and the model is a fp32 PairRM on the CPU"


def engine_device(device: str | int | torch.device | None, *, quantize: str | None, backend: str) -> torch.device:
    """The device an engine runs on: ``device`` resolved, except that with none named, int8 and the OpenVINO backend
    (CPU only) pick the CPU even when a GPU is present."""
    from ..utils.devices import resolve_device

    cpu_only = quantize is not None or backend == "openvino"
    return resolve_device("cpu" if device is None and cpu_only else device)


def bf16_may_run_on_openvino(dtype, device: torch.device, backend: str) -> bool:
    """Whether ``dtype`` bfloat16 may run on OpenVINO here (the CPU, ``backend`` ``"auto"`` or ``"openvino"``): OpenVINO
    keeps fp32 weights and computes in bf16 itself, so the torch model must stay fp32 until the backend is known."""
    return resolve_dtype(dtype) == torch.bfloat16 and device.type == "cpu" and backend in ("auto", "openvino")


def cpu_capabilities() -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of this CPU (e.g. ``["BF16", "FP32", "INT8", …]``)."""
    import openvino

    return list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def openvino_inference_precision(requested: str = "f32") -> str:
    """The inference precision OpenVINO's CPU plugin is compiled with for ``requested`` (one of
    :data:`INFERENCE_PRECISIONS`): ``"bf16"`` only where the CPU computes bf16 natively (OpenVINO's ``BF16``
    capability: AVX512-BF16 or AMX), ``"f32"`` otherwise; the fallback is logged once per process."""
    if requested not in INFERENCE_PRECISIONS:
        raise ValueError(f"inference_precision must be one of {INFERENCE_PRECISIONS}, got {requested!r}")
    if requested == "f32":
        return "f32"
    if "BF16" in cpu_capabilities():
        return "bf16"
    if ("f32", "no native bf16") not in _LOGGED_CHOICES:
        _LOGGED_CHOICES.add(("f32", "no native bf16"))
        logger.warning(
            "PairRM: this CPU has no native bf16 (AVX512-BF16 or AMX); OpenVINO computes in f32 instead, which is "
            "exact and faster here than emulated bf16"
        )
    return "f32"


def log_backend_choice(backend: str, reason: str) -> None:
    """Say once per process (per choice and reason) which backend ``backend="auto"`` picked, at INFO."""
    if (backend, reason) in _LOGGED_CHOICES:
        return
    _LOGGED_CHOICES.add((backend, reason))
    other = "backend='torch' (or PAIRRM_BACKEND=torch)" if backend == "openvino" else "backend='openvino'"
    logger.info("PairRM: backend='auto' runs on %s (%s); %s chooses otherwise", backend, reason, other)


def openvino_cache_root() -> Path:
    """Where converted backbones are kept: ``$PAIRRM_OPENVINO_CACHE``, else ``$HF_HOME/pairrm_hf/openvino``."""
    if os.environ.get("PAIRRM_OPENVINO_CACHE"):
        return Path(os.environ["PAIRRM_OPENVINO_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "pairrm_hf" / "openvino"


#: Config fields that say where or how a checkpoint was saved, not what the converted graph computes: the same
#: weights loaded from another folder (a Hub snapshot, a local copy, an in-memory model) share one cache entry.
_VOLATILE_CONFIG_KEYS = ("pairrm_attention", "transformers_version", "architectures", "dtype", "torch_dtype")


_WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def _tensor_versions(backbone: nn.Module) -> tuple:
    """Each parameter and buffer's identity and in-place version counter (torch bumps it on every in-place write)."""
    return tuple(
        (name, id(t), t._version)
        for name, t in [*backbone.named_parameters(), *backbone.named_buffers()]
        if t is not None
    )


def record_checkpoint_identity(backbone: nn.Module, folder: str | os.PathLike) -> None:
    """Remember that ``backbone``'s weights are exactly what the weight files in ``folder`` load to.

    The OpenVINO cache key then names those files (real path, size, modification time, with the pairrm-hf version
    that mapped them) instead of reading every weight: a warm start never pages the torch backbone in. Any later
    change to a parameter or buffer (an in-place write bumps its version; a replaced or moved tensor is a new
    object) makes the key fall back to hashing the weights themselves.
    """
    from ..utils.version import __version__

    folder = os.path.realpath(os.fspath(folder))
    try:
        files = sorted(f for f in os.listdir(folder) if f.endswith(_WEIGHT_FILE_SUFFIXES))
        stats = [(f, st.st_size, st.st_mtime_ns) for f in files for st in [os.stat(os.path.join(folder, f))]]
    except OSError:
        return
    if stats:
        identity = json.dumps([folder, stats, __version__])
        backbone.__dict__["_pairrm_checkpoint"] = (identity, _tensor_versions(backbone))


def _weights_key(backbone: nn.Module, precision: str, graph: str | None = None) -> str:
    """A cache key for this backbone: config, the weights, precision, library versions and the converted graph
    (``graph``, default :data:`CONVERTED_ATTENTION`, with its :data:`GRAPH_VERSIONS` entry and, for the export graph,
    :attr:`~pairrm_hf.models.attention.PairRMSelfAttention.export_heads_per_group`).

    The weights are named by their checkpoint files when :func:`record_checkpoint_identity` vouches that they are
    unchanged since loading; otherwise by a CRC-32 of every tensor's bytes, which changes with any weight
    (fine-tuning, a single edited value) and costs one pass at memory speed (~0.4 s for a base-size model).
    """
    import openvino

    digest = hashlib.sha256()
    config = {
        k: v for k, v in backbone.config.to_dict().items() if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS
    }
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(f"{precision}|{openvino.__version__}|{torch.__version__}".encode())
    graph = graph or CONVERTED_ATTENTION
    digest.update(f"graph|{graph}|{GRAPH_VERSIONS[graph]}".encode())
    if graph == "export":  # the head grouping is traced into the graph
        digest.update(f"heads_per_group|{PairRMSelfAttention.export_heads_per_group}".encode())
    recorded = backbone.__dict__.get("_pairrm_checkpoint")
    if recorded is not None and recorded[1] == _tensor_versions(backbone):
        digest.update(f"files|{recorded[0]}".encode())
        return digest.hexdigest()[:24]
    with torch.no_grad():
        for name, tensor in backbone.state_dict().items():
            data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|{zlib.crc32(data)}".encode())
    return digest.hexdigest()[:24]


class _HiddenStates(nn.Module):
    """The traced function: ``(input_ids, attention_mask)`` → last hidden state."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _convert(backbone: nn.Module, precision: str, graph: str | None = None):
    """Trace ``backbone`` (attention ``graph``, default :data:`CONVERTED_ATTENTION`) into an OpenVINO model with
    dynamic batch and length."""
    import openvino

    vocab = int(backbone.config.vocab_size)
    ids = torch.arange(2 * 24, dtype=torch.long).reshape(2, 24) % max(vocab, 1)
    mask = torch.ones_like(ids)
    mask[1, 16:] = 0  # a padded row, so the mask is traced as an input that matters
    previous = [m.implementation for m in backbone.modules() if hasattr(m, "implementation")]
    set_attention_implementation(backbone, graph or CONVERTED_ATTENTION)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer warns about Python ints taken from tensor sizes; sizes stay dynamic ops in the graph
            warnings.simplefilter("ignore")
            model = openvino.convert_model(
                _HiddenStates(backbone).eval(), example_input={"input_ids": ids, "attention_mask": mask}
            )
    finally:
        set_attention_implementation(backbone, previous[0] if previous else "fused")
    model.reshape({"input_ids": [-1, -1], "attention_mask": [-1, -1]})
    if precision == "int8":
        import nncf

        # weight-only int8 of the linear layers (per output channel, asymmetric); activations stay fp32
        model = nncf.compress_weights(model)
    return model


def gather_heads(heads: int, graph: str | None = None) -> int:
    """Heads whose position terms one ``Gather`` of the converted ``graph`` (default :data:`CONVERTED_ATTENTION`)
    holds: the export graph's head group
    (:attr:`~pairrm_hf.models.attention.PairRMSelfAttention.export_heads_per_group`), every head otherwise."""
    group = PairRMSelfAttention.export_heads_per_group if (graph or CONVERTED_ATTENTION) == "export" else None
    return min(group or heads, heads)


def longest_exact_row(gathered: int) -> int:
    """The longest row whose position-term ``Gather`` (``gathered`` heads × L²) stays within
    :data:`GATHER_SAFE_ELEMENTS`: 2,896 tokens for 2 heads, 2,048 for 4."""
    return math.isqrt(GATHER_SAFE_ELEMENTS // gathered)


def load_openvino_backbone(
    backbone: nn.Module,
    *,
    quantize: str | None = None,
    cache_dir=None,
    release_torch_weights: bool = True,
    calibration=None,
    inference_precision: str = "f32",
) -> OpenVINOBackbone:
    """An :class:`OpenVINOBackbone` for ``backbone`` (a DeBERTa-v2 model, fp32), converted once and cached.

    ``quantize``: ``None`` (fp32) or ``"int8"`` (NNCF weight compression). ``cache_dir``: the cache root (default
    :func:`openvino_cache_root`). A cached entry is read instead of converting; a failed conversion leaves none.
    ``release_torch_weights``: free ``backbone``'s parameters once OpenVINO holds its own copy (see
    :meth:`OpenVINOBackbone.release_torch_weights`). ``calibration``: with ``quantize="int8"``, a
    :class:`~pairrm_hf.ranking.openvino_quantization.StaticInt8` (static int8 calibrated on its batches, keyed by
    their digest) instead of weight compression. ``inference_precision``: ``"f32"`` or ``"bf16"`` (compute in bf16
    where the CPU has it, see :func:`openvino_inference_precision`); the converted model and its cache entry are the
    same for both, only the compiled form differs.
    """
    import openvino

    hint = openvino_inference_precision(inference_precision)
    restore_backbone_weights(backbone)  # another stand-in may have released them; the key and conversion read them
    if any(p.dtype != torch.float32 for p in backbone.parameters()):
        raise ValueError("backend='openvino' converts an fp32 model; load it without dtype= (or dtype='float32')")
    precision = "int8" if quantize == "int8" else "fp32"
    static = calibration is not None and precision == "int8"
    root = Path(cache_dir) if cache_dir is not None else openvino_cache_root()
    graph = CONVERTED_ATTENTION  # read once: the key and the conversion name the same graph
    entry = root / _weights_key(backbone, calibration.cache_tag if static else precision, graph)
    xml = entry / "backbone.xml"
    if not xml.exists():
        logger.warning(
            "PairRM: converting the backbone to OpenVINO (%s) once; later loads of these weights read it from %s "
            "(backend='torch' or PAIRRM_BACKEND=torch skips OpenVINO)",
            f"static int8, calibrating on {calibration.rows} rows" if static else precision,
            entry,
        )
        root.mkdir(parents=True, exist_ok=True)  # an unusable cache root fails here, before the conversion
        # static int8 calibrates the fp32 graph (weights and activations together) instead of compressing weights
        model = (
            calibration.quantize(_convert(backbone, "fp32", graph)) if static else _convert(backbone, precision, graph)
        )
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        try:
            # compress_to_fp16=False: the default would halve fp32 weights to fp16 on disk
            openvino.save_model(model, str(staging / "backbone.xml"), compress_to_fp16=False)
            try:
                staging.rename(entry)  # atomic: another process sees a whole entry or none
            except OSError:
                if not xml.exists():  # not a concurrent writer's finished entry: a real failure
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    core = openvino.Core()
    # one blob cache per precision: OpenVINO's (2026.4) does not key its blobs by the precision hint, so a bf16
    # compile read an f32 blob back and gave NaN or crashed
    blobs = entry / ("compiled" if hint == "f32" else f"compiled-{hint}")
    if blobs.is_dir() or _room_for_blob(entry):
        core.set_property({"CACHE_DIR": str(blobs)})
    compiled = core.compile_model(
        core.read_model(str(xml)),
        "CPU",
        {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": hint},
    )
    stand_in = OpenVINOBackbone(
        compiled,
        backbone,
        precision="int8-static" if static else precision,
        cache_entry=entry,
        inference_precision=hint,
        gather_heads=gather_heads(int(backbone.config.num_attention_heads), graph),
    )
    if release_torch_weights:
        stand_in.release_torch_weights()
    return stand_in


def _room_for_blob(entry: Path) -> bool:
    """Whether the disk holding ``entry`` has room for a compiled blob (twice the converted weights' size).

    OpenVINO writes its blob cache in place: a blob cut short by a full disk was read back by the next load and
    crashed the process (seen at 100% disk use). Without the room, the model is compiled without the blob cache
    (each load then compiles, about a second for a base model) and a warning says why.
    """
    needed = 2 * (entry / "backbone.bin").stat().st_size
    free = shutil.disk_usage(entry).free
    if free >= needed:
        return True
    logger.warning(
        "PairRM: %.1f GB free under %s, less than the %.1f GB a compiled OpenVINO blob may need; compiling without "
        "the blob cache (free space, or set PAIRRM_OPENVINO_CACHE to a roomier disk)",
        free / 1e9,
        entry,
        needed / 1e9,
    )
    return False


_RELEASE_LOCK = threading.Lock()


def _swap_parameters(backbone: nn.Module, new: dict[int, nn.Parameter]) -> None:
    """Replace every parameter of ``backbone`` by ``new[id(old)]`` (a tied parameter stays tied)."""
    for module in backbone.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                module._parameters[name] = new[id(param)]


def release_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Move ``backbone``'s parameters to the meta device after writing them once to ``path`` (safetensors).

    :func:`restore_backbone_weights` reads them back. Buffers stay (they are small, and some are not in the file).
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    with _RELEASE_LOCK:
        if "_pairrm_released" in backbone.__dict__:
            return
        params = dict(backbone.named_parameters())  # a tied parameter appears once
        recorded = backbone.__dict__.get("_pairrm_checkpoint")
        still_the_checkpoint = recorded is not None and recorded[1] == _tensor_versions(backbone)
        if not path.exists():
            staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            try:
                save_file({k: v.detach().contiguous() for k, v in params.items()}, str(staging))
                os.replace(staging, path)  # atomic: a reader sees the whole file or none
            except (
                OSError,
                SafetensorError,
            ) as err:  # e.g. a read-only shared cache: keep the weights rather than fail the load
                staging.unlink(missing_ok=True)
                logger.warning(
                    "PairRM: keeping the torch backbone's weights in memory (cannot write %s: %s)", path, err
                )
                return
        _swap_parameters(
            backbone,
            {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in params.values()},
        )
        shapes = {k: tuple(v.shape) for k, v in params.items()}
        backbone.__dict__["_pairrm_released"] = (path, shapes, still_the_checkpoint)


def restore_backbone_weights(backbone: nn.Module | None) -> None:
    """Read back the parameters :func:`release_backbone_weights` freed (nothing if they were not released)."""
    if backbone is None or "_pairrm_released" not in backbone.__dict__:
        return
    from safetensors.torch import load_file

    # inference_mode(False): a restore reached from an engine call (under inference mode) must still give ordinary
    # parameters, which keep version counters and can be trained
    with _RELEASE_LOCK, torch.inference_mode(False):
        if "_pairrm_released" not in backbone.__dict__:
            return
        path, shapes, still_the_checkpoint = backbone.__dict__["_pairrm_released"]
        loaded = load_file(str(path))
        if {k: tuple(v.shape) for k, v in loaded.items()} != shapes:
            raise RuntimeError(f"{path} does not hold this backbone's parameters; delete it and load the model again")
        _swap_parameters(
            backbone, {id(p): nn.Parameter(loaded[k], p.requires_grad) for k, p in backbone.named_parameters()}
        )
        del backbone.__dict__["_pairrm_released"]
        if still_the_checkpoint:  # the same bytes came back: the checkpoint files still name them
            identity = backbone.__dict__["_pairrm_checkpoint"][0]
            backbone.__dict__["_pairrm_checkpoint"] = (identity, _tensor_versions(backbone))


_LONG_ROWS_LOGGED: set[int] = set()  # the limits already logged: one line per limit, not per row length


def _log_long_rows_once(length: int, longest: int) -> None:
    if longest not in _LONG_ROWS_LOGGED:
        _LONG_ROWS_LOGGED.add(longest)
        logger.warning(
            "PairRM: rows of %d tokens run on torch, not OpenVINO: OpenVINO's CPU Gather is exact for rows of at most "
            "%d tokens in this graph (see GATHER_SAFE_ELEMENTS in pairrm_hf.ranking.openvino_backend); longer rows "
            "will too, without another line",
            length,
            longest,
        )


class OpenVINOBackbone(nn.Module):
    """Stands in for a DeBERTa backbone (``model.pretrained_model``) during the engine's forward passes.

    Takes ``input_ids`` and ``attention_mask`` and returns a ``BaseModelOutput`` with ``last_hidden_state`` as the
    torch backbone would. Calls the converted graph cannot answer (token types, position ids, hidden states or
    attention maps asked for) go to the torch backbone it was converted from.

    Attributes:
        precision: ``"fp32"``, ``"int8"`` (weights) or ``"int8-static"`` (weights and activations, calibrated).
        inference_precision: ``"f32"`` or ``"bf16"``: what the layers left in floating point compute in.
        cache_entry: the folder holding the converted model and OpenVINO's compiled-blob cache.
        gather_heads: heads per position-term ``Gather`` in the converted graph (:func:`gather_heads`), which
            bounds the rows per request (:data:`GATHER_SAFE_ELEMENTS`).
    """

    #: Score elements (rows × heads × L²) per OpenVINO request. 2^25 kept a request's attention tensors near 1 GB
    #: with the ungrouped export graph (~34 bytes per score element); the grouped graph holds one head group's at a
    #: time, so it is a loose bound now, kept because it was measured. Short rows still go in large batches:
    #: 256-token rows of a 12-head model, 42 per request.
    score_elements_per_request: int = 1 << 25

    def __init__(
        self,
        compiled,
        torch_backbone: nn.Module,
        *,
        precision: str,
        cache_entry: Path,
        inference_precision: str = "f32",
        gather_heads: int | None = None,
    ):
        super().__init__()
        self.compiled = compiled
        self.inference_precision = inference_precision
        # a plain attribute, not a submodule: the torch weights stay registered on the PairRM model only
        self.__dict__["_torch_backbone"] = torch_backbone
        self.precision = precision
        self.cache_entry = cache_entry
        self.config = torch_backbone.config
        self.gather_heads = gather_heads or int(self.config.num_attention_heads)

    @property
    def torch_backbone(self) -> nn.Module:
        """The torch backbone this model was converted from, its weights restored first if they were released."""
        self.restore_torch_weights()
        return self.__dict__["_torch_backbone"]

    @property
    def torch_weights_released(self) -> bool:
        """Whether the torch backbone's parameters are on the meta device (see :meth:`release_torch_weights`)."""
        return "_pairrm_released" in self.__dict__["_torch_backbone"].__dict__

    def release_torch_weights(self) -> None:
        """Free the torch backbone's parameters (moved to the meta device), keeping one copy of the weights in memory.

        The parameters are written once to the cache entry (``torch_backbone.safetensors``, the same weights the
        entry's key hashes) and read back by :meth:`restore_torch_weights` when a torch forward pass needs them
        (fp32 reference runs, ``check_precision``, calls the converted graph cannot answer, ``PairRM.model``).
        """
        release_backbone_weights(self.__dict__["_torch_backbone"], self.cache_entry / "torch_backbone.safetensors")

    def restore_torch_weights(self) -> None:
        """Read the torch backbone's parameters back if they were released (else nothing); they then stay."""
        restore_backbone_weights(self.__dict__["_torch_backbone"])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = True,
        **kwargs,
    ) -> BaseModelOutput:
        """``[B, L]`` ids and mask → ``BaseModelOutput(last_hidden_state=[B, L, hidden] float32)``."""
        if token_type_ids is not None or position_ids is not None or output_attentions or output_hidden_states:
            return self.torch_backbone(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                position_ids=position_ids,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
                **kwargs,
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if input_ids.shape[1] > self.longest_row:
            _log_long_rows_once(input_ids.shape[1], self.longest_row)
            return self.torch_backbone(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        ids = np.ascontiguousarray(input_ids.cpu().numpy(), dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask.cpu().numpy(), dtype=np.int64)
        rows = self.rows_per_request(ids.shape[1])
        # one request per call: the serving batcher and user threads may call concurrently
        request = self.compiled.create_infer_request()
        parts = []
        for start in range(0, ids.shape[0], rows):
            request.infer({"input_ids": ids[start : start + rows], "attention_mask": mask[start : start + rows]})
            parts.append(np.array(request.get_output_tensor(0).data, copy=True))
        hidden = torch.from_numpy(parts[0] if len(parts) == 1 else np.concatenate(parts))
        return BaseModelOutput(last_hidden_state=hidden.to(input_ids.device))

    def rows_per_request(self, length: int) -> int:
        """Most rows of ``length`` tokens sent to OpenVINO at once.

        Two bounds: the attention's ``[rows, heads, L, L]`` fp32 tensors (a batch is cut into requests of at most
        :attr:`score_elements_per_request` score elements), and each position-term ``Gather`` within
        :data:`GATHER_SAFE_ELEMENTS` (``rows × gather_heads × L²``). Never fewer than one row (rows longer than
        :attr:`longest_row` do not reach OpenVINO). Rows are independent: the cut changes no result."""
        return self.request_rows(
            int(self.config.num_attention_heads), length, self.score_elements_per_request, self.gather_heads
        )

    @property
    def longest_row(self) -> int:
        """The longest row OpenVINO runs: one row's position-term ``Gather`` within :data:`GATHER_SAFE_ELEMENTS`
        (2,896 tokens with 2 heads per group). Longer rows run on the torch backbone, with one log line."""
        return longest_exact_row(self.gather_heads)

    @classmethod
    def request_rows(cls, heads: int, length: int, budget: int | None = None, gathered: int | None = None) -> int:
        """:meth:`rows_per_request` for a model with ``heads`` attention heads, before any backbone is compiled
        (static int8 calibration feeds the same requests); ``budget`` defaults to the class's
        :attr:`score_elements_per_request`, ``gathered`` (heads per ``Gather``) to :func:`gather_heads`."""
        budget = cls.score_elements_per_request if budget is None else budget
        gathered = gather_heads(heads) if gathered is None else gathered
        square = max(length * length, 1)
        return max(1, min(budget // (heads * square), GATHER_SAFE_ELEMENTS // (gathered * square)))
