"""A command run on a pseudo-terminal, as a user's terminal runs it, and the screen it leaves."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_terminal(argv: list[str], env: dict, cols: int = 120, timeout: float = 300) -> tuple[int, str]:
    """Run argv with stdin, stdout and stderr on a pseudo-terminal cols wide; (exit status, all it wrote)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    env = {**env, "COLUMNS": str(cols), "TERM": "xterm"}
    child = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif child.poll() is not None:
                break
        else:
            child.kill()
        return child.wait(timeout=30), out.decode("utf-8", "replace")
    finally:
        os.close(master)


def screen(raw: str) -> list[str]:
    """The lines a terminal shows for raw output: colors dropped, a carriage return writes over the line."""
    lines, line, col = [], [], 0
    for ch in ANSI.sub("", raw.replace("\r\n", "\n")):
        if ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        elif ch == "\r":
            col = 0
        else:
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
    if line:
        lines.append("".join(line).rstrip())
    return lines
