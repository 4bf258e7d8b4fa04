"""The writer lock: exactly one holder among simultaneous contenders, no stale locks, a clear refusal."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tipsv2_sdk.index.errors import IndexLockedError
from tipsv2_sdk.index.lock import LOCK_NAME, WriterLock, read_holder

ROOT = Path(__file__).resolve().parents[2]

CONTENDER = textwrap.dedent("""
    import json, os, sys, time
    from tipsv2_sdk.index.errors import IndexLockedError
    from tipsv2_sdk.index.lock import WriterLock
    directory, start, stop = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    while time.time() < start:  # every contender tries at the same instant
        pass
    lock = WriterLock(directory, command="contender")
    try:
        lock.acquire()
    except IndexLockedError as exc:
        print(json.dumps({"pid": os.getpid(), "got": False, "message": str(exc)}), flush=True)
        sys.exit(0)
    print(json.dumps({"pid": os.getpid(), "got": True}), flush=True)
    while not os.path.exists(stop):  # hold it until every contender has answered
        time.sleep(0.01)
    lock.release()
""")


def test_many_simultaneous_attempts_give_exactly_one_holder(tmp_path):
    contenders = 24
    stop = tmp_path / "stop"
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(tmp_path), str(start), str(stop)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(contenders)]
    try:
        answers = [json.loads(p.stdout.readline()) for p in procs]
    finally:
        stop.write_text("")
        for p in procs:
            p.wait(timeout=60)
    holders = [a for a in answers if a["got"]]
    assert len(holders) == 1, answers
    holder = holders[0]["pid"]
    refusals = [a["message"] for a in answers if not a["got"]]
    assert len(refusals) == contenders - 1
    # each refusal is one line that names the process holding the lock
    assert all(f"process {holder} (contender" in m and "\n" not in m for m in refusals), refusals[:3]


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, lock_holder):
    holder = lock_holder(tmp_path)
    assert read_holder(tmp_path)["pid"] == holder.pid
    with pytest.raises(IndexLockedError, match=f"process {holder.pid}"):
        WriterLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    # the lock file still names the dead process, but the kernel released its lock
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid
    assert read_holder(tmp_path) is None
    with WriterLock(tmp_path, command="after"):
        assert read_holder(tmp_path)["pid"] == os.getpid()


def test_a_pid_written_into_the_file_is_not_a_lock(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    with WriterLock(tmp_path):  # text in the file never blocks: only a held flock does
        pass
    (tmp_path / LOCK_NAME).write_text("")  # empty (a holder that just started): still only flock counts
    with WriterLock(tmp_path):
        pass


def test_waiting_for_the_holder(tmp_path):
    held, release, released = threading.Event(), threading.Event(), threading.Event()

    def holder():
        with WriterLock(tmp_path, command="holder"):
            held.set()
            release.wait(60)
            released.set()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(60)
    try:
        with pytest.raises(IndexLockedError, match=r"\(holder, since .*wait for it to finish \(or pass --wait"):
            WriterLock(tmp_path).acquire()
        threading.Timer(0.3, release.set).start()
        with WriterLock(tmp_path, wait=60):  # waits until the holder lets go
            assert released.is_set()
    finally:
        release.set()
        thread.join()


def test_the_holding_thread_may_reenter(tmp_path):
    with WriterLock(tmp_path, command="outer"):
        with WriterLock(tmp_path, command="inner"):
            assert read_holder(tmp_path)["command"] == "outer"
        assert read_holder(tmp_path)["command"] == "outer"  # still held after the inner exit
    assert read_holder(tmp_path) is None


def test_a_missing_directory_is_named(tmp_path):
    from tipsv2_sdk.index.errors import IndexNotFoundError

    with pytest.raises(IndexNotFoundError, match="no such index directory"):
        WriterLock(tmp_path / "missing").acquire()
