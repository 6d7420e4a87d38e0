"""attention="flex" (pairrm_hf.models.flex_attention) against transformers' eager module: same numbers, few compiles,
and a fused fallback with one warning where flex cannot compile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2Model

from pairrm_hf import PairRM
from pairrm_hf.models.attention import PairRMSelfAttention, set_attention_implementation
from pairrm_hf.models.flex_attention import (
    flex_stats,
    inductor_cache_dir,
    padded_length,
    point_inductor_cache,
    position_indices,
    position_score_mod,
)
from tests.test_attention import _config

REPO = Path(__file__).resolve().parents[1]

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea, please"]
CANDIDATES = [
    ["Paris.", "Berlin is the capital", "the capital city of france is paris"],
    ["waves", "the sea is blue and deep, deep", "salt and foam", "no"],
]


def _use_uncompiled_flex(rm: PairRM) -> None:
    for module in rm.engine.model.modules():
        if isinstance(module, PairRMSelfAttention):
            module.flex_compiled = False


def _assert_same_decisions(got: np.ndarray, want: np.ndarray) -> None:
    assert np.abs(got - want).max() <= 1e-5
    decided = np.abs(want) > 1e-5
    assert (np.sign(got[decided]) == np.sign(want[decided])).all()


def test_padded_length_rounds_up_four_steps_per_doubling():
    cases = {1: 64, 64: 64, 65: 128, 129: 192, 256: 256, 257: 320, 513: 640, 1000: 1024, 1025: 1280, 2048: 2048}
    assert {n: padded_length(n) for n in cases} == cases
    lengths = [padded_length(n) for n in range(1, 2049)]
    assert all(n <= p < n + max(64, n / 4) for n, p in zip(range(1, 2049), lengths))
    assert len(set(lengths)) == 16  # the most graphs a job with rows up to 2048 tokens compiles


def test_inductor_cache_goes_under_ours_unless_the_user_chose_one(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("PAIRRM_INDUCTOR_CACHE", str(tmp_path / "ours"))
    assert inductor_cache_dir() == tmp_path / "ours"
    for before, after in [
        (None, str(tmp_path / "ours")),  # unset
        (default_cache_dir(), str(tmp_path / "ours")),  # torch's default, as importing transformers fills it in
        (str(tmp_path / "theirs"), str(tmp_path / "theirs")),  # the user's: kept
    ]:
        if before is None:
            monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
        else:
            monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", before)
        point_inductor_cache()
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == after


def test_score_mod_gives_eager_scores_for_one_layer():
    # small buckets and a short max distance put 70-token rows into the log-bucket and clamped ranges
    torch.manual_seed(0)
    config = _config(num_hidden_layers=1, position_buckets=8, max_relative_positions=40)
    model = DebertaV2Model(config).eval()
    set_attention_implementation(model, "flex")
    layer = model.encoder.layer[0].attention.self
    x = torch.randn(1, 70, 32)
    rel_embeddings = model.encoder.get_rel_embedding()
    relative_pos = model.encoder.get_rel_pos(x)
    with torch.no_grad():
        # transformers' eager scores, [heads, L, L]
        q = layer.transpose_for_scores(layer.query_proj(x), layer.num_attention_heads)
        k = layer.transpose_for_scores(layer.key_proj(x), layer.num_attention_heads)
        root = torch.sqrt(torch.tensor(q.size(-1) * 3, dtype=torch.float))
        want = torch.bmm(q, k.transpose(-1, -2) / root)
        want = want + layer.disentangled_attention_bias(q, k, relative_pos, rel_embeddings, 3)
        # the score_mod over every (query, key) at once, on the pre-scaled query
        query, key = (q * (1 / root)).unsqueeze(0), k.unsqueeze(0)
        c2p, p2c = layer.position_products(query, key, rel_embeddings, float(1 / root))
        c2p_index, p2c_index = position_indices(layer.relative_index(query, key, relative_pos), layer.pos_ebd_size)
        score_mod = position_score_mod(c2p, c2p_index, p2c, p2c_index)
        heads, rows, cols = torch.arange(4)[:, None, None], torch.arange(70)[None, :, None], torch.arange(70)
        got = score_mod(torch.matmul(query, key.transpose(-1, -2))[0], 0, heads, rows, cols)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert (got - want).abs().max() > 0  # a different computation, not the eager code again


def test_flex_matches_eager_on_padded_batches_of_mixed_lengths(tiny_hf_dir):
    eager = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=3, attention="eager")
    flex = PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=3, attention="flex")
    _use_uncompiled_flex(flex)  # PyTorch's reference of the flex kernel: exact and fast to start
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[1], PROMPTS[0], PROMPTS[1]]
    a = ["Paris.", "waves", "the sea is blue and deep, deep " * 4, "Berlin is the capital", "no"]
    b = ["the capital city of france is paris " * 3, "salt and foam", "no", "Paris.", "waves crash"]
    _assert_same_decisions(flex.compare(prompts, a, b, mode="ab"), eager.compare(prompts, a, b, mode="ab"))
    assert flex.engine.last_stats["padded_tokens"] > flex.engine.last_stats["real_tokens"]  # batches were padded


@pytest.mark.slow
def test_compiled_flex_compiles_once_for_several_batch_shapes(tiny_hf_dir):
    eager = PairRM.from_pretrained(tiny_hf_dir, device="cpu", attention="eager")
    flex = PairRM.from_pretrained(tiny_hf_dir, device="cpu", attention="flex")
    before = flex_stats()
    compiles = 0
    # rows of 10–60 tokens: one padded length (64) whatever the batch size and longest row
    for batch_size, n_pairs in [(1, 1), (2, 3), (3, 5), (5, 5)]:
        prompts = [PROMPTS[i % 2] for i in range(n_pairs)]
        a = [CANDIDATES[i % 2][i % 3] for i in range(n_pairs)]
        b = [CANDIDATES[i % 2][(i + 1) % 3] + " and more" * i for i in range(n_pairs)]
        view = flex.with_options(batch_size=batch_size)
        got = view.compare(prompts, a, b, mode="ab")
        compiles += view.engine.last_stats["flex_compiles"]
        _assert_same_decisions(got, eager.compare(prompts, a, b, mode="ab"))
    after = flex_stats()
    assert after["disabled"] is None and after["fused_fallback_rows"] == before["fused_fallback_rows"]
    # one graph at most (none if an earlier test in this process compiled the same one)
    assert after["shapes"] - before["shapes"] <= 1
    assert compiles == after["compiles"] - before["compiles"] == after["shapes"] - before["shapes"]


_FALLBACK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    if sys.argv[1] == "import":
        import transformers.masking_utils, transformers.modeling_utils  # noqa: F401, E401 - transformers imports flex first
        sys.modules["torch.nn.attention.flex_attention"] = None  # then pairrm-hf sees a torch without FlexAttention
    from pairrm_hf import PairRM
    from pairrm_hf.models.flex_attention import flex_stats
    prompts, a, b = ["What is 2+2?", "Name a colour"], ["4", "blue"], ["five, I think", "the sky is"]
    flex = PairRM.from_pretrained(sys.argv[2], device="cpu", attention="flex")
    eager = PairRM.from_pretrained(sys.argv[2], device="cpu", attention="eager")
    got = [flex.compare(prompts, a, b).tolist() for _ in range(2)]
    print(json.dumps({"got": got, "want": eager.compare(prompts, a, b).tolist(), "stats": flex_stats()}))
    """
)


@pytest.mark.parametrize("failure", ["compiler", "import"])
def test_flex_falls_back_to_fused_with_one_warning(failure, tiny_hf_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    if failure == "compiler":
        env["CXX"] = str(tmp_path / "no-such-c++")  # inductor's C++ compiler, missing: compiling really fails
    done = subprocess.run(
        [sys.executable, "-c", _FALLBACK_SCRIPT, failure, str(tiny_hf_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "flex attention is unavailable" in line]
    assert len(warnings) == 1, done.stderr[-3000:]
    assert ("C++ compiler" if failure == "compiler" else "has no torch.nn.attention.flex_attention") in warnings[0]
    assert "using the fused attention instead" in warnings[0]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["stats"]["disabled"] and result["stats"]["compiles"] == 0
    for got in result["got"]:
        _assert_same_decisions(np.array(got), np.array(result["want"]))
