"""Our own calls raise no deprecation warnings on the installed transformers/TRL (5.24 / 1.16).

setup.cfg silences ``DeprecationWarning`` for the suite, so this test installs its own filters and hook. A
warning counts as ours when it is raised in ``pairrm_hf``, or when the first caller outside the library that
raised it is ``pairrm_hf`` code (e.g. a deprecated ``TrainingArguments`` field we pass). A library calling its
own deprecated API (TRL reading ``model.is_gradient_checkpointing``) is not ours and is ignored.
"""

from __future__ import annotations

import logging
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

import pairrm_hf

PACKAGE = Path(pairrm_hf.__file__).resolve().parent
SITE_MARKERS = ("site-packages", "dist-packages")
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _top_package(filename: str) -> str | None:
    """The installed top-level package a frame's file belongs to (``transformers``, ``trl``, ...), else None."""
    parts = Path(filename).parts
    for marker in SITE_MARKERS:
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            return rest[0] if rest else None
    return None


def _is_ours(stack: list[traceback.FrameSummary]) -> bool:
    """Walk outward from the warning site past the library that raised it; our code first means it is ours."""
    frames = [f for f in reversed(stack) if not f.filename.startswith("<") and "/warnings.py" not in f.filename]
    frames = [f for f in frames if "/logging/" not in f.filename]
    frames = [f for f in frames if f.filename != __file__]  # this hook itself
    if not frames:
        return False
    origin = _top_package(frames[0].filename)
    for frame in frames:
        path = Path(frame.filename).resolve()
        if PACKAGE in path.parents:
            return True
        package = _top_package(frame.filename)
        if origin is None or package != origin:
            return False  # the first caller outside the raising library is not our package
    return False


class _DeprecationLog(logging.Handler):
    """transformers also announces deprecations through its logger (``logger.warning_once``)."""

    def __init__(self, found: list[str]):
        super().__init__(logging.WARNING)
        self.found = found

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "deprecat" in message.lower() and _is_ours(traceback.extract_stack()[:-1]):
            self.found.append(f"log {record.name}: {message}")


@contextmanager
def no_deprecations_from_us():
    found: list[str] = []

    def hook(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DEPRECATIONS) and _is_ours(traceback.extract_stack()[:-1]):
            found.append(f"{category.__name__} at {filename}:{lineno}: {message}")

    handler = _DeprecationLog(found)
    loggers = [logging.getLogger(name) for name in ("transformers", "trl", "datasets", "huggingface_hub")]
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for category in DEPRECATIONS:
            warnings.simplefilter("always", category)
        warnings.showwarning = hook
        for logger in loggers:
            logger.addHandler(handler)
        try:
            yield found
        finally:
            for logger in loggers:
                logger.removeHandler(handler)
    assert not found, "deprecated APIs used by pairrm_hf:\n" + "\n".join(found)


def test_the_hook_catches_a_deprecated_training_argument(tmp_path):
    """The detector itself: a deprecated field passed from our package is reported, the same from a test is not."""
    import pytest
    from transformers import TrainingArguments

    with pytest.raises(AssertionError, match="gradient_checkpointing"):
        with no_deprecations_from_us():
            exec(  # a call whose caller frame is a pairrm_hf file
                compile(
                    "TrainingArguments(output_dir=out, gradient_checkpointing=False)",
                    str(PACKAGE / "training.py"),
                    "exec",
                ),
                {"TrainingArguments": TrainingArguments, "out": str(tmp_path)},
            )
    with no_deprecations_from_us():
        TrainingArguments(output_dir=str(tmp_path), gradient_checkpointing=False)  # the test's own call: not ours


def test_representative_calls_raise_no_deprecation_warnings(tiny_hf_dir, tiny_legacy_dir, tiny_backbone_dir, tmp_path):
    import datasets
    from transformers import pipeline

    from pairrm_hf import Blender, PairRM, convert_legacy_checkpoint, load_pairrm
    from pairrm_hf.generation.fusion import load_fuser
    from pairrm_hf.generation.sampling import best_of_n_generate
    from pairrm_hf.testing import build_tiny_llama
    from pairrm_hf.training import train_pairrm
    from pairrm_hf.trl import PairRMJudge, PairRMPairwiseReward, PairRMReward, label_preferences
    from tests.conftest import ORACLE_FUSER

    prompts = ["What is the capital of France?", "Say hi."]
    cands = [["Paris.", "Lyon, I think.", "Paris is the capital."], ["Hi!", "Go away.", "Hello there!"]]
    chat = [{"role": "user", "content": prompts[0]}, {"role": "assistant", "content": "Paris."}]
    with no_deprecations_from_us():
        rm = PairRM.from_pretrained(tiny_hf_dir, device="cpu")
        rm.rank_batch(prompts, cands)
        rm.compare(prompts, ["Paris.", "Hi!"], ["Lyon.", "Go away."])
        rm.best_of_n(prompts, cands, method="bubble")
        rm.rank_with_ref(prompts, cands)
        load_pairrm(tiny_legacy_dir, backbone_config=tiny_backbone_dir)
        convert_legacy_checkpoint(tiny_legacy_dir, tmp_path / "converted", backbone_config=tiny_backbone_dir)

        blender = Blender()
        blender.loadranker(str(tiny_hf_dir), device="cpu")
        blender.rank(prompts, cands, return_scores=True)
        blender.compare_conversations([chat], [[chat[0], {"role": "assistant", "content": "Rome."}]])
        blender.loadfuser(str(ORACLE_FUSER), device="cpu", dtype="float32")
        blender.rank_and_fuse(prompts, cands, top_k=2, max_new_tokens=4)

        ranking = pipeline("pairwise-ranking", model=str(tiny_hf_dir), device="cpu")
        ranking({"prompt": prompts[0], "candidates": cands[0]})
        fusion = pipeline("generative-fusion", model=str(ORACLE_FUSER), device="cpu")
        fusion(prompts[0], cands[0], max_new_tokens=4)

        lm, lm_tok = load_fuser(str(build_tiny_llama(tmp_path / "llama", ORACLE_FUSER)), device="cpu", dtype="float32")
        best_of_n_generate(lm, lm_tok, prompts, n=2, ranker=rm, max_new_tokens=4)
        blender.best_of_n_generate(lm, lm_tok, prompts, n=2, max_new_tokens=4)

        PairRMReward(rm)(prompts=prompts, completions=["Paris.", "Hi!"], reference=["Paris.", "Hello."])
        PairRMReward(rm, mode="group")(prompts=[prompts[0]] * 2, completions=["Paris.", "Lyon."])
        PairRMPairwiseReward(rm)(prompts=[prompts[0]] * 2, completions=["Paris.", "Lyon."])
        PairRMJudge(rm).judge(prompts, [["Paris.", "Lyon."], ["Hi!", "Go away."]])
        label_preferences(datasets.Dataset.from_dict({"prompt": prompts, "completions": cands}), ranker=rm)

        train_pairrm(
            str(tiny_hf_dir),
            [{"prompt": prompts[0], "chosen": "Paris.", "rejected": "Lyon."}] * 2,
            output_dir=tmp_path / "trained",
            max_steps=1,
            per_device_train_batch_size=2,
            use_cpu=True,
            save_strategy="no",
            logging_strategy="no",
            save_final=False,
        )
