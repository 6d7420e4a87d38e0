"""TRL adapters: rewards, judges and labelling against direct PairRM calls, plus one real step of each trainer."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pairrm_hf import PairRM
from pairrm_hf.ranking.inputs import conversation_texts
from pairrm_hf.trl import PairRMJudge, PairRMPairwiseReward, PairRMRankJudge, PairRMReward, label_preferences

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["What is the capital of France?", "Write a poem about the sea."]
ANSWERS = [
    ["Paris is the capital of France.", "Berlin.", "I do not know, maybe a city.", "The capital is Paris, a city."],
    ["The sea is blue and the sun is good.", "No.", "Water, water, the moon and the sea.", "A poem: sea."],
]


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


class Recording:
    """Wraps a reward and keeps what TRL passed in and what it got back (the real reward runs)."""

    def __init__(self, reward):
        self.reward, self.calls, self.__name__ = reward, [], reward.__name__

    def __call__(self, prompts, completions, **kwargs):
        out = self.reward(prompts=prompts, completions=completions, **kwargs)
        self.calls.append((list(prompts), list(completions), dict(kwargs), out))
        return out


# ----------------------------------------------------------------------------------------------- import hygiene
def test_importing_pairrm_hf_and_adapters_does_not_import_trl():
    code = "import sys, pairrm_hf, pairrm_hf.trl; assert 'trl' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


# ----------------------------------------------------------------------------------------------- rewards
def test_reference_reward_equals_rank_with_ref(tiny_rm):
    reward = PairRMReward(tiny_rm)
    prompts = [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    completions = [ANSWERS[0][0], ANSWERS[0][1], ANSWERS[1][0], ANSWERS[1][1]]
    refs = [ANSWERS[0][2]] * 2 + [ANSWERS[1][2]] * 2
    got = reward(prompts=prompts, completions=completions, reference=refs, trainer_state=None, completion_ids=[[1]] * 4)
    assert reward.__name__ == "pairrm_reference" and all(type(x) is float for x in got)
    for k in range(4):
        c_ab = tiny_rm.compare([prompts[k]], [completions[k]], [refs[k]], mode="ab")[0]
        c_ba = -tiny_rm.compare([prompts[k]], [completions[k]], [refs[k]], mode="ba")[0]
        assert got[k] == pytest.approx(float(c_ab) - float(c_ba), abs=1e-5)  # C[c,ref] − C[ref,c]
    # the reference itself scores exactly 0
    assert reward(prompts=PROMPTS[:1], completions=[refs[0]], reference=refs[:1]) == [0.0]


def one_turn_texts(prompt, answer):
    """The original's conversation template for one user turn, written out (typo included)."""
    instr = "Finish the following coversation in each i-th turn by filling in <Response i> with your response."
    return instr + "USER: " + prompt + "\nAssistant: <Response 1>", "<Response 1>: " + answer


def test_conversational_single_turn_uses_the_conversation_template(tiny_rm):
    # One input rule: chat messages always go through the template (a one-turn chat is no longer scored as the
    # plain string); input_format="conversation" puts the standard twin through the same template.
    completions, refs = [ANSWERS[0][0], ANSWERS[1][1]], [ANSWERS[0][1], ANSWERS[1][0]]
    conv = PairRMReward(tiny_rm)(
        prompts=[user(p) for p in PROMPTS],
        completions=[assistant(ANSWERS[0][0]), assistant(ANSWERS[1][1])],
        reference=[assistant(ANSWERS[0][1]), ANSWERS[1][0]],
    )
    std_as_conv = PairRMReward(tiny_rm, input_format="conversation")(
        prompts=PROMPTS, completions=completions, reference=refs
    )
    np.testing.assert_allclose(conv, std_as_conv, atol=1e-5)
    texts = [(one_turn_texts(p, c), one_turn_texts(p, r)[1]) for p, c, r in zip(PROMPTS, completions, refs)]
    expected = tiny_rm.compare([t[0][0] for t in texts], [t[0][1] for t in texts], [t[1] for t in texts])
    np.testing.assert_allclose(conv, expected, atol=1e-5)
    std = PairRMReward(tiny_rm)(prompts=PROMPTS, completions=completions, reference=refs)
    assert np.max(np.abs(np.subtract(std, conv))) > 1e-3  # plain strings stay plain: other texts, other scores


