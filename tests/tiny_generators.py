"""Tiny local generators for the fusion / best-of-n tests and examples: a T5 fuser and a chat Llama (offline)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

ORACLE_FUSER = Path(__file__).parent / "fixtures" / "oracle" / "fuser_tiny"

#: A minimal chat template: one line per message, then the assistant's turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def build_tiny_t5(folder: Path, *, seed: int = 0) -> Path:
    """A random Flan-style tiny T5 with the oracle fuser's tokenizer (``spiece.model``, ``<extra_id_*>``)."""
    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(ORACLE_FUSER))
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.copyfile(ORACLE_FUSER / "spiece.model", folder / "spiece.model")
    return folder


def build_tiny_llama(folder: Path, *, seed: int = 0) -> Path:
    """A random tiny Llama-style causal LM whose tokenizer has :data:`CHAT_TEMPLATE` and a pad token."""
    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(ORACLE_FUSER))
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


if __name__ == "__main__":  # build both into a folder, for trying the examples by hand
    import sys

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny_generators")
    print(build_tiny_t5(root / "t5"), build_tiny_llama(root / "llama"))
