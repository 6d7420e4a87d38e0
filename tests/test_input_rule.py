"""One input rule on every surface: a string row and chat rows give the same PairRM texts and logits everywhere.

The expected texts are written out by hand here (the original's conversation template, typo included), and the
expected logits come from scoring those texts as plain strings; every surface must agree with them to 1e-5.
Plus: ``pairwise_accuracy(..., input_format="conversation")`` against an independent restatement of
RewardBench's PairRM scoring (its formatting of every row, its pair tokenization and its AB − BA > 0 rule).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pairrm_hf import Blender
from pairrm_hf.cli import main
from pairrm_hf.evaluation.metrics import pairwise_accuracy
from pairrm_hf.ranking.inputs import answer_texts, preference_texts
from pairrm_hf.training import PairRMDataCollator
from pairrm_hf.trl import PairRMJudge, PairRMPairwiseReward, PairRMRankJudge, PairRMReward, label_preferences

ATOL = 1e-5
INSTR = "Finish the following coversation in each i-th turn by filling in <Response i> with your response."
ANSWER_A, ANSWER_B = "Paris is the capital of France.", "I think it is Berlin."
QUESTION = "What is the capital of France?"


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


CHAT3_PROMPT = [
    {"role": "system", "content": "You are a geography tutor."},
    user("Hello!"),
    assistant("Hi, what would you like to learn?"),
    user("Europe, please."),
    assistant("Sure. Ask me anything about Europe."),
    user(QUESTION),
]
CHAT3_SOURCE = (
    "You are a geography tutor.\n" + INSTR + "USER: Hello!\nAssistant: <Response 1>\n"
    "USER: Europe, please.\nAssistant: <Response 2>\nUSER: " + QUESTION + "\nAssistant: <Response 3>"
)
CHAT3_HISTORY = "<Response 1>: Hi, what would you like to learn?\n<Response 2>: Sure. Ask me anything about Europe.\n"
CHAT1_SOURCE = INSTR + "USER: " + QUESTION + "\nAssistant: <Response 1>"

#: (prompt as the caller gives it, input_format, expected source, expected candidate text of A and B)
CASES = {
    "string": (QUESTION, "auto", QUESTION, ANSWER_A, ANSWER_B),
    "chat1": ([user(QUESTION)], "auto", CHAT1_SOURCE, "<Response 1>: " + ANSWER_A, "<Response 1>: " + ANSWER_B),
    "chat3": (
        CHAT3_PROMPT,
        "auto",
        CHAT3_SOURCE,
        CHAT3_HISTORY + "<Response 3>: " + ANSWER_A,
        CHAT3_HISTORY + "<Response 3>: " + ANSWER_B,
    ),
    # RewardBench's way: a plain row formatted as a one-turn chat
    "string_as_conversation": (
        QUESTION,
        "conversation",
        CHAT1_SOURCE,
        "<Response 1>: " + ANSWER_A,
        "<Response 1>: " + ANSWER_B,
    ),
}


@pytest.fixture(params=list(CASES), scope="module")
def case(request, tiny_rm):
    prompt, fmt, source, text_a, text_b = CASES[request.param]
    # the reference: the hand-written texts scored as plain strings (no formatting involved)
    c = tiny_rm.comparison_matrices([source], [[text_a, text_b]])[0].astype(np.float64)
    return {
        "name": request.param,
        "prompt": prompt,
        "format": fmt,
        "source": source,
        "texts": (text_a, text_b),
        "s": c[0, 1] - c[1, 0],
        "matrix": c,
    }


def _answers(case):
    """The answers in each form the case allows: str always; assistant messages for chats."""
    forms = [(ANSWER_A, ANSWER_B)]
    if case["name"].startswith("chat"):
        forms.append(([assistant(ANSWER_A)], [assistant(ANSWER_B)]))
    return forms


def test_texts(case):
    for a, b in _answers(case):
        assert answer_texts(case["prompt"], a, input_format=case["format"]) == (case["source"], case["texts"][0])
        assert answer_texts(case["prompt"], b, input_format=case["format"]) == (case["source"], case["texts"][1])
        row = {"prompt": case["prompt"], "chosen": a, "rejected": b}
        assert preference_texts(row, input_format=case["format"]) == (case["source"], *case["texts"])


def test_pairrm_and_blender(case, tiny_rm):
    p, fmt, s = case["prompt"], case["format"], case["s"]
    for a, b in _answers(case):
        assert abs(tiny_rm.compare([p], [a], [b], input_format=fmt)[0] - s) <= ATOL
        assert abs(tiny_rm.compare_proba([p], [a], [b], input_format=fmt)[0] - 1 / (1 + math.exp(-s))) <= ATOL
        np.testing.assert_allclose(
            tiny_rm.comparison_matrices([p], [[a, b]], input_format=fmt)[0], case["matrix"], atol=ATOL
        )
        ranking = tiny_rm.rank_batch([p], [[a, b]], input_format=fmt)[0]
        np.testing.assert_allclose(ranking.scores, [s / 2, -s / 2], atol=ATOL)
        assert ranking.candidates == [a, b]  # the candidates come back as given
        ranked = tiny_rm.rank(p, [a, b], input_format=fmt)
        assert ranked[0].text == (a if s > 0 else b)
        reward = tiny_rm.rank_with_ref([p], [[a]], references=[b], input_format=fmt)[0][0]
        assert abs(reward - s) <= ATOL
        assert tiny_rm.best_of_n([p], [[a, b]], input_format=fmt) == [a if s > 0 else b]
        assert tiny_rm.worst_of_n([p], [[a, b]], method="bubble", input_format=fmt) == [b if s > 0 else a]
        blender = Blender(tiny_rm)
        got = blender.compare([p], [a], [b], return_logits=True, input_format=fmt, disable_tqdm=True)[0]
        assert abs(got - s) <= ATOL
        scores = blender.rank([p], [[a, b]], return_scores=True, input_format=fmt, disable_tqdm=True)[0]
        np.testing.assert_allclose(scores, [s / 2, -s / 2], atol=ATOL)
    if case["name"].startswith("chat"):
        # the same chats as whole conversations, with no prompt
        conv_a, conv_b = [*case["prompt"], assistant(ANSWER_A)], [*case["prompt"], assistant(ANSWER_B)]
        assert abs(tiny_rm.compare(None, [conv_a], [conv_b])[0] - s) <= ATOL
        assert abs(tiny_rm.compare_conversations([conv_a], [conv_b])[0] - s) <= ATOL
        assert abs(blender.compare_conversations([conv_a], [conv_b], return_logits=True)[0] - s) <= ATOL
        assert tiny_rm.rank(None, [conv_a, conv_b])[0].text == (conv_a if s > 0 else conv_b)


def test_trl_rewards_and_judges(case, tiny_rm):
    p, fmt, s = case["prompt"], case["format"], case["s"]
    for a, b in _answers(case):
        for mode, column in (("reference", "reference"), ("baseline", "baseline")):
            reward = PairRMReward(tiny_rm, mode=mode, input_format=fmt)
            assert abs(reward(prompts=[p], completions=[a], **{column: [b]})[0] - s) <= ATOL
        group = PairRMReward(tiny_rm, mode="group", input_format=fmt)(prompts=[p, p], completions=[a, b])
        np.testing.assert_allclose(group, [s, -s], atol=ATOL)
        pairwise = PairRMPairwiseReward(tiny_rm, input_format=fmt)(prompts=[p, p], completions=[a, b])
        np.testing.assert_allclose(pairwise, [s, -s], atol=ATOL)
        judge = PairRMJudge(tiny_rm, input_format=fmt)
        proba = judge.judge([p], [[a, b]], shuffle_order=False, return_scores=True)[0]
        assert abs(proba - 1 / (1 + math.exp(-s))) <= ATOL
        assert judge.judge([p], [[a, b]])[0] == (0 if s > 0 else 1)
        assert PairRMRankJudge(tiny_rm, input_format=fmt).judge([p], [[a, b]]) == [[0, 1] if s > 0 else [1, 0]]


def test_label_preferences(case, tiny_rm):
    p, fmt, s = case["prompt"], case["format"], case["s"]
    for a, b in _answers(case):
        rows = label_preferences([{"prompt": p, "completions": [a, b]}], ranker=tiny_rm, input_format=fmt)
        assert len(rows) == 1
        chosen, rejected = (a, b) if s > 0 else (b, a)
        if isinstance(p, list) and isinstance(chosen, str):  # conversational rows get assistant-message answers
            chosen, rejected = [assistant(chosen)], [assistant(rejected)]
        assert rows[0]["chosen"] == chosen and rows[0]["rejected"] == rejected
        assert abs(rows[0]["score_chosen"] - abs(s) / 2) <= ATOL  # max_logits with n=2: s/2
        assert abs(rows[0]["score_rejected"] + abs(s) / 2) <= ATOL


def test_cli_tasks(case, tiny_hf_dir, tmp_path):
    p, fmt, s = case["prompt"], case["format"], case["s"]
    rows = [{"prompt": p, "candidates": [a, b], "a": a, "b": b, "ref": b} for a, b in _answers(case)]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    common = ["--model", str(tiny_hf_dir), "--device", "cpu", "--no-progress", "--input-format", fmt]

    def run(task, *extra):
        out = tmp_path / f"{task}.jsonl"
        assert main([task, str(data), "-o", str(out), *extra, *common]) == 0
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]

    for row in run("compare"):
        assert abs(row["pairrm_logit"] - s) <= ATOL
    for row in run("rank"):
        np.testing.assert_allclose(row["pairrm_scores"], [s / 2, -s / 2], atol=ATOL)
    for row in run("score", "--reference-column", "ref"):
        np.testing.assert_allclose(row["pairrm_rewards"], [s, 0.0], atol=ATOL)
    for row, given in zip(run("label"), rows):
        assert row["chosen"] == given["candidates"][0 if s > 0 else 1]
        assert abs(row["score_chosen"] - abs(s) / 2) <= ATOL


def test_training_collator(case, tiny_rm):
    fmt, s = case["format"], case["s"]
    # what the collator must pack: the hand-written texts as a plain row
    want = PairRMDataCollator(tiny_rm.tokenizer, tiny_rm.lengths)(
        [{"prompt": case["source"], "chosen": case["texts"][0], "rejected": case["texts"][1]}]
    )
    collator = PairRMDataCollator(tiny_rm.tokenizer, tiny_rm.lengths, input_format=fmt)
    for a, b in _answers(case):
        got = collator([{"prompt": case["prompt"], "chosen": a, "rejected": b}])
        for key in ("input_ids", "attention_mask", "labels"):
            assert torch.equal(got[key], want[key]), key
        with torch.inference_mode():
            logits = tiny_rm.model(
                input_ids=got["input_ids"].to(tiny_rm.device), attention_mask=got["attention_mask"].to(tiny_rm.device)
            ).logits.reshape(-1)
        assert abs(float(logits[0] - logits[1]) - s) <= ATOL  # the packed rows are (A, B) and (B, A)


def test_pairwise_accuracy(case, tiny_rm):
    for a, b in _answers(case):
        result = pairwise_accuracy(
            tiny_rm, [{"prompt": case["prompt"], "chosen": a, "rejected": b}], input_format=case["format"]
        )
        assert abs(result["margins"][0] - case["s"]) <= ATOL
        assert result["accuracy"] == (1.0 if case["s"] > 0 else 0.0)


# ------------------------------------------------------------------------------------------- RewardBench
REWARDBENCH_ROWS = [
    {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "Berlin.", "subset": "facts"},
    {"prompt": "2+2?", "chosen": "4", "rejected": "5", "subset": "math"},
    {
        "prompt": "Say hi politely.",
        "chosen": "Hello, nice to meet you!",
        "rejected": "What do you want?",
        "subset": "chat",
    },
    {"prompt": "Name a color.", "chosen": "Blue.", "rejected": "The number seven.", "subset": "chat"},
    {"prompt": "Translate 'chat' to English.", "chosen": "Cat.", "rejected": "Chat.", "subset": "facts"},
    {"prompt": "Is the earth flat?", "chosen": "No, it is roughly a sphere.", "rejected": "Yes.", "subset": "facts"},
    {"prompt": "Write one word.", "chosen": "Word", "rejected": "", "subset": "math"},
]


def _rewardbench_pairrm(model, tokenizer, rows):
    """RewardBench's PairRM scoring, restated: each plain row becomes the chats [user: prompt, assistant: answer];
    PairRM's conversation texts; its pair tokenization (prefix + text, 1224 source tokens, the rest halved); one
    forward in each order; a row is won iff logit(chosen, rejected) − logit(rejected, chosen) > 0."""
    results, margins = [], []
    for row in rows:
        source = INSTR + "USER: " + row["prompt"] + "\nAssistant: <Response 1>"
        chosen, rejected = "<Response 1>: " + row["chosen"], "<Response 1>: " + row["rejected"]

        def encode(first, second, source=source):
            src = tokenizer.encode("<|source|>" + source, max_length=1224, truncation=True)
            budget = (1224 + 2 * 412 - len(src)) // 2
            one = tokenizer.encode("<|candidate1|>" + first, max_length=budget, truncation=True)
            two = tokenizer.encode("<|candidate2|>" + second, max_length=budget, truncation=True)
            return torch.tensor([src + one + two], device=model.device)

        with torch.inference_mode():
            ab = float(model(input_ids=encode(chosen, rejected)).logits.reshape(-1)[0])
            ba = float(model(input_ids=encode(rejected, chosen)).logits.reshape(-1)[0])
        margins.append(ab - ba)
        results.append(1 if ab - ba > 0 else 0)
    return results, margins


def test_pairwise_accuracy_reproduces_rewardbench(tiny_rm):
    results, margins = _rewardbench_pairrm(tiny_rm.model, tiny_rm.tokenizer, REWARDBENCH_ROWS)
    got = pairwise_accuracy(tiny_rm, REWARDBENCH_ROWS, input_format="conversation")
    np.testing.assert_allclose(got["margins"], margins, atol=ATOL)
    assert got["accuracy"] == pytest.approx(sum(results) / len(results))
    for name in ("facts", "math", "chat"):
        picked = [r for r, row in zip(results, REWARDBENCH_ROWS) if row["subset"] == name]
        assert got["subsets"][name]["accuracy"] == pytest.approx(sum(picked) / len(picked))
    # the default keeps plain rows plain: other texts, so other margins
    plain = pairwise_accuracy(tiny_rm, REWARDBENCH_ROWS)
    assert np.max(np.abs(np.subtract(plain["margins"], margins))) > 1e-3


def test_input_format_is_checked_everywhere(tiny_rm):
    with pytest.raises(ValueError, match="input_format must be one of"):
        tiny_rm.compare(["q"], ["a"], ["b"], input_format="chat")
    with pytest.raises(ValueError, match="input_format must be one of"):
        PairRMReward(tiny_rm, input_format="chat")
    with pytest.raises(ValueError, match="input_format must be one of"):
        PairRMDataCollator(tiny_rm.tokenizer, input_format="chat")
    with pytest.raises(ValueError, match="input_format must be one of"):
        pairwise_accuracy(tiny_rm, [{"prompt": "q", "chosen": "a", "rejected": "b"}], input_format="chat")
    assert main(["compare", "x.jsonl", "-o", "y.jsonl", "--input-format", "chat"]) == 2
