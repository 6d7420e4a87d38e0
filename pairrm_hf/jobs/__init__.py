"""Resumable, shardable file jobs (rank, compare, score, label) with atomic chunks and locks, table io, and the
batch callables for ``datasets.map`` and Ray Data."""
