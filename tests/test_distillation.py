"""Distilling PairRM into a one-pass student: teacher targets, losses, the saved student, its model card."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from pairrm_hf.testing import build_tiny_encoder, synthetic_ranking_rows
from pairrm_hf.training.distillation import (
    candidate_sets,
    distill_pairrm,
    distillation_loss,
    group_agreement,
    student_scores,
    teacher_targets,
)


def _sets(n_sets: int, n: int, seed: int = 0) -> list[dict]:
    return [
        {"prompt": r["input"], "candidates": [c["text"] for c in r["candidates"]]}
        for r in synthetic_ranking_rows(n_sets, n_candidates=n, seed=seed)
    ]


def test_full_matrix_targets_are_the_teachers_symmetric_probabilities(tiny_rm):
    rows = _sets(3, 4)
    prompts, cands = candidate_sets(rows)
    targets = teacher_targets(tiny_rm, prompts, cands, temperature=2.0)
    matrices = tiny_rm.comparison_matrices(prompts, cands)
    for row, matrix, ranking in zip(targets, matrices, tiny_rm.rank_batch(prompts, cands)):
        symmetric = matrix - matrix.T
        np.testing.assert_allclose(row["probs"], 1 / (1 + np.exp(-symmetric / 2.0)), atol=1e-5)
        np.testing.assert_allclose(row["probs"] + row["probs"].T, 1.0, atol=1e-6)
        np.testing.assert_allclose(row["scores"], ranking.scores, atol=1e-6)
        assert row["comparisons"] == 12


def test_budgeted_schedule_targets_follow_its_order(tiny_rm):
    prompts, cands = candidate_sets(_sets(2, 16))
    targets = teacher_targets(tiny_rm, prompts, cands, schedule="knockout")
    for row, ranking in zip(targets, tiny_rm.rank_batch(prompts, cands, aggregation="knockout")):
        assert row["comparisons"] == 60
        s = ranking.scores
        expected = np.where(s[:, None] > s[None, :], 1.0, np.where(s[:, None] < s[None, :], 0.0, 0.5))
        np.testing.assert_array_equal(row["probs"], expected)


def test_ranknet_loss_matches_hand_computed_bradley_terry():
    s = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5])  # two sets: 3 and 2 candidates
    sizes = torch.tensor([3, 2])
    probs = torch.full((2, 3, 3), 0.5)
    probs[0, :3, :3] = torch.tensor([[0.5, 0.9, 0.8], [0.1, 0.5, 0.6], [0.2, 0.4, 0.5]])
    probs[1, :2, :2] = torch.tensor([[0.5, 0.3], [0.7, 0.5]])
    scores = torch.zeros(2, 3)

    def bce(d, p):
        return -(p * math.log(1 / (1 + math.exp(-d))) + (1 - p) * math.log(1 / (1 + math.exp(d))))

    s1 = [1.0, 0.0, -1.0]
    first = [bce(s1[i] - s1[j], probs[0, i, j].item()) for i in range(3) for j in range(3) if i != j]
    second = [bce(2.0 - 0.5, 0.3), bce(0.5 - 2.0, 0.7)]
    expected = (np.mean(first) + np.mean(second)) / 2
    got = distillation_loss(s, sizes, probs, scores, "ranknet")
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_listwise_loss_is_zero_at_the_target_and_shift_invariant():
    target = torch.tensor([[2.0, 0.0, -1.0]])
    sizes, probs = torch.tensor([3]), torch.full((1, 3, 3), 0.5)
    assert distillation_loss(target[0], sizes, probs, target, "listwise").item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(target[0] + 5, sizes, probs, target, "listwise").item() == pytest.approx(0.0, abs=1e-6)
    reversed_loss = distillation_loss(-target[0], sizes, probs, target, "listwise").item()
    assert reversed_loss > 0.5
    both = distillation_loss(-target[0], sizes, probs, target, "ranknet+listwise").item()
    ranknet = distillation_loss(-target[0], sizes, probs, target, "ranknet").item()
    assert both == pytest.approx(ranknet + reversed_loss, rel=1e-6)


def test_group_agreement_hand_computed():
    teacher = [np.array([3.0, 2.0, 1.0]), np.array([0.0, 1.0, 1.0])]
    student = [np.array([1.0, 3.0, 0.0]), np.array([0.0, 0.5, 2.0])]
    got = group_agreement(teacher, student)
    # set 1: student's best (index 1) is not the teacher's best; pairs (0>1 wrong, 0>2 right, 1>2 right) = 2/3
    # set 2: student's best (index 2) ties the teacher's best; strict pairs 1>0, 2>0 both right = 1
    assert got["top1_agreement"] == pytest.approx(0.5)
    assert got["pairwise_agreement"] == pytest.approx((2 / 3 + 1) / 2)


def test_bad_rows_are_named():
    with pytest.raises(ValueError, match=r"data\[1\].*'prompt' and 'candidates'"):
        candidate_sets([{"prompt": "a", "candidates": ["x", "y"]}, {"question": "b"}])
    with pytest.raises(ValueError, match=r"data\[0\]\['candidates'\] has 1 answers"):
        candidate_sets([{"prompt": "a", "candidates": ["x"]}])
    with pytest.raises(ValueError, match="data is empty"):
        candidate_sets([])


def test_unknown_loss_fails_before_any_compute(tiny_rm, tmp_path):
    with pytest.raises(ValueError, match="loss must be one of"):
        distill_pairrm(tiny_rm, _sets(2, 3), student=tmp_path / "nothing-here", loss="hinge")


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A tiny student distilled from a tiny teacher whose candidates' order it can learn (a few seconds)."""
    from pairrm_hf import PairRM
    from pairrm_hf.testing import build_tiny_pairrm

    folder = tmp_path_factory.mktemp("distill")
    teacher = PairRM.from_pretrained(build_tiny_pairrm(folder / "teacher", seed=3), device="cpu", batch_size=32)
    student = build_tiny_encoder(folder / "student-init", "deberta-v2", seed=0)
    rows = _sets(12, 4, seed=1)
    result = distill_pairrm(
        teacher,
        rows,
        rows[:6],
        student=student,
        output_dir=folder / "student",
        loss="ranknet",
        max_length=64,
        max_steps=60,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=10**6,
        seed=0,
    )
    return teacher, rows, result, student


