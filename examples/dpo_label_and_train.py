"""Sample N answers per prompt, label chosen/rejected with PairRM, then train DPO on them (TRL 1.16).

Tiny offline run (from the repo root; builds a random policy and PairRM when no folders are given):
    python examples/dpo_label_and_train.py --cpu
Real models (GPU):
    python examples/dpo_label_and_train.py --policy Qwen/Qwen2.5-0.5B-Instruct --ranker llm-blender/PairRM-hf \
        --n 4 --max-new-tokens 256 --max-steps 100
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpo_with_pairrm import tiny_models  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", help="causal LM folder or Hub id (default: a tiny random one)")
    parser.add_argument("--ranker", help="PairRM folder or Hub id (default: a tiny random one)")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--n", type=int, default=3, help="samples per prompt")
    parser.add_argument("--strategy", default="best_vs_worst", choices=["best_vs_worst", "all_pairs", "best_vs_random"])
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=1)
    parser.add_argument("--cpu", action="store_true", help="CPU, fp32 (tests and tiny runs)")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from pairrm_hf.trl import generate_and_label

    work = Path(args.output_dir or tempfile.mkdtemp(prefix="dpo_pairrm_"))
    policy, ranker = args.policy, args.ranker
    if policy is None or ranker is None:
        tiny_policy, tiny_ranker = tiny_models(work / "tiny")
        policy, ranker = policy or tiny_policy, ranker or tiny_ranker

    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    if not args.cpu and __import__("torch").cuda.is_available():
        model.to("cuda")
    prompts = [
        "What is the capital of France?",
        "Write a short poem about the sea.",
        "Name a blue thing.",
        "Say hello.",
    ]
    labelled = generate_and_label(
        model, tokenizer, prompts, n=args.n, ranker=ranker, strategy=args.strategy, max_new_tokens=args.max_new_tokens
    )
    print(f"{len(labelled)} preference pairs; first: {labelled[0]}")
    config = DPOConfig(
        output_dir=str(work / "out"),
        max_steps=args.max_steps,
        per_device_train_batch_size=2,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=args.cpu,
        bf16=not args.cpu,
        activation_checkpointing=False,
    )
    DPOTrainer(model=model, args=config, train_dataset=labelled, processing_class=tokenizer).train()
    print("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
