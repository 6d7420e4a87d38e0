"""Device and dtype arguments: one reading of ``"cuda:1"``, ``-1``, ``"bf16"``… for every layer."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "resolve_dtype"]


def resolve_device(device: str | int | torch.device | None) -> torch.device:
    """``None`` → the first CUDA device when there is one, else CPU; ints are CUDA ordinals.

    A CUDA device on a machine without CUDA (or an ordinal past the last GPU) raises ``ValueError`` saying so and
    how to choose the CPU, instead of torch's assertion deep inside the first ``.to()``.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int):
        resolved = torch.device("cpu") if device < 0 else torch.device("cuda", device)
    elif isinstance(device, str):
        try:
            resolved = torch.device(device.lower())
        except RuntimeError as err:
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or another torch device, got {device!r}") from err
    else:
        resolved = device
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} asks for CUDA, but no CUDA device is available on this machine "
                "(torch.cuda.is_available() is False); use device='cpu' (CLI: --device cpu), or leave the device "
                "unset to use the GPU when there is one and the CPU otherwise"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 … cuda:{torch.cuda.device_count() - 1}); pick one of them or device='cpu'"
            )
    return resolved


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Accepts ``torch.float32``/``"float32"``/``"fp16"``/``"bf16"``…; ``None`` and ``"auto"`` mean keep as loaded."""
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(set(_DTYPES))} or a torch.dtype, got {dtype!r}")
    return _DTYPES[key]
