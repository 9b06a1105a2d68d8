"""Status: counters the service keeps, <state>/status.json rewritten every few seconds, and how to read it.

status.json is replaced atomically, so a reader never sees half of it. It
says which process wrote it and when, so `reverser status` can tell a running
service from a stopped or stuck one. Per queue it also lists what a user may
be waiting for in vain: files left alone (with why and what to do), training
halves waiting for their partner, training files refused; each list is cut at
LIST_MAX entries beside its full count, so a folder of 100,000 wrong names
keeps status.json small.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ..core.fs import local_iso, write_atomic
from ..core.namebytes import shown

STATUS_FILE = "status.json"
RATE_WINDOW = 60.0   # seconds over which rates are counted
NOT_RUNNING = 3      # exit status of `reverser status` when no service runs (as LSB init scripts do)
LIST_MAX = 20        # entries per list in status.json (the count says how many in all)
SHOWN_MAX = 5        # entries per list `reverser status` prints


@dataclass
class QueueCounts:
    processed: int = 0
    failed: int = 0
    recent: deque = field(default_factory=deque)   # monotonic times of recent outcomes, for rates
    model: dict = field(default_factory=dict)      # path, version
    max_batch: int = 0
    batch_reason: str = ""


class StatusBoard:
    """Thread-safe counters per queue, and the status snapshot built from them."""

    def __init__(self, queues: list[str], device: str):
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.device = device
        self.state = "starting"
        self._lock = threading.Lock()
        self.queues = {q: QueueCounts() for q in queues}

    def record(self, queue: str, ok: bool) -> None:
        """One file finished: converted (ok) or quarantined."""
        now = time.monotonic()
        with self._lock:
            c = self.queues[queue]
            if ok:
                c.processed += 1
            else:
                c.failed += 1
            c.recent.append(now)
            while c.recent and c.recent[0] < now - RATE_WINDOW:
                c.recent.popleft()

    def set_model(self, queue: str, path, version, max_batch: int | None = None, reason: str | None = None):
        with self._lock:
            c = self.queues.setdefault(queue, QueueCounts())
            c.model = {"path": str(path), "version": version}
            if max_batch is not None:
                c.max_batch, c.batch_reason = max_batch, reason or ""

    def snapshot(self, waiting: dict[str, int], working: dict[str, int], extra: dict[str, dict] | None = None) -> dict:
        """The status.json document; waiting and working are per-queue file counts, extra more per-queue keys."""
        now = time.monotonic()
        uptime = now - self.started_mono
        with self._lock:
            queues = {}
            for q, c in self.queues.items():
                while c.recent and c.recent[0] < now - RATE_WINDOW:
                    c.recent.popleft()
                window = min(RATE_WINDOW, max(uptime, 10.0))  # a rate over the first instants means little
                queues[q] = {"waiting": waiting.get(q, 0), "working": working.get(q, 0),
                             "processed": c.processed, "failed": c.failed,
                             "per_minute": round(60 * len(c.recent) / window, 2),
                             "per_minute_since_start": round(60 * (c.processed + c.failed) / max(uptime, 10.0), 2),
                             "model": c.model, "max_batch": c.max_batch, "batch_reason": c.batch_reason,
                             **(extra or {}).get(q, {})}
        return {"state": self.state, "pid": os.getpid(), "host": socket.gethostname(), "device": self.device,
                "started": iso_time(self.started), "updated": iso_time(time.time()), "updated_unix": time.time(),
                "uptime_seconds": round(uptime, 1), "queues": queues}

    def write(self, state_dir: Path, waiting: dict[str, int], working: dict[str, int], interval: float,
              extra: dict[str, dict] | None = None, writer: str = "") -> None:
        doc = self.snapshot(waiting, working, extra)
        doc["interval_seconds"] = interval
        write_atomic(state_dir, STATUS_FILE, (json.dumps(doc, indent=2) + "\n").encode(), on_exists="replace",
                     writer=writer)


def read_status(state_dir: Path) -> dict:
    """<state>/status.json as the service last wrote it (OSError when there is none, ValueError when it is
    not JSON): what `reverser status` and the web's /api/status read."""
    return json.loads((Path(state_dir) / STATUS_FILE).read_text(encoding="utf-8"))


def iso_time(t: float) -> str:
    """A time.time() as status.json writes times."""
    return local_iso(t)



def listing(count: int, files: list[dict]) -> dict:
    """A list for status.json: the count in all and at most LIST_MAX entries."""
    return {"count": count, "files": files[:LIST_MAX]}


