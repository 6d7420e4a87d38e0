"""Results you can trust (issue 12, sections 2-4): no silent NaN, one ``top_k`` rule, order-free references,
errors that name the file and the fix, and labelling contracts on edge rows.

Cases covered (also in the "Bad input" table of docs/guides/cli-jobs.md): forced fp16 overflow is recomputed in fp32
on every surface; weights that stay non-finite raise naming the input; ``rank(top_k=)`` larger than the candidates
or a bool; ``rank_with_ref`` ties under shuffling; ``device="cuda"`` without CUDA; ``pairrm eval --data`` a missing
file; a ``config.json`` that is not JSON, a damaged safetensors file, a damaged or code-carrying
``pytorch_model.bin``; ``label_preferences`` on rows with fewer than two completions and with no pair left.
"""

from __future__ import annotations

import copy
import logging
import shutil
import warnings

import numpy as np
import pytest
import torch

from pairrm_hf import PairRM
from pairrm_hf.checkpoints.loading import load_pairrm
from pairrm_hf.cli import main
from pairrm_hf.cli.eval_command import eval_main
from pairrm_hf.ranking.engine import NonFiniteLogitsError

PROMPTS = ["What is 2+2?", "Say hi."]
CANDIDATES = [["4", "five", "22", "four"], ["hello there", "go", "hi!"]]


# ------------------------------------------------------------------------------------------- non-finite logits
@pytest.fixture(scope="module")
def overflow_model(tiny_hf_dir):
    """The tiny model with its last head layer scaled so that fp16 overflows (head outputs > 65504) while fp32 does
    not; every weight still fits in fp16."""
    loaded = load_pairrm(tiny_hf_dir)
    with torch.no_grad():
        loaded.model.head_layer[4].weight.mul_(3e4)
        loaded.model.head_layer[4].bias.fill_(-65000.0)  # fp16 ends at ±65504
    assert loaded.model.head_layer[4].weight.half().isfinite().all()
    return loaded


def test_fp16_overflow_is_recomputed_in_fp32_on_every_surface(overflow_model, caplog):
    from pairrm_hf.trl import PairRMReward, label_preferences

    fp16 = PairRM(copy.deepcopy(overflow_model.model), overflow_model.tokenizer, device="cpu", dtype="float16")
    # Independent expectation: the same (fp16-rounded) weights run in fp32 eager mode.
    expected = PairRM(copy.deepcopy(fp16.model).float(), overflow_model.tokenizer, device="cpu", attention="eager")
    pairs = np.array([(0, i, j) for i in range(4) for j in range(4) if i != j])
    raw = fp16.engine._unique_pair_logits(fp16.engine.encode(PROMPTS[:1], CANDIDATES[:1]), pairs)
    assert not np.isfinite(raw).all()  # the overflow is real, not hypothetical
    with caplog.at_level(logging.WARNING, logger="pairrm_hf.ranking.engine"):
        got = fp16.rank_batch(PROMPTS, CANDIDATES)
    assert "non-finite logits" in caplog.text and "float32" in caplog.text
    want = expected.rank_batch(PROMPTS, CANDIDATES)
    for g, w in zip(got, want):
        assert np.isfinite(g.scores).all()
        np.testing.assert_allclose(g.scores, w.scores, rtol=1e-5)
        np.testing.assert_array_equal(g.ranks, w.ranks)
    assert fp16.best_of_n(PROMPTS, CANDIDATES) == expected.best_of_n(PROMPTS, CANDIDATES)
    np.testing.assert_allclose(
        fp16.compare(PROMPTS, ["4", "go"], ["five", "hi!"]),
        expected.compare(PROMPTS, ["4", "go"], ["five", "hi!"]),
        rtol=1e-5,
    )
    rewards = PairRMReward(fp16, mode="group")(prompts=[PROMPTS[0]] * 3, completions=CANDIDATES[0][:3])
    assert np.isfinite(rewards).all()
    np.testing.assert_allclose(
        rewards,
        PairRMReward(expected, mode="group")(prompts=[PROMPTS[0]] * 3, completions=CANDIDATES[0][:3]),
        rtol=1e-5,
    )
    labelled = label_preferences([{"prompt": p, "completions": c} for p, c in zip(PROMPTS, CANDIDATES)], ranker=fp16)
    assert len(labelled) == 2 and np.isfinite(labelled["score_chosen"]).all()


