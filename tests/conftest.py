"""Shared fixtures: the oracle's tiny checkpoints and a builder for fresh tiny PairRM folders (all offline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The default backend ("auto") converts every fp32 PairRM to OpenVINO when openvino is installed; the suite builds
# many tiny random models, and converting each would slow it for nothing the torch path does not already test. Tests
# of the default clear this with monkeypatch; tests/test_openvino_backend.py asks for OpenVINO explicitly.
os.environ.setdefault("PAIRRM_BACKEND", "torch")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ORACLE = Path(__file__).parent / "fixtures" / "oracle"
#: The oracle's tiny GenFuser (a T5 with the original fuser's tokenizer); tiny generators are built on its tokenizer.
ORACLE_FUSER = ORACLE / "fuser_tiny"


def pytest_collection_modifyitems(config, items):
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        skip = pytest.mark.skip(reason="needs the Hugging Face Hub (HF_HUB_OFFLINE is set)")
        for item in items:
            if "hub" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def oracle_dir() -> Path:
    """The copied oracle data (see tests/fixtures/oracle/README.md)."""
    return ORACLE


@pytest.fixture(scope="session")
def oracle_inputs() -> dict[str, dict]:
    """The oracle's inputs keyed by id."""
    return {d["id"]: d for d in json.loads((ORACLE / "inputs.json").read_text())}


@pytest.fixture(scope="session")
def expected_hf() -> dict:
    return json.loads((ORACLE / "expected_hf.json").read_text())


@pytest.fixture(scope="session")
def expected_blender() -> dict:
    return json.loads((ORACLE / "expected_blender.json").read_text())


@pytest.fixture(scope="session")
def tiny_hf_dir() -> Path:
    """The tiny checkpoint in the HF-native (PairRM-hf) layout."""
    return ORACLE / "tiny" / "pairrm_hf"


@pytest.fixture(scope="session")
def tiny_legacy_dir() -> Path:
    """The same weights in the legacy (llm-blender/PairRM) layout."""
    return ORACLE / "tiny" / "pairrm_blender"


@pytest.fixture(scope="session")
def tiny_backbone_dir() -> Path:
    """A backbone-only DeBERTa-v3-style checkpoint (stand-in for microsoft/deberta-v3-large)."""
    return ORACLE / "tiny" / "backbone"


@pytest.fixture(scope="session")
def tiny_rm(tiny_hf_dir):
    """A PairRM on the tiny HF-native checkpoint, CPU, fp32, torch backend (shared: do not mutate its settings)."""
    from pairrm_hf import PairRM

    return PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=8, backend="torch")


@pytest.fixture
def make_tiny_pairrm(tmp_path):
    """Builds a fresh tiny PairRM folder from scratch: a trained SentencePiece model, the DeBERTa-v2 tokenizer
    with the prefix tokens, a random tiny config, ``save_pretrained``. Returns the folder."""
    from pairrm_hf.testing import build_tiny_pairrm

    def make(name: str = "pairrm", **kwargs) -> Path:
        return build_tiny_pairrm(tmp_path / name, **kwargs)

    return make


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    # Native runtimes the suite starts (Ray's workers, OpenVINO's and torch's thread pools) can crash while the
    # interpreter tears them down, after every test has finished and the summary is printed (seen once as a
    # segfault, exit 139, after "595 passed"). Leave with pytest's own status instead of running that teardown.
    if _EXIT_STATUS and not os.environ.get("PAIRRM_TESTS_FULL_TEARDOWN"):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
