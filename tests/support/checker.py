"""The outbox checker: every file that appears in an outbox is opened at once and must be whole."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

from PIL import Image

from tests.support.accounting import input_of
from tests.support.service import names


class OutboxChecker:
    """Opens every file the moment it appears in the outbox and checks it is a whole image.

    A thread lists outbox/<q>/ every few milliseconds; each new visible name is opened at once
    and fully decoded (a half-written file fails to decode), and its size compared with its
    input's when known. Reason files in failed/ must be whole too (they end with their last line).
    """

    def __init__(self, outbox: Path, sizes: dict[str, tuple[int, int]] | None = None):
        self.outbox, self.failed = outbox, outbox / "failed"
        self.sizes = sizes if sizes is not None else {}
        self.seen: set[str] = set()
        self.reasons: set[str] = set()
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-checker", daemon=True)

    def __enter__(self) -> "OutboxChecker":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self._sweep()  # whatever appeared since the last look

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sweep()
            time.sleep(0.01)

    def _sweep(self) -> None:
        for name in names(self.outbox):
            if name.startswith(".") or name in self.seen:
                continue
            path = self.outbox / name
            if path.is_dir():
                continue
            self.seen.add(name)
            self._check_image(path)
        for name in names(self.failed):
            if name.endswith(".reason.txt") and name not in self.reasons:
                self.reasons.add(name)
                try:
                    text = (self.failed / name).read_text(encoding="utf-8")
                except OSError as e:
                    self.problems.append(f"failed/{name}: cannot read ({e})")
                    continue
                if not text.rstrip().endswith("delete this note."):
                    self.problems.append(f"failed/{name}: a partial reason file ({len(text)} characters)")

    def _check_image(self, path: Path) -> None:
        try:
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                size = im.size
        except Exception as e:  # anything: a half-written file shows up here
            self.problems.append(f"{path.name}: not a whole image when it appeared ({type(e).__name__}: {e})")
            return
        want = self.sizes.get(input_of(path.name))
        if want is not None and size != want:
            self.problems.append(f"{path.name}: {size[0]}x{size[1]}, its input is {want[0]}x{want[1]}")