def test_non_finite_even_in_fp32_raises_naming_the_input(overflow_model):
    model = copy.deepcopy(overflow_model.model)
    with torch.no_grad():
        model.head_layer[4].bias.fill_(float("nan"))
    rm = PairRM(model, overflow_model.tokenizer, device="cpu")
    with pytest.raises(NonFiniteLogitsError, match=r"input 0 \(source '.*What is 2\+2\?.*'\), candidates 0 \('4'\)"):
        rm.rank("What is 2+2?", ["4", "five"])
    with pytest.raises(FloatingPointError, match="even in float32"):
        rm.compare(["q"], ["a"], ["b"])


# ------------------------------------------------------------------------------------------- contracts
def test_rank_top_k_one_rule(tiny_rm):
    assert [r.index for r in tiny_rm.rank("q", ["a", "bb", "ccc"], top_k=3)] == [
        r.index for r in tiny_rm.rank("q", ["a", "bb", "ccc"])
    ]
    assert len(tiny_rm.rank("q", ["a", "bb", "ccc"], top_k=2)) == 2
    with pytest.raises(ValueError, match="top_k=100 but candidates has only 2 candidates"):
        tiny_rm.rank("q", ["a", "b"], top_k=100)
    for bad in (True, False, 0, -1, 1.0, "2"):
        with pytest.raises(ValueError, match="top_k must be a positive int or None"):
            tiny_rm.rank("q", ["a", "b"], top_k=bad)


def test_longest_lexical_reference_does_not_depend_on_input_order(tiny_rm):
    cands = ["aaaa", "zzzz", "bb", "mmmm", "c"]  # three candidates tie for the longest
    rewards = tiny_rm.rank_with_ref(["q"], [cands], ref_mode="longest_lexical")[0]
    assert rewards[0] == 0.0  # "aaaa", the smallest of the longest texts, is the reference
    rng = np.random.default_rng(0)
    for _ in range(3):
        order = rng.permutation(len(cands))
        shuffled = tiny_rm.rank_with_ref(["q"], [[cands[i] for i in order]], ref_mode="longest_lexical")[0]
        np.testing.assert_allclose(shuffled[np.argsort(order)], rewards, atol=1e-5)
    # "longest" keeps upstream's rule (parity): the first of the longest in input order is the reference.
    assert tiny_rm.rank_with_ref(["q"], [cands[::-1]], ref_mode="longest")[0][1] == 0.0  # "mmmm"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_says_so_and_how_to_pick_the_cpu(tiny_hf_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"no CUDA device is available.*device='cpu'"):
        PairRM.from_pretrained(tiny_hf_dir, device="cuda")
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "q", "candidates": ["a", "b"]}\n')
    assert (
        main(["rank", str(src), "-o", str(tmp_path / "o.jsonl"), "--model", str(tiny_hf_dir), "--device", "cuda"]) == 2
    )
    assert "no CUDA device is available" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_eval_on_a_missing_file_says_it_does_not_exist(tiny_hf_dir, tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    assert eval_main(["--data", str(missing), "--model", str(tiny_hf_dir)]) == 2
    err = capsys.readouterr().err
    assert f"--data {missing}: no such file" in err and "Hub" not in err.split("(")[0]


# ------------------------------------------------------------------------------------------- files
def _damage(kind: str, folder):
    if kind == "config_not_json":
        (folder / "config.json").write_text('{"model_type": "deberta-v2",')
        return folder / "config.json", "not valid JSON"
    if kind == "safetensors_truncated":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[:3000])
        return folder / "model.safetensors", "not a valid safetensors file"
    (folder / "model.safetensors").unlink()
    path = folder / "pytorch_model.bin"
    if kind == "bin_truncated":
        torch.save({"w": torch.ones(100)}, path)
        path.write_bytes(path.read_bytes()[:300])
        return path, "not a readable PyTorch weights file"
    if kind == "bin_garbage":
        path.write_bytes(b"not a checkpoint" * 8)
        return path, "not a readable PyTorch weights file"

    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    torch.save({"w": Payload()}, path)
    return path, "holds Python objects besides tensors"


