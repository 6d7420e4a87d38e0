"""The ranking core: the input rule, the batched engine, comparison schedules, aggregation, reward arithmetic and
the :class:`~pairrm_hf.PairRM` API that every surface calls."""
