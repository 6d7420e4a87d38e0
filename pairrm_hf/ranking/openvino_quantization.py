"""Static (calibrated) int8 for the OpenVINO backend: activations quantized with ranges measured on your text.

``PairRM.from_pretrained(path, backend="openvino", quantize="int8", calibration="calib.jsonl")`` converts the
backbone as usual, then runs NNCF post-training quantization (``nncf.quantize``, ``ModelType.TRANSFORMER``) on it:
the linear layers' weights *and* their input activations become int8, with activation ranges (and SmoothQuant
scales) measured once on calibration rows instead of on every call. Without ``calibration``, ``quantize="int8"`` on
OpenVINO stays weight-only (``nncf.compress_weights``; the CPU plugin quantizes activations on the fly).

**Calibration text.** Rows of the jobs' JSONL form, one JSON object a line: ``{"prompt": …, "candidates": [a, b,
…]}`` (prompts and answers as strings or chat messages, the one input rule of :mod:`pairrm_hf.ranking.inputs`; an
optional ``"instruction"`` string), or the same rows as a list of dicts. Each row gives its ordered candidate pairs;
:data:`CALIBRATION_SIZE` of them (``calibration_size=``), spread evenly over all rows, are encoded with the model's
own pair encoder and length-bucketed into ``[B, L]`` batches (:data:`CALIBRATION_BATCH_ROWS` rows) by the engine's
schedule, as ranking calls would run them. Use text like the text you will rank: ranges measured on other text
clip yours.

**Cache.** The calibrated model is cached like the others (:mod:`pairrm_hf.ranking.openvino_backend`); its key adds
a digest of the calibration batches' token ids and the quantization options, so two calibrations never share an
entry and a second load with the same calibration reads the entry back without calibrating again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.checks import check_int
from .inputs import answer_set_texts, check_input_format
from .openvino_backend import requested_backend

__all__ = [
    "CALIBRATION_BATCH_ROWS",
    "CALIBRATION_SIZE",
    "Calibration",
    "CalibrationText",
    "StaticInt8",
    "as_calibration",
    "calibration_pairs",
    "check_calibration_options",
    "checked_calibration",
    "read_calibration",
]

#: Ordered pairs (rows) used for calibration by default: enough for stable activation ranges on the trained ranker
#: of ``benchmarks/bench_int8.py`` (see docs/guides/backends.md), cheap enough to calibrate a base model in minutes.
CALIBRATION_SIZE = 256

#: Rows per calibration batch (fixed, so the cache key does not depend on the engine's ``batch_size``).
CALIBRATION_BATCH_ROWS = 16

#: NNCF's SmoothQuant migration strength for matrix products (NNCF's default for transformers, kept by measurement).
SMOOTH_QUANT_ALPHA = 0.95

_PRESETS = ("performance", "mixed")


@dataclass(frozen=True)
class CalibrationText:
    """Calibration rows as PairRM texts: one source and its candidate texts per row; ``origin`` names where they
    came from (a file path, or ``"calibration"`` for rows passed in memory)."""

    sources: tuple[str, ...]
    candidates: tuple[tuple[str, ...], ...]
    origin: str = "calibration"


@dataclass(frozen=True)
class Calibration:
    """Calibration rows and the static-int8 options; ``calibration=`` accepts this, a JSONL path or a list of rows.

    Attributes:
        text: the rows (see :func:`read_calibration`).
        size: ordered pairs to calibrate on (at most all of them), default :data:`CALIBRATION_SIZE`.
        preset: ``"mixed"`` (NNCF's default for transformers: symmetric weights, asymmetric activations) or
            ``"performance"`` (symmetric both).
        smooth_quant_alpha: SmoothQuant's migration strength for matrix products (0–1; ``-1`` turns it off).
        fast_bias_correction: NNCF's fast bias correction after quantization.
    """

    text: CalibrationText
    size: int = CALIBRATION_SIZE
    preset: str = "mixed"
    smooth_quant_alpha: float = SMOOTH_QUANT_ALPHA
    fast_bias_correction: bool = True

    def __post_init__(self):
        check_int("calibration_size", self.size)
        if self.preset not in _PRESETS:
            raise ValueError(f"preset must be one of {_PRESETS}, got {self.preset!r}")
        alpha = self.smooth_quant_alpha
        if not (alpha == -1 or 0 <= alpha <= 1):
            raise ValueError(f"smooth_quant_alpha must be in [0, 1] or -1 (off), got {alpha!r}")

    def options(self) -> dict[str, Any]:
        """The options that change the quantized model (part of its cache key)."""
        return {
            "preset": self.preset,
            "smooth_quant_alpha": self.smooth_quant_alpha,
            "fast_bias_correction": self.fast_bias_correction,
        }

    @property
    def fingerprint(self) -> str:
        """A SHA-256 of what this calibration quantizes with: the rows' PairRM texts, :attr:`size` and
        :meth:`options` (not where the rows came from, so a copied or moved file gives the same digest).

        Computed once per object (the texts of a large file are hashed again only for a new object). Jobs put it in
        their identity and :func:`~pairrm_hf.ranking.ranker.shared_pairrm` in its key: two calibrations that could
        quantize differently never share a job's chunks or a loaded model."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            digest = hashlib.sha256()
            digest.update(json.dumps({"size": self.size, **self.options()}, sort_keys=True).encode())
            for source, candidates in zip(self.text.sources, self.text.candidates):
                # length-prefixed JSON per row: no two different row lists hash the same bytes
                row = json.dumps([source, list(candidates)], ensure_ascii=False).encode("utf-8", "surrogatepass")
                digest.update(len(row).to_bytes(8, "little") + row)
            cached = digest.hexdigest()
            object.__setattr__(self, "_fingerprint", cached)  # frozen dataclass: a cache, not a field
        return cached


def _field_error(where: str, name: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"{where}: field {name!r}: expected {expected}, got {_describe(value)}")


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value[:40] + ("…" if len(value) > 40 else ""))
    return type(value).__name__ if not isinstance(value, (list, tuple)) else f"a list of {len(value)}"


