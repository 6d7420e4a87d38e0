"""Evaluation: pairwise accuracy, GPT-Rank and top-k metrics, rank correlations, selection trade-offs, ranker
comparisons."""
