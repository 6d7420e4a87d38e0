"""The ``pairrm`` command and its resumable file jobs.

``main`` parses the command line (:mod:`.main`); :mod:`.tasks` turns rows into PairRM calls, :mod:`.jobs` runs
them in resumable, shardable chunks, :mod:`.io` reads and writes tables, :mod:`.eval_command` is ``pairrm eval``.
"""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