def _row_texts(row: Any, where: str, input_format: str) -> tuple[str, list[str]]:
    """One calibration row → ``(source, candidates)`` by the input rule, errors naming ``where`` and the field."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a JSON object with 'prompt' and 'candidates', got {_describe(row)}")
    if "candidates" not in row:
        raise ValueError(f"{where}: missing field 'candidates' (row has {sorted(row)})")
    answers = row["candidates"]
    if not isinstance(answers, (list, tuple)) or len(answers) < 2:
        raise _field_error(where, "candidates", "a list of at least 2 answers (str or chat messages)", answers)
    instruction = row.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise _field_error(where, "instruction", "a str", instruction)
    return answer_set_texts(
        row.get("prompt"),
        answers,
        instruction=instruction,
        input_format=input_format,
        name=where,
        prompt_name=f"{where}: field 'prompt'",
        answers_name=f"{where}: field 'candidates'",
    )


def read_calibration(calibration: Any, *, input_format: str = "auto") -> CalibrationText:
    """Calibration rows from a JSONL file path or a list of row dicts, checked by the input rule.

    Every row needs ``candidates`` (a list of at least two answers) and a ``prompt`` (unless the answers are whole
    conversations); errors name the file, the row (and line) and the field. A :class:`CalibrationText` is returned
    as it is.
    """
    check_input_format(input_format)
    if isinstance(calibration, CalibrationText):
        return calibration
    if isinstance(calibration, (str, os.PathLike)):
        path = Path(calibration)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"calibration file {str(path)!r} cannot be read: {err}") from None
        rows, places = [], []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}, row {len(rows)} (line {number})"
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
            places.append(where)
        origin = str(path)
    elif isinstance(calibration, Sequence) and not isinstance(calibration, (bytes, bytearray)):
        rows = list(calibration)
        places = [f"calibration[{k}]" for k in range(len(rows))]
        origin = "calibration"
    else:
        raise TypeError(
            "calibration must be a JSONL file path, a list of {'prompt', 'candidates'} rows or a Calibration, "
            f"got {type(calibration).__name__}"
        )
    if not rows:
        raise ValueError(f"{origin} holds no calibration rows: give at least one row with 2+ candidates")
    sources, candidates = [], []
    for row, where in zip(rows, places):
        source, texts = _row_texts(row, where, input_format)
        sources.append(source)
        candidates.append(tuple(texts))
    return CalibrationText(tuple(sources), tuple(candidates), origin)


def as_calibration(calibration: Any, size: int | None = None) -> Calibration | None:
    """``calibration=`` (``None``, a path, rows, a :class:`CalibrationText` or a :class:`Calibration`) read and
    checked, with ``calibration_size=`` applied; ``None`` stays ``None`` (and then ``size`` must be ``None``)."""
    if calibration is None:
        if size is not None:
            raise ValueError("calibration_size= needs calibration= (the rows to calibrate int8 on)")
        return None
    if isinstance(calibration, Calibration):
        return calibration if size is None else Calibration(calibration.text, size, **calibration.options())
    return Calibration(read_calibration(calibration), CALIBRATION_SIZE if size is None else size)


def check_calibration_options(calibration: Any, *, quantize: str | None, backend: str | None) -> None:
    """Refuse ``calibration`` where it cannot apply, before anything is loaded: it calibrates OpenVINO's static
    int8, so it needs ``quantize="int8"`` and a backend other than ``"torch"``."""
    if calibration is None:
        return
    if quantize != "int8":
        raise ValueError(
            f"calibration= calibrates static int8: it needs quantize='int8' (got quantize={quantize!r}); "
            "drop calibration= to run unquantized"
        )
    if backend == "torch":
        raise ValueError(
            "calibration= calibrates OpenVINO's static int8; backend='torch' runs torch's dynamic int8, which takes "
            "no calibration: use backend='openvino' (or 'auto'), or drop calibration="
        )


def checked_calibration(
    calibration: Any, size: int | None = None, *, quantize: str | None, backend: str | None
) -> Calibration | None:
    """``calibration=`` / ``calibration_size=`` as every loader takes them, before anything is loaded: refused where
    they cannot apply (:func:`check_calibration_options`; ``backend`` as given, ``None`` reads ``$PAIRRM_BACKEND``),
    then read and checked (:func:`as_calibration`)."""
    if calibration is not None:
        check_calibration_options(calibration, quantize=quantize, backend=requested_backend(backend))
    return as_calibration(calibration, size)


def calibration_pairs(counts: Sequence[int], size: int) -> np.ndarray:
    """``[k, 3]`` ordered pairs ``(row, i, j)``, ``i != j``, of rows with ``counts`` candidates: all of them when
    there are at most ``size``, else ``size`` spread evenly over the list (so every part of the file is sampled)."""
    pairs = [(r, i, j) for r, n in enumerate(counts) for i in range(n) for j in range(n) if i != j]
    if len(pairs) > size:
        pick = np.linspace(0, len(pairs) - 1, size).round().astype(np.int64)
        pairs = [pairs[k] for k in pick]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 3)


@dataclass
class StaticInt8:
    """Calibration batches ready for NNCF: ``(input_ids, attention_mask)`` int64 arrays as the engine batches them.

    ``load_openvino_backbone`` calls :meth:`quantize` on the converted fp32 model and adds :attr:`cache_tag` to
    the cache key.
    """

    batches: list[tuple[np.ndarray, np.ndarray]]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Calibration rows (ordered pairs) over all batches."""
        return sum(ids.shape[0] for ids, _ in self.batches)

    @property
    def cache_tag(self) -> str:
        """``int8-static|<digest>``: a SHA-256 of every batch's token ids and mask, the options and NNCF's version."""
        import nncf

        digest = hashlib.sha256()
        digest.update(json.dumps({**self.options, "nncf": nncf.__version__}, sort_keys=True).encode())
        for ids, mask in self.batches:
            digest.update(f"{ids.shape}".encode())
            digest.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(mask, dtype=np.int64).tobytes())
        return f"int8-static|{digest.hexdigest()}"

    def quantize(self, model):
        """``model`` (an fp32 OpenVINO model with ``input_ids``/``attention_mask`` inputs) statically quantized."""
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

        items = [{"input_ids": ids, "attention_mask": mask} for ids, mask in self.batches]
        mixed = self.options.get("preset", "mixed") == "mixed"
        alpha = self.options.get("smooth_quant_alpha", SMOOTH_QUANT_ALPHA)
        return nncf.quantize(
            model,
            nncf.Dataset(items),
            preset=nncf.QuantizationPreset.MIXED if mixed else nncf.QuantizationPreset.PERFORMANCE,
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(items),  # every batch: the row count was chosen by calibration_size
            fast_bias_correction=bool(self.options.get("fast_bias_correction", True)),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)
            ),
        )
