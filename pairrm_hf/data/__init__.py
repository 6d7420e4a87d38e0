"""Datasets in the paper's form (MixInstruct rows with candidates and metric scores)."""
