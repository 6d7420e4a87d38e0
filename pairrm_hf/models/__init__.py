"""Models, one per file in the transformers style: PairRM (``DebertaV2PairRM``), PairRanker on any encoder,
SummaReranker, the SimCLS dual reranker, their shared attention code and the registered model types."""
