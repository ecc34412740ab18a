"""Claims: which driver runs which run of a shared store, so two drivers never do one run.

Before a driver starts a run it creates ``<store>/.claims/<key>.json`` with ``O_EXCL`` (one
creator wins, on any POSIX file system), holding its identity; a thread touches its claims
every ``beat_s`` seconds (the heartbeat). Another driver skips a claimed run, and takes the
claim over once its driver is gone: a process no longer alive on this host, or (for a driver
on another machine sharing the folder) no heartbeat for ``stale_s`` seconds. Taking over
renames the stale claim away first (``rename`` is atomic, so only one of several drivers
wins it) and then claims afresh. A claim is released when its record is written or its run
has failed, and every claim a driver holds when it stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


class Claims:
    """This driver's claims on the runs of the store at ``folder``."""

    def __init__(self, folder: str | Path, stale_s: float = 60.0, beat_s: float = 10.0) -> None:
        self.dir = Path(folder) / ".claims"
        self.stale_s, self.beat_s = stale_s, beat_s
        self.me = {"driver": uuid.uuid4().hex[:12], "host": socket.gethostname(),
                   "pid": os.getpid(), "started": time.time()}  # fmt: skip
        self.held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                      name="lora-lab-claims")  # fmt: skip
        self._beat.start()

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def claim(self, key: str) -> bool:
        """Claim ``key``'s run; False if a live driver holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # a second try after taking a stale claim over
            try:
                fd = os.open(self.path(key), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over(key):
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({**self.me, "key": key}, f)
            with self._lock:
                self.held.add(key)
            return True
        return False

    def release(self, key: str) -> None:
        with self._lock:
            self.held.discard(key)
        self.path(key).unlink(missing_ok=True)

    def holder(self, key: str) -> dict | None:
        """Who holds ``key`` (the claim's content), or None if nobody does."""
        try:
            return json.loads(self.path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_stale(self, key: str) -> bool:
        """Whether ``key``'s claim belongs to a driver that is gone."""
        path = self.path(key)
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        info = self.holder(key)
        if info is None:  # being written right now, or garbage: judge by age alone
            return age > self.stale_s
        if info.get("host") == self.me["host"] and not pid_alive(int(info.get("pid", -1))):
            return True
        return age > self.stale_s

    def _take_over(self, key: str) -> bool:
        if not self.is_stale(key):
            return False
        tomb = self.dir / f".stale-{key}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path(key), tomb)
        except FileNotFoundError:  # another driver took it over first, or it was released
            return True
        tomb.unlink(missing_ok=True)
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.beat_s):
            with self._lock:
                held = list(self.held)
            for key in held:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(self.path(key))

    def close(self) -> None:
        """Stop the heartbeat and release every claim still held."""
        self._stop.set()
        with self._lock:
            held = list(self.held)
        for key in held:
            self.release(key)