def test_multi_turn_prompts_use_the_conversation_template(tiny_rm):
    history = [*user("hello"), *assistant("hello, how can I help?"), *user(PROMPTS[0])]
    reward = PairRMReward(tiny_rm, mode="baseline")
    got = reward(prompts=[history], completions=[assistant("Paris.")], baseline=["Berlin."])
    src, cand = conversation_texts([*history, *assistant("Paris.")])
    _, base = conversation_texts([*history, *assistant("Berlin.")])
    assert got[0] == pytest.approx(float(tiny_rm.compare([src], [cand], [base])[0]), abs=1e-5)


def test_group_reward_is_mean_symmetric_logit_over_the_others(tiny_rm):
    reward = PairRMReward(tiny_rm, mode="group")
    prompts = [PROMPTS[0]] * 3 + [PROMPTS[1]] * 2 + [PROMPTS[0]]
    completions = ANSWERS[0][:3] + ANSWERS[1][:2] + [ANSWERS[0][3]]
    got = reward(prompts=prompts, completions=completions)
    expected = []
    for src, cands in ((PROMPTS[0], ANSWERS[0][:3]), (PROMPTS[1], ANSWERS[1][:2])):
        c = tiny_rm.comparison_matrices([src], [cands])[0].astype(np.float64)
        expected += list((c - c.T).sum(axis=1) / (len(cands) - 1))
    expected.append(0.0)  # the trailing PROMPTS[0] is its own run (groups are contiguous runs), alone → 0
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert sum(got[:3]) == pytest.approx(0.0, abs=1e-5)


def test_baseline_reward_from_callable_is_cached(tiny_rm):
    seen = []

    def baseline_fn(prompts):
        seen.append(list(prompts))
        return ["Berlin." for _ in prompts]

    reward = PairRMReward(tiny_rm, mode="baseline", baseline_fn=baseline_fn, name="vs_base")
    got = reward(prompts=[PROMPTS[0], PROMPTS[0]], completions=ANSWERS[0][:2])
    reward(prompts=[PROMPTS[0]], completions=ANSWERS[0][:1])
    assert seen == [[PROMPTS[0]]] and reward.__name__ == "vs_base"
    np.testing.assert_allclose(got, tiny_rm.compare([PROMPTS[0]] * 2, ANSWERS[0][:2], ["Berlin."] * 2), atol=1e-5)


def test_reward_bad_inputs(tiny_rm):
    reward = PairRMReward(tiny_rm)
    with pytest.raises(ValueError, match="needs the dataset column 'reference'.*received: \\['answer'\\]"):
        reward(prompts=PROMPTS, completions=ANSWERS[0][:2], answer=["x", "y"])
    with pytest.raises(ValueError, match="completions has 1 items but prompts has 2"):
        reward(prompts=PROMPTS, completions=ANSWERS[0][:1], reference=["a", "b"])
    with pytest.raises(TypeError, match=r"completions\[1\] must be a str or a list"):
        reward(prompts=PROMPTS, completions=["a", 3], reference=["a", "b"])
    with pytest.raises(TypeError, match=r"prompts\[0\] must be a str or a list"):
        reward(prompts=[None], completions=["a"], reference=["a"])
    with pytest.raises(ValueError, match="mode must be one of"):
        PairRMReward(tiny_rm, mode="pointwise")
    with pytest.raises(ValueError, match="baseline_fn only applies"):
        PairRMReward(tiny_rm, baseline_fn=lambda p: p)


