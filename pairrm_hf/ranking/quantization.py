"""Opt-in int8 inference on CPU: the linear layers of PairRM run as dynamically quantized int8 matrix products.

``PairRM.from_pretrained(..., quantize="int8")`` (or ``PairRM(model, tokenizer, quantize="int8")``) replaces every
``nn.Linear`` of the transformer layers with torch's dynamic-quantization module: int8 weights (per output
channel), activations quantized per call, int32 accumulation. Attention score products, softmax, layer norms,
embeddings and the per-row head stay fp32 (the head is a negligible share of the work, and quantizing it alone
doubled the logit error on the tiny test model). It runs on every x86-64 CPU torch supports (fbgemm picks AVX-512 VNNI, AVX-512 or AVX2
kernels at run time); ``torch.backends.quantized.engine`` selects the backend.

Logits move by ~1e-2 on real models, so decisions between near-equal candidates can flip: measure it on your own
data with :meth:`PairRM.check_precision`, which compares against the fp32 model that the engine keeps for that
purpose (``engine.reference_model``). Not for GPUs, training or ``torch.compile``.

torch marks its quantized tensor types as deprecated (torchao is their successor); this module uses them because
they are the ones with fast eager CPU kernels today, and will move when torchao's CPU path runs without compiling.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

__all__ = ["QUANTIZATIONS", "quantize_int8"]

#: Accepted values of ``quantize=``: ``None`` (no quantization) or ``"int8"``.
QUANTIZATIONS = (None, "int8")


def check_quantize(quantize: str | None, device: str | int | torch.device | None) -> str | None:
    """Validate ``quantize`` for a model asked to run on ``device`` (``None``: the default); returns it.

    Checked before the device is resolved, so asking for int8 on CUDA says so even on a machine without CUDA.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if device is None:
        return quantize
    if isinstance(device, int):
        device = torch.device("cpu") if device < 0 else torch.device("cuda", device)
    device = torch.device(str(device).lower()) if isinstance(device, str) else device
    if quantize is not None and device.type != "cpu":
        raise ValueError(f"quantize={quantize!r} runs on CPU only (torch dynamic quantization); got device {device}")
    return quantize


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (fp32, eval mode) whose transformer-layer ``nn.Linear`` modules are dynamic int8.

    The input model is left untouched, and the copy shares its fp32 tensors (embeddings, layer norms, the head)
    instead of duplicating them, so keeping both costs only the int8 weights on top of the fp32 model.
    """
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError("quantize='int8' needs an fp32 model; load it without dtype= (or with dtype='float32')")
    from torch.ao.quantization import quantize_dynamic
    from torch.ao.quantization.qconfig import per_channel_dynamic_qconfig

    with warnings.catch_warnings():
        # torch warns that its quantized tensor types are deprecated in favour of torchao (see the module docstring)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # copy the module tree, not the tensors: the int8 model reads the same embedding and norm weights
        shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
        quantized = copy.deepcopy(model, memo=shared).eval()
        encoder = quantized.pretrained_model.encoder
        quantized.pretrained_model.encoder = quantize_dynamic(
            encoder, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )
    return quantized
