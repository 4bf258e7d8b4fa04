"""The writer lock of an index directory: one process at a time builds, adds, removes or merges.

The lock is ``fcntl.flock`` on ``DIR/.lock``. The kernel grants it atomically to exactly one open
file and drops it when the holder exits, however it exits (SIGKILL included), so there is no stale
lock to take over and no window in which two processes both believe they hold it. The holder
writes who it is (pid, host, command, start time) into the file *after* it holds the lock, and
empties it before letting go; that text only names the holder in the error a contender gets.

Readers never take this lock: they open the published generation (see ``generation.py``).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .errors import IndexLockedError

LOCK_NAME = ".lock"
_POLL_SECONDS = 0.05
# Locks this process already holds, per thread: a writer may call another writing function
# (e.g. the Python API inside ``with WriterLock(dir)``) without locking itself out.
_HELD: dict[tuple[int, int, int], int] = {}
_HELD_GUARD = threading.Lock()


def _fcntl():
    import fcntl  # POSIX only; imported here so that reading an index never needs it

    return fcntl


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, owned by someone else
    return True


def read_holder(directory: str | os.PathLike) -> dict[str, Any] | None:
    """What the current holder wrote into the lock file, or ``None`` when it names no live process.

    Informational (for messages and ``index info``): the lock itself is the kernel's flock.
    """
    try:
        text = (Path(directory) / LOCK_NAME).read_text(encoding="utf-8")
        holder = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return None
    if holder.get("host") == socket.gethostname() and not _alive(holder["pid"]):
        return None  # left by a process that died after writing it
    return holder


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``process 123 (index add, since 2024-01-01T10:00:00Z)`` or ``another process``."""
    if not holder:
        return "another process"
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    what = ", ".join(x for x in (holder.get("command"), f"since {holder['since']}" if holder.get("since") else None) if x)
    return f"process {holder['pid']}{where}" + (f" ({what})" if what else "")


class WriterLock:
    """``with WriterLock(directory, command="index add"):`` holds the directory's writer lock.

    ``wait`` seconds to wait for another writer (default 0: fail at once). A contender gets
    ``IndexLockedError`` naming the holder.
    """

    def __init__(self, directory: str | os.PathLike, *, command: str = "", wait: float = 0.0):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.command = command
        self.wait = max(0.0, float(wait))
        self._fd: int | None = None
        self._key: tuple[int, int, int] | None = None

    # ------------------------------------------------------------------ acquire / release
    def acquire(self) -> "WriterLock":
        fcntl = _fcntl()
        deadline = time.monotonic() + self.wait
        while True:
            fd = self._open()
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, threading.get_ident())
            with _HELD_GUARD:
                if key in _HELD:  # re-entered by the thread that holds it
                    _HELD[key] += 1
                    os.close(fd)
                    self._key = key
                    return self
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise IndexLockedError(self._locked_message()) from None
                time.sleep(_POLL_SECONDS)
                continue
            except BaseException:
                os.close(fd)
                raise
            # The file may have been replaced between open() and flock(): only the lock on the
            # file the name currently refers to counts.
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)
                continue
            self._fd, self._key = fd, key
            with _HELD_GUARD:
                _HELD[key] = 1
            self._write_holder()
            return self

    def release(self) -> None:
        if self._key is None:
            return
        with _HELD_GUARD:
            _HELD[self._key] -= 1
            last = _HELD[self._key] == 0
            if last:
                del _HELD[self._key]
        self._key = None
        if not last or self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # an empty file names no holder
        os.close(fd)  # closing drops the flock

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------ helpers
    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            from .errors import IndexNotFoundError

            raise IndexNotFoundError(f"no such index directory: {self.directory}") from None
        except PermissionError:
            from .errors import IndexWriteError

            raise IndexWriteError(errno.EACCES, f"cannot write to {self.directory} (permission denied); "
                                  "it can be searched but not changed") from None

    def _write_holder(self) -> None:
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command or None,
                           "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode("utf-8"), 0)

    def _locked_message(self) -> str:
        holder = None
        for _ in range(20):  # the holder writes its name just after it gets the lock
            holder = read_holder(self.directory)
            if holder is not None:
                break
            time.sleep(0.01)
        hint = "wait for it to finish" + ("" if self.wait else " (or pass --wait SECONDS)")
        return f"{self.directory} is being changed by {describe_holder(holder)}; {hint}"


__all__ = ["LOCK_NAME", "WriterLock", "describe_holder", "read_holder"]