def test_pairwise_reward_matches_compare_and_guards_the_layout(tiny_rm):
    a, b = [ANSWERS[0][0], ANSWERS[1][0]], [ANSWERS[0][1], ANSWERS[1][1]]
    s = tiny_rm.compare(PROMPTS, a, b).astype(np.float64)
    got = PairRMPairwiseReward(tiny_rm)(prompts=2 * PROMPTS, completions=a + b, trainer_state=None)
    np.testing.assert_allclose(got, [*s, *-s], atol=1e-5)
    proba = PairRMPairwiseReward(tiny_rm, output="proba", temperature=2.0)(prompts=2 * PROMPTS, completions=a + b)
    np.testing.assert_allclose(proba[:2], 1 / (1 + np.exp(-s / 2.0)), atol=1e-5)
    np.testing.assert_allclose(np.add(proba[:2], proba[2:]), 1.0, atol=1e-7)
    with pytest.raises(ValueError, match="2\\*B completions .* got 3"):
        PairRMPairwiseReward(tiny_rm)(prompts=PROMPTS + PROMPTS[:1], completions=a + b[:1])
    with pytest.raises(ValueError, match=r"prompts\[1\] != prompts\[3\]"):
        PairRMPairwiseReward(tiny_rm)(prompts=PROMPTS + PROMPTS[:1] * 2, completions=a + b)


def test_rewards_pickle_as_their_path_and_reload(tiny_hf_dir, tiny_rm):
    reward = PairRMReward(str(tiny_hf_dir), device="cpu", mode="group")
    assert not reward.ranker.loaded
    args = dict(prompts=[PROMPTS[0]] * 3, completions=ANSWERS[0][:3])
    before = reward(**args)
    blob = pickle.dumps(reward)
    assert len(blob) < 10_000  # the model is not in the pickle
    clone = pickle.loads(blob)
    assert not clone.ranker.loaded and clone.__name__ == "pairrm_group"
    assert clone(**args) == before
    # a loaded PairRM pickles as its name_or_path; a PairRM without one refuses clearly
    assert pickle.loads(pickle.dumps(PairRMPairwiseReward(tiny_rm))).ranker.path == str(tiny_hf_dir)
    anonymous = PairRM(tiny_rm.model.__class__(tiny_rm.model.config), tiny_rm.tokenizer, device="cpu")
    anonymous.model.name_or_path = ""
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(PairRMReward(anonymous))


# ----------------------------------------------------------------------------------------------- judges
def test_pairwise_judge_semantics(tiny_rm):
    judge = PairRMJudge(tiny_rm, seed=1)
    pairs = [[ANSWERS[0][0], ANSWERS[0][1]], [ANSWERS[1][2], ANSWERS[1][1]], ["same", "same"]]
    prompts = [*PROMPTS, PROMPTS[0]]
    s = tiny_rm.compare(prompts, [p[0] for p in pairs], [p[1] for p in pairs])
    wins = judge.judge(prompts, pairs)
    # an exact tie answers 0 (the first completion), as the original judge's "rank of the first − 1" did
    assert wins == [0 if x > 0 else 1 for x in s[:2]] + [0]
    swapped = judge.judge(prompts, [p[::-1] for p in pairs])
    assert swapped[:2] == [1 - w for w in wins[:2]] and swapped[2] == 0
    assert PairRMJudge(tiny_rm, on_tie=-1).judge(prompts, pairs)[2] == -1
    with pytest.raises(ValueError, match="on_tie must be"):
        PairRMJudge(tiny_rm, on_tie=2)
    p_ab = judge.judge(prompts, pairs, return_scores=True, temperature=0.5)
    p_ba = judge.judge(prompts, [q[::-1] for q in pairs], return_scores=True, temperature=0.5, shuffle_order=False)
    np.testing.assert_allclose(np.add(p_ab, p_ba), 1.0, atol=1e-5)
    np.testing.assert_allclose(p_ab, 1 / (1 + np.exp(-s.astype(np.float64) / 0.5)), atol=1e-5)
    assert p_ab[2] == 0.5


