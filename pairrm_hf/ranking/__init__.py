"""The ranking core: the input rule, the batched engine and its options, comparison schedules, the registry of
ranking methods (:mod:`~pairrm_hf.ranking.methods`), aggregation, reward arithmetic and the
:class:`~pairrm_hf.PairRM` API that every surface calls."""