def liveness(doc: dict, now: float | None = None) -> tuple[bool, str]:
    """(running, a sentence saying so) for a status document."""
    now = now or time.time()
    age = now - float(doc.get("updated_unix", 0))
    interval = float(doc.get("interval_seconds", 2.0))
    if doc.get("state") == "stopped":
        return False, f"not running: stopped cleanly {_ago(age)}"
    if doc.get("host") == socket.gethostname() and not _pid_alive(int(doc.get("pid", 0))):
        return False, f"not running: process {doc.get('pid')} is gone (it stopped without saying so {_ago(age)}; " \
                      f"files it was working on are taken first at the next start)"
    if age > 3 * interval + 5:
        return False, f"stale: no update for {age:.0f} s (expected every {interval:g} s); the service may be stuck"
    return True, "running"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ago(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    return f"{s // 3600} h {s % 3600 // 60} min ago"


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + (f"{h}h " if d or h else "") + f"{m}m {s}s"


def render(doc: dict, running: bool, why: str) -> str:
    """The human-readable summary `reverser status` prints."""
    head = (f"reverser: running, pid {doc.get('pid')}, up {_duration(doc.get('uptime_seconds', 0))}, "
            f"device {doc.get('device')}" if running else f"reverser: {why}")
    lines = [head, f"  status written {doc.get('updated')}", ""]
    rows = [("queue", "waiting", "working", "processed", "failed", "per min", "pairs (new)", "model")]
    for q, c in doc.get("queues", {}).items():
        m = c.get("model") or {}
        model = f"v{m.get('version')} {m.get('path', '')}" + (f" (batch {c['max_batch']})" if c.get("max_batch") else "")
        p = c.get("pairs") or {}
        rows.append((q, str(c.get("waiting", 0)), str(c.get("working", 0)), str(c.get("processed", 0)),
                     str(c.get("failed", 0)), f"{c.get('per_minute', 0):.1f}",
                     f"{p.get('pairs', 0)} ({p.get('new', 0)})", model))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(widths))]
        lines.append("  " + "  ".join(cells) + "  " + r[-1])
    for q, c in doc.get("queues", {}).items():
        lines += _seen(q, c)
    return "\n".join(lines)


def _seen(q: str, c: dict) -> list[str]:
    """The lists of one queue (left alone, halves waiting, refused), a few entries each, for a person."""
    out = []
    sections = (
        ("ignored", "files left alone in its inbox (not converted, not trained on)",
         lambda e: f"{'train/' if e.get('where') == 'train' else ''}{e['name']}: {e['reason']}; "
                   f"to fix: {e['fix']}"),
        ("halves_waiting", "training halves waiting for their partner",
         lambda e: f"train/{e['name']} waits for {e['waits_for']} since {_clock(e['since'])} "
                   f"({_minutes(e['waited_seconds'])}; refused in {_minutes(e['refused_in_seconds'])} "
                   f"if none comes)"),
        ("hints_waiting", "color points waiting for their picture",
         lambda e: f"{e['name']} waits for {e['waits_for']} since {_clock(e['since'])} "
                   f"({_minutes(e['waited_seconds'])}; refused in {_minutes(e['refused_in_seconds'])} "
                   f"if none comes)"),
        ("training_refused", "training files refused (they are in failed/ with a reason note)",
         lambda e: f"{e['name']} ({_clock(e['when'])}): {e['reason']}"),
    )
    for key, title, line in sections:
        s = c.get(key) or {}
        n, files, earlier = s.get("count", 0), s.get("files", []), s.get("earlier", 0)
        if not n and not earlier:
            continue
        out += ["", f"{q}: {title}: {n}"]
        out += [f"  {shown(line(e))}" for e in files[:SHOWN_MAX]]
        if n > min(len(files), SHOWN_MAX):
            out.append(f"  ... and {n - min(len(files), SHOWN_MAX)} more"
                       + (f" (reverser status --json lists {len(files)})" if len(files) > SHOWN_MAX else ""))
        if earlier:   # refusals older than those kept by name: counted, not named, perhaps deleted since
            out.append(f"  and {earlier} refused before these, not listed (their reason notes are in failed/)")
    return out


def _clock(iso: str) -> str:
    """'2024-05-01T14:02:03+02:00' as '2024-05-01 14:02'."""
    return iso[:16].replace("T", " ") if iso else "?"


def _minutes(seconds: float) -> str:
    m = int(seconds) // 60
    return f"{m} min" if m < 120 else f"{m // 60} h {m % 60} min"
