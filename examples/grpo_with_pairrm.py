"""GRPO with PairRM as the reward (TRL 1.16): each completion is scored against the dataset's reference answer.

Tiny offline run (from the repo root; builds a random policy and PairRM when no folders are given):
    python examples/grpo_with_pairrm.py --cpu
Real models (GPU):
    python examples/grpo_with_pairrm.py --policy Qwen/Qwen2.5-0.5B-Instruct --ranker llm-blender/PairRM-hf \
        --max-steps 200 --num-generations 8 --max-completion-length 256
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_models(folder: Path) -> tuple[str, str]:
    """Random tiny policy + PairRM (test builders), for a quick offline run."""
    sys.path.insert(0, str(ROOT))
    from pairrm_hf.testing import build_tiny_pairrm, build_tiny_policy

    return str(build_tiny_policy(folder / "policy")), str(build_tiny_pairrm(folder / "ranker"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", help="causal LM folder or Hub id (default: a tiny random one)")
    parser.add_argument("--ranker", help="PairRM folder or Hub id (default: a tiny random one)")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--mode", default="reference", choices=["reference", "group"])
    parser.add_argument("--max-steps", type=int, default=1)
    parser.add_argument("--num-generations", type=int, default=2)
    parser.add_argument("--max-completion-length", type=int, default=8)
    parser.add_argument("--cpu", action="store_true", help="CPU, fp32 (tests and tiny runs)")
    args = parser.parse_args(argv)

    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from pairrm_hf.trl import PairRMReward

    work = Path(args.output_dir or tempfile.mkdtemp(prefix="grpo_pairrm_"))
    policy, ranker = args.policy, args.ranker
    if policy is None or ranker is None:
        tiny_policy, tiny_ranker = tiny_models(work / "tiny")
        policy, ranker = policy or tiny_policy, ranker or tiny_ranker

    # Conversational prompt-only data with a reference answer column (reward = C[c, ref] − C[ref, c]).
    data = datasets.Dataset.from_dict(
        {
            "prompt": [
                [{"role": "user", "content": q}] for q in ["What is the capital of France?", "Name a blue thing."]
            ]
            * 2,
            "reference": ["The capital of France is Paris.", "The sky is blue."] * 2,
        }
    )
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    reward = PairRMReward(ranker, mode=args.mode)  # loads lazily on the first reward call
    config = GRPOConfig(
        output_dir=str(work / "out"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.num_generations * 2,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=args.cpu,
        bf16=not args.cpu,
        activation_checkpointing=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    rewards = [
        h[f"rewards/{reward.__name__}/mean"]
        for h in trainer.state.log_history
        if f"rewards/{reward.__name__}/mean" in h
    ]
    print(f"mean PairRM reward per step: {rewards}")
    print("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