def test_student_learns_the_teachers_order(distilled):
    teacher, rows, result, start = distilled
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    prompts, cands = candidate_sets(rows)
    targets = teacher_targets(teacher, prompts, cands)
    untrained = AutoModelForSequenceClassification.from_pretrained(str(start), num_labels=1)
    tok = AutoTokenizer.from_pretrained(str(start))
    sources = [t["source"] for t in targets]
    before = group_agreement([t["scores"] for t in targets], student_scores(untrained, tok, sources, cands))
    after = group_agreement(
        [t["scores"] for t in targets], student_scores(result.model, result.tokenizer, sources, cands)
    )
    assert after["pairwise_agreement"] >= 0.8
    assert after["pairwise_agreement"] > before["pairwise_agreement"] + 0.1
    assert result.metrics["pairwise_agreement"] == pytest.approx(
        group_agreement(
            [t["scores"] for t in targets[:6]], student_scores(result.model, result.tokenizer, sources[:6], cands[:6])
        )["pairwise_agreement"]
    )


def test_saved_student_scores_with_transformers_alone(distilled):
    import json
    from pathlib import Path

    _, rows, result, _ = distilled
    folder = result.output_dir
    files = {p.name for p in Path(folder).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
    config = json.loads((Path(folder) / "config.json").read_text())
    assert config["architectures"] == ["DebertaV2ForSequenceClassification"]
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "reward"}
    prompt, answers = rows[0]["prompt"], rows[0]["candidates"]
    expected = student_scores(result.model, result.tokenizer, [prompt], [answers])[0]
    code = (
        "import json, sys\n"
        "from transformers import pipeline\n"
        f"clf = pipeline('text-classification', model={folder!r}, device='cpu')\n"
        f"out = clf([{{'text': {prompt!r}, 'text_pair': a}} for a in {answers!r}])\n"
        "assert not any(m.startswith('pairrm_hf') for m in sys.modules)\n"
        "print(json.dumps([o['score'] for o in out]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    got = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_student_model_card_parses_and_its_snippet_runs(distilled):
    from huggingface_hub import ModelCard

    _, _, result, _ = distilled
    card = ModelCard.load(f"{result.output_dir}/README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "text-classification"
    assert {"reward-model", "pairrm", "distillation"} <= set(data["tags"])
    assert data["license"] == "apache-2.0"
    assert "base_model" not in data  # a local folder is no Hub id
    assert f"| pairwise_agreement | {result.metrics['pairwise_agreement']:.4g} |" in card.text
    assert "text_pair" in card.text  # the input form is documented
    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pairrm_hf" not in snippet
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(("Paris", "I do not"))]
    assert len(lines) == 2


def test_student_reward_for_trl_scores_the_text_pair(distilled):
    import pickle

    from pairrm_hf.trl import StudentReward

    _, rows, result, _ = distilled
    prompt, answers = rows[1]["prompt"], rows[1]["candidates"]
    reward = StudentReward(result.output_dir, device="cpu", max_length=64)
    got = reward(prompts=[prompt] * len(answers), completions=answers, trainer_state=None, extra_column=[0] * 4)
    expected = student_scores(result.model, result.tokenizer, [prompt], [answers], max_length=64)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # chat completions follow the one input rule: the same text the teacher read
    chat = reward(
        prompts=[[{"role": "user", "content": prompt}]], completions=[[{"role": "assistant", "content": answers[0]}]]
    )
    assert len(chat) == 1 and np.isfinite(chat[0])
    clone = pickle.loads(pickle.dumps(reward))
    np.testing.assert_allclose(clone(prompts=[prompt], completions=[answers[0]]), got[:1], atol=1e-5)


def test_served_student_answers_get_reward_pointwise(distilled):
    from fastapi.testclient import TestClient

    from pairrm_hf.serve.app import create_app
    from pairrm_hf.serve.pointwise import PointwiseRewardService, is_student_checkpoint

    teacher, rows, result, _ = distilled
    assert is_student_checkpoint(result.output_dir)
    assert not is_student_checkpoint(teacher.model.config._name_or_path)
    service = PointwiseRewardService.from_pretrained(result.output_dir, device="cpu", max_wait_ms=1.0)
    prompt, answers = rows[2]["prompt"], rows[2]["candidates"]
    expected = student_scores(result.model, result.tokenizer, [prompt], [answers])[0]
    with TestClient(create_app(service)) as client:
        body = {"query": [prompt + a for a in answers], "prompts": [prompt] * len(answers), "labels": [None] * 4}
        got = client.post("/get_reward", json=body)
        assert got.status_code == 200
        np.testing.assert_allclose(got.json()["rewards"], expected, atol=1e-5)
        # each response is scored on its own: one response alone gets the same reward
        alone = client.post("/get_reward", json={"query": [prompt + answers[3]], "prompts": [prompt]}).json()
        assert alone["rewards"][0] == pytest.approx(float(expected[3]), abs=1e-5)
        bad = client.post("/get_reward", json={"query": [1, 2]})
        assert bad.status_code == 422 and "query[0]" in bad.text
        assert client.post("/rank", json={"prompts": ["x"], "candidates": [["a", "b"]]}).status_code == 404
        assert client.get("/health").json()["kind"] == "pointwise"
        assert client.get("/metrics?format=prometheus").status_code == 200


def test_cli_distill_writes_a_loadable_student_with_card(tmp_path, tiny_hf_dir):
    import json

    from pairrm_hf.cli import main

    data = tmp_path / "sets.jsonl"
    data.write_text("\n".join(json.dumps({"question": r["prompt"], "answers": r["candidates"]}) for r in _sets(4, 3)))
    student = build_tiny_encoder(tmp_path / "init", "bert")
    out = tmp_path / "student"
    args = ["distill", str(data), "-o", str(out), "--model", str(tiny_hf_dir), "--student", str(student)]
    args += ["--prompt-column", "question", "--candidates-column", "answers", "--max-steps", "2", "--device", "cpu"]
    assert main([*args, "--loss", "hinge"]) == 2
    assert main([*args[:-2], "--prompt-column", "missing", "--device", "cpu"]) == 2
    assert main(args) == 0
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(str(out)).config.num_labels == 1
    assert (out / "README.md").read_text().startswith("---\n")


def test_train_pairrm_and_save_pairrm_write_model_cards(tmp_path, make_tiny_pairrm):
    from huggingface_hub import ModelCard

    from pairrm_hf import ModelCardInfo, PairRM, save_pairrm
    from pairrm_hf.testing import synthetic_preference_rows
    from pairrm_hf.training import train_pairrm

    rows = synthetic_preference_rows(8)
    out = tmp_path / "trained"
    train_pairrm(
        str(make_tiny_pairrm()),
        rows,
        rows[:4],
        output_dir=out,
        max_steps=2,
        per_device_train_batch_size=4,
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        model_card=ModelCardInfo(datasets=("llm-blender/mix-instruct",), base_model="microsoft/deberta-v3-large"),
    )
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "pairrm-hf"
    assert data["base_model"] == "microsoft/deberta-v3-large"
    assert data["datasets"] == ["llm-blender/mix-instruct"]
    assert {"reward-model", "pairrm"} <= set(data["tags"])
    assert "| eval_pairwise_accuracy |" in card.text and "| train_loss |" in card.text
    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # save_pairrm(model_card=...) writes the card without uploading; push_to_hub=True (no repo id) is refused
    rm = PairRM.from_pretrained(out, device="cpu")
    saved = save_pairrm(
        rm.model, rm.tokenizer, tmp_path / "copy", rm.lengths, model_card=ModelCardInfo(repo_id="me/rm")
    )
    assert 'PairRM.from_pretrained("me/rm"' in (tmp_path / "copy" / "README.md").read_text()
    assert PairRM.from_pretrained(saved, device="cpu").lengths == rm.lengths
    with pytest.raises(ValueError, match="repo id"):
        save_pairrm(rm.model, rm.tokenizer, tmp_path / "again", push_to_hub=True)


@pytest.mark.hub
def test_push_to_hub_round_trip(tiny_rm):  # needs HF_TOKEN with write access; skipped offline
    import uuid

    from huggingface_hub import HfApi

    from pairrm_hf import PairRM

    user = HfApi().whoami()["name"]
    repo = f"{user}/pairrm-hf-test-{uuid.uuid4().hex[:8]}"
    try:
        tiny_rm.push_to_hub(repo, private=True)
        back = PairRM.from_pretrained(repo, device="cpu")
        assert back.lengths == tiny_rm.lengths
        assert "README.md" in HfApi().list_repo_files(repo)
    finally:
        HfApi().delete_repo(repo, missing_ok=True)