def test_rank_judge_orders_best_first(tiny_rm):
    judge = PairRMRankJudge(tiny_rm, seed=3)
    got = judge.judge(PROMPTS, ANSWERS)
    for order, ranking in zip(got, tiny_rm.rank_batch(PROMPTS, ANSWERS)):
        assert sorted(order) == list(range(4))
        np.testing.assert_array_equal(np.diff(ranking.scores[order]) <= 1e-6, True)
    assert judge.judge(PROMPTS, ANSWERS, shuffle_order=False) == [
        [r.index for r in k.ranked()] for k in tiny_rm.rank_batch(PROMPTS, ANSWERS)
    ]


def test_judges_bad_inputs_and_lazy_load(tiny_rm, tiny_hf_dir):
    judge = PairRMJudge(tiny_rm)
    with pytest.raises(ValueError, match=r"completions\[1\] has 3 completions; PairRMJudge compares exactly 2"):
        judge.judge(PROMPTS, [["a", "b"], ["a", "b", "c"]])
    with pytest.raises(TypeError, match=r"completions\[0\]\[1\] must be a str"):
        judge.judge(PROMPTS[:1], [["a", None]])
    with pytest.raises(ValueError, match="completions has 1 items but prompts has 2"):
        judge.judge(PROMPTS, [["a", "b"]])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        judge.judge(PROMPTS[:1], [["a", "b"]], return_scores=True, temperature=0)
    lazy = PairRMJudge(str(tiny_hf_dir))
    assert not lazy.ranker.loaded  # nothing is loaded (and no Accelerator built) before the first call
    assert lazy.judge(PROMPTS[:1], [["a", "b"]]) in ([0], [1], [-1]) and lazy.ranker.rm.device.type == "cpu"


def test_label_preferences_loads_a_path_once_per_process(tiny_hf_dir, monkeypatch):
    from pairrm_hf.ranking import ranker as ranker_module

    loads = []
    real = PairRM.from_pretrained.__func__

    def counting(cls, *args, **kwargs):  # the real loader, counted
        loads.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(PairRM, "from_pretrained", classmethod(counting))
    monkeypatch.setattr(ranker_module, "_SHARED", {})  # start from an empty process cache
    rows = [{"prompt": PROMPTS[0], "completions": ANSWERS[0]}]
    first = label_preferences(rows, ranker=str(tiny_hf_dir))
    models = list(ranker_module._SHARED.values())
    second = label_preferences(rows + rows, ranker=str(tiny_hf_dir), strategy="all_pairs")
    assert len(loads) == 1 and list(ranker_module._SHARED.values()) == models and len(models) == 1
    assert len(first) == 1 and len(second) == 12


# ----------------------------------------------------------------------------------------------- labelling
def _scores(rm, prompts, lists):
    return [r.scores.astype(np.float64) for r in rm.rank_batch(prompts, lists)]


def test_label_best_vs_worst_picks_the_models_extremes(tiny_rm):
    data = [{"prompt": p, "completions": c} for p, c in zip(PROMPTS, ANSWERS)]
    out = label_preferences(data, ranker=tiny_rm)
    assert out.column_names == [
        "prompt",
        "chosen",
        "rejected",
        "score_chosen",
        "score_rejected",
        "rank_chosen",
        "rank_rejected",
    ]
    for row, prompt, cands, scores in zip(out, PROMPTS, ANSWERS, _scores(tiny_rm, PROMPTS, ANSWERS)):
        assert row["prompt"] == prompt
        assert row["chosen"] == cands[int(np.argmax(scores))] and row["rejected"] == cands[int(np.argmin(scores))]
        assert (
            row["score_chosen"] == pytest.approx(scores.max()) and row["rank_chosen"] == 1 and row["rank_rejected"] == 4
        )


