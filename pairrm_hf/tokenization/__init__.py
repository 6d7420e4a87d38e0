"""Pair encoding: the DeBERTa-v3 tokenizer with the original's exact ids, and the source/candidate row budgets."""
