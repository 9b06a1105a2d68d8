"""The machine's memory as the service sees it: the limit it runs under, its default budget, giving memory back.

The limit is the smaller of the machine's memory and the cgroup's (systemd's
MemoryMax=, a container's limit), read from /proc and /sys/fs/cgroup. Giving
memory back is glibc's malloc_trim(): freed image buffers (Pillow allocates
16 MB blocks, below glibc's mmap threshold once it has grown) stay in the
heap after a flood, counted as the process's memory, until it is trimmed.
And glibc gives threads arenas of their own (up to 8 per core), each keeping
the buffers its thread freed: share_arenas(), called before the service
starts its threads, makes them share two. No library does these few calls;
ctypes calls libc directly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

MB = 1 << 20
GB = 1 << 30
AUTO_SHARE = 0.5           # the default budget: this share of the memory the service may use
AUTO_MIN = 256 * MB        # and never less than this


def machine_memory() -> int:
    """MemTotal of /proc/meminfo in bytes (0 when it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cgroup_limit(proc: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int:
    """This process's cgroup memory limit in bytes (v2 memory.max, else v1), 0 when there is none."""
    try:
        rel = ""
        for line in proc.read_text().splitlines():
            hid, controllers, path = line.split(":", 2)
            if hid == "0" or "memory" in controllers.split(","):
                rel = path
                if hid != "0":
                    break
    except (OSError, ValueError):
        return 0
    rel = rel.lstrip("/")
    for f in (root / rel / "memory.max", root / "memory.max",
              root / "memory" / rel / "memory.limit_in_bytes", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = f.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return 0
        try:
            n = int(text)
        except ValueError:
            continue
        return n if n < (1 << 60) else 0   # v1 says "no limit" with a huge number
    return 0


def budget(configured: int | str) -> tuple[int, str]:
    """(bytes of decoded images the service may hold in flight, how that was decided, in words)."""
    if configured != "auto":
        return int(configured) * MB, "configured"
    machine, cgroup = machine_memory(), cgroup_limit()
    if cgroup and (not machine or cgroup < machine):
        limit, what = cgroup, f"the cgroup's limit of {gib(cgroup)}"
    elif machine:
        limit, what = machine, f"this machine's {gib(machine)}"
    else:
        return 4 * GB, "auto: the machine's memory is unknown, so 4 GiB"
    return max(AUTO_MIN, int(limit * AUTO_SHARE)), f"auto: half of {what}"


def gib(n: int) -> str:
    return f"{n / GB:.1f} GiB"


def rss() -> int:
    """This process's resident set now, in bytes (0 when unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.malloc_trim.argtypes = [ctypes.c_size_t]
        return lib
    except (OSError, AttributeError):
        return None   # not glibc (musl, macOS): nothing to trim this way


_LIBC = _libc()
M_ARENA_MAX = -8   # glibc's mallopt parameter (malloc.h)
ARENAS = 2         # with one arena per thread (the default, 8 per core) a flood held 1.8x its budget


def share_arenas(n: int = ARENAS) -> bool:
    """Let threads started from now on share n malloc arenas (glibc); False where there is no such call."""
    if _LIBC is None or not hasattr(_LIBC, "mallopt"):
        return False
    return bool(_LIBC.mallopt(M_ARENA_MAX, n))


def trim() -> bool:
    """Give freed heap memory back to the system (glibc malloc_trim); False where there is no such call."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True