def test_label_all_pairs_ties_margin_and_random(tiny_rm):
    import datasets

    cands = [ANSWERS[0][0], ANSWERS[0][1], ANSWERS[0][1]]  # two identical completions tie exactly
    ds = datasets.Dataset.from_dict({"q": [PROMPTS[0]], "samples": [cands]})
    kept = label_preferences(ds, "q", "samples", strategy="all_pairs", ranker=tiny_rm, ties="keep")
    skipped = label_preferences(ds, "q", "samples", strategy="all_pairs", ranker=tiny_rm)
    assert len(kept) == 3 and len(skipped) == 2
    assert all(r["score_chosen"] > r["score_rejected"] for r in skipped)
    margin = abs(kept[0]["score_chosen"] - kept[0]["score_rejected"])
    assert len(label_preferences(ds, "q", "samples", strategy="all_pairs", ranker=tiny_rm, min_margin=margin + 1)) == 0
    rnd = label_preferences(
        [{"prompt": PROMPTS[1], "completions": ANSWERS[1]}] * 5,
        strategy="best_vs_random",
        ranker=tiny_rm,
        seed=7,
        batch_size=2,
    )
    best = ANSWERS[1][int(np.argmax(_scores(tiny_rm, PROMPTS[1:], ANSWERS[1:])[0]))]
    assert all(r["chosen"] == best and r["rejected"] != best for r in rnd)
    again = label_preferences(
        [{"prompt": PROMPTS[1], "completions": ANSWERS[1]}] * 5,
        strategy="best_vs_random",
        ranker=tiny_rm,
        seed=7,
        batch_size=5,
    )
    assert again["rejected"] == rnd["rejected"]  # the draw does not depend on batch_size


def test_label_conversational_keeps_messages(tiny_rm):
    messages = label_preferences(
        [{"prompt": user(PROMPTS[0]), "completions": [assistant(a) for a in ANSWERS[0][:2]]}], ranker=tiny_rm
    )
    strings = label_preferences([{"prompt": user(PROMPTS[1]), "completions": ANSWERS[1][:2]}], ranker=tiny_rm)
    out = [messages[0], strings[0]]
    # chats use the conversation template, as the standard rows do with input_format="conversation"
    std = label_preferences(
        [{"prompt": p, "completions": c[:2]} for p, c in zip(PROMPTS, ANSWERS)],
        ranker=tiny_rm,
        input_format="conversation",
    )
    for row, srow in zip(out, std):
        assert row["prompt"][0]["role"] == "user"
        assert row["chosen"] == assistant(srow["chosen"]) and row["rejected"] == assistant(srow["rejected"])


def test_label_bad_inputs(tiny_rm):
    data = [{"prompt": PROMPTS[0], "completions": ANSWERS[0]}]
    with pytest.raises(ValueError, match="strategy must be one of"):
        label_preferences(data, strategy="best", ranker=tiny_rm)
    with pytest.raises(ValueError, match="completions_column='answers' is not a column"):
        label_preferences(data, completions_column="answers", ranker=tiny_rm)
    with pytest.raises(ValueError, match="ties must be"):
        label_preferences(data, ties="drop", ranker=tiny_rm)
    with pytest.raises(TypeError, match="dataset must be a datasets.Dataset"):
        label_preferences("data.json", ranker=tiny_rm)


# ----------------------------------------------------------------------------------------------- trainers
@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    from pairrm_hf.testing import build_tiny_policy

    return build_tiny_policy(tmp_path_factory.mktemp("policy"))


def _cpu_args(tmp_path, **kwargs):
    return dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        activation_checkpointing=False,
        save_strategy="no",
        max_steps=1,
        logging_steps=1,
        learning_rate=1e-3,
        **kwargs,
    )


