"""Inter-process locks of one ``pairrm`` job folder (``OUTPUT.parts/.lock``), so processes on one output cooperate.

POSIX record locks (``fcntl.lockf``) on single bytes of one file; the kernel drops them when a process exits, so
a killed job never leaves a stale lock behind, and they also work on NFS (through its lock manager):

* byte 0, *active*: every process working in the folder holds it shared; removing the folder (``--overwrite``,
  or the clean-up after the output is written) needs it exclusive, so it never happens under another process.
* byte ``1 + k``, *claim* of chunk ``k``: held exclusive while a process computes that chunk. Another process
  skips a claimed chunk and takes the next free one, then waits for the claims it skipped before assembling.

Record locks belong to the process, not to the file descriptor, so one :class:`JobLock` per folder and process.
Where ``fcntl`` does not exist (Windows) every lock succeeds at once: run one process per output there.
"""

from __future__ import annotations

import os

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["JobLock"]


class JobLock:
    """The locks of the job folder ``parts`` held by this process (see the module docstring)."""

    def __init__(self, parts: str):
        self.path = os.path.join(parts, ".lock")
        self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)

    def _lock(self, mode: int, byte: int, wait: bool) -> bool:
        if fcntl is None or self.fd is None:
            return True
        try:
            fcntl.lockf(self.fd, mode | (0 if wait else fcntl.LOCK_NB), 1, byte, os.SEEK_SET)
        except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: held by another process
            return False
        return True

    def share(self) -> bool:
        """Hold *active* shared (or downgrade our exclusive hold); False while another process removes the folder."""
        return self._lock(fcntl.LOCK_SH if fcntl else 0, 0, wait=False)

    def exclusive(self) -> bool:
        """Hold *active* exclusive, without waiting: True only when no other process works in the folder."""
        return self._lock(fcntl.LOCK_EX if fcntl else 0, 0, wait=False)

    def claim(self, chunk: int, *, wait: bool = False) -> bool:
        """Claim chunk ``chunk``; False when another process holds it (``wait=True`` blocks until it lets go)."""
        return self._lock(fcntl.LOCK_EX if fcntl else 0, 1 + chunk, wait=wait)

    def release(self, chunk: int) -> None:
        """Let go of the claim on ``chunk``."""
        self._lock(fcntl.LOCK_UN if fcntl else 0, 1 + chunk, wait=True)

    def is_current(self) -> bool:
        """Whether our lock file is still the folder's (another process may have removed the folder meanwhile)."""
        try:
            return self.fd is not None and os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return False

    def close(self) -> None:
        """Drop every lock of this process on the folder."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