@pytest.mark.parametrize(
    "kind,layout",
    [
        ("config_not_json", "pairrm_hf"),
        ("safetensors_truncated", "pairrm_hf"),
        ("safetensors_truncated", "pairrm_blender"),
        ("bin_truncated", "pairrm_blender"),
        ("bin_garbage", "pairrm_blender"),
        ("bin_code", "pairrm_blender"),
    ],
)
def test_damaged_checkpoint_files_are_named_with_the_fix(kind, layout, oracle_dir, tiny_backbone_dir, tmp_path):
    folder = tmp_path / layout
    shutil.copytree(oracle_dir / "tiny" / layout, folder)
    path, what = _damage(kind, folder)
    with pytest.raises(ValueError) as err:
        load_pairrm(folder, backbone_config=tiny_backbone_dir if layout == "pairrm_blender" else None)
    message = str(err.value)
    assert str(path) in message and what in message, message
    assert "download the checkpoint again" in message or "safetensors copy" in message
    assert "weights_only" not in message and "safe_globals" not in message  # never advise running pickled code


# ------------------------------------------------------------------------------------------- labelling
def test_label_preferences_rows_with_fewer_than_two_completions(tiny_rm, tiny_hf_dir, tmp_path, capsys):
    from pairrm_hf.trl import label_preferences

    rows = [
        {"prompt": "p", "completions": ["a", "b"]},
        {"prompt": "q", "completions": ["only one"]},
        {"prompt": "r", "completions": []},
    ]
    with pytest.raises(ValueError, match=r"2 of 3 rows with fewer than 2 completions \(first: completions\[1\]\)"):
        label_preferences(rows, ranker=tiny_rm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = label_preferences(rows, ranker=tiny_rm, on_error="skip")
    assert any("skipped 2 of 3 rows" in str(w.message) for w in caught)
    assert len(out) == 1 and out[0]["prompt"] == "p"
    # `pairrm label` stops on the same row (exit 2), or skips it with --on-error skip
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(f'{{"prompt": "{r["prompt"]}", "candidates": {r["completions"]}}}\n'.replace("'", '"') for r in rows)
    )
    assert main(["label", str(src), "-o", str(tmp_path / "o.jsonl"), "--model", str(tiny_hf_dir), "--no-progress"]) == 2
    assert "line 2" in capsys.readouterr().err


DOCUMENTED = ["prompt", "chosen", "rejected", "score_chosen", "score_rejected", "rank_chosen", "rank_rejected"]


def test_label_preferences_always_returns_the_documented_schema(tiny_rm):
    from pairrm_hf.trl import label_preferences

    user = [{"role": "user", "content": "p"}]
    for rows in (
        [{"prompt": "p", "completions": ["same", "same"]}],  # one tie, skipped: no pair left
        [{"prompt": user, "completions": ["same", "same"]}],
        [{"prompt": "p", "completions": ["only"]}],
    ):
        out = label_preferences(rows, ranker=tiny_rm, on_error="skip")
        assert len(out) == 0 and out.column_names == DOCUMENTED
    full = label_preferences([{"prompt": user, "completions": ["a", "bb"]}], ranker=tiny_rm)
    empty = label_preferences([{"prompt": user, "completions": ["same", "same"]}], ranker=tiny_rm)
    assert empty.features == full.features  # the same types, so the two concatenate