def _load(policy_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(policy_dir), AutoTokenizer.from_pretrained(policy_dir)


@pytest.mark.slow
def test_grpo_step_with_reference_reward_conversational(tiny_rm, policy_dir, tmp_path):
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    model, tok = _load(policy_dir)
    ds = datasets.Dataset.from_dict(
        {"prompt": [user(p) for p in PROMPTS * 2], "reference": [a[0] for a in ANSWERS] * 2}
    )
    rec = Recording(PairRMReward(tiny_rm))
    args = GRPOConfig(**_cpu_args(tmp_path, per_device_train_batch_size=4, num_generations=2, max_completion_length=8))
    trainer = GRPOTrainer(model=model, reward_funcs=rec, args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    prompts, completions, kwargs, out = rec.calls[0]
    assert isinstance(prompts[0], list) and completions[0][0]["role"] == "assistant" and len(out) == len(completions)
    texts = [
        (one_turn_texts(p[-1]["content"], c[0]["content"]), one_turn_texts(p[-1]["content"], r)[1])
        for p, c, r in zip(prompts, completions, kwargs["reference"])
    ]
    expected = tiny_rm.compare([t[0][0] for t in texts], [t[0][1] for t in texts], [t[1] for t in texts])
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert any("rewards/pairrm_reference/mean" in h for h in trainer.state.log_history)


@pytest.mark.slow
def test_rloo_step_with_group_reward(tiny_rm, policy_dir, tmp_path):
    import datasets
    from trl import RLOOConfig, RLOOTrainer

    model, tok = _load(policy_dir)
    ds = datasets.Dataset.from_dict({"prompt": PROMPTS * 2})
    rec = Recording(PairRMReward(tiny_rm, mode="group"))
    args = RLOOConfig(**_cpu_args(tmp_path, per_device_train_batch_size=4, num_generations=2, max_completion_length=8))
    RLOOTrainer(model=model, reward_funcs=rec, args=args, train_dataset=ds, processing_class=tok).train()
    prompts, completions, _, out = rec.calls[0]
    assert prompts[0] == prompts[1] and isinstance(completions[0], str)
    for k in range(0, len(prompts), 2):  # pairs: the mean over one opponent is the symmetric logit itself
        s = float(tiny_rm.compare([prompts[k]], [completions[k]], [completions[k + 1]])[0])
        assert out[k] == pytest.approx(s, abs=1e-5) and out[k + 1] == pytest.approx(-s, abs=1e-5)


@pytest.mark.slow
def test_online_dpo_step_with_pairwise_reward(tiny_rm, policy_dir, tmp_path):
    import datasets
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    model, tok = _load(policy_dir)
    ds = datasets.Dataset.from_dict({"prompt": PROMPTS * 2})
    rec = Recording(PairRMPairwiseReward(PairRMJudge(tiny_rm)))
    args = OnlineDPOConfig(**_cpu_args(tmp_path, per_device_train_batch_size=2, max_new_tokens=8))
    OnlineDPOTrainer(model=model, reward_funcs=rec, args=args, train_dataset=ds, processing_class=tok).train()
    prompts, completions, _, out = rec.calls[0]
    b = len(prompts) // 2
    s = tiny_rm.compare(prompts[:b], completions[:b], completions[b:])
    np.testing.assert_allclose(out, [*s, *-s], atol=1e-5)


@pytest.mark.slow
def test_dpo_step_on_labelled_data(tiny_rm, policy_dir, tmp_path):
    from trl import DPOConfig, DPOTrainer

    from pairrm_hf.trl import generate_and_label

    model, tok = _load(policy_dir)
    labelled = generate_and_label(model, tok, PROMPTS * 2, n=3, ranker=tiny_rm, max_new_tokens=6)
    assert len(labelled) == 4 and labelled[0]["chosen"][0]["role"] == "assistant"  # chat template → conversational
    args = DPOConfig(**_cpu_args(tmp_path, per_device_train_batch_size=2, max_length=64))
    trainer = DPOTrainer(model=model, args=args, train_dataset=labelled, processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 1


@pytest.mark.slow
@pytest.mark.parametrize("script", ["grpo_with_pairrm.py", "dpo_label_and_train.py"])
def test_examples_run_on_tiny_models(script, tiny_hf_dir, policy_dir, tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "examples" / script),
        "--policy",
        str(policy_dir),
        "--ranker",
        str(tiny_hf_dir),
        "--output-dir",
        str(tmp_path),
        "--cpu",
    ]
    result = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done" in result.stdout
