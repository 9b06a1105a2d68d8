"""The model registry: numbered versions of a queue's model, a champion pointer, a history.

    <state>/models/<queue>/
        v0001/ v0002/ ...  model folders (model.safetensors, config.json, meta.json); meta.json
                           says the parent version, the data, the scores, and the status:
                           champion | rejected | retired (a former champion)
        champion.json      {"version": N}: the version that serves, replaced atomically
        history.jsonl      one JSON line per change: when, who, action, from, to, why (append-only)

Readers never lock and never see a half-state: a version is written under a
dot-name and renamed into place whole, and the pointer is swapped with
os.replace. Writers (the service's training job, `reverser train`, `reverser
models`) take an flock on .lock, so two of them cannot hand out one number.
The shipped model becomes version 1 the first time a registry is opened; a
changed configured model is imported and promoted the next time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import secrets
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..core.fs import append_jsonl, file_lock, now_iso, passing, read_jsonl, sha256_file, write_json

POINTER, HISTORY, LOCK = "champion.json", "history.jsonl", ".lock"
CHAMPION, REJECTED, RETIRED = "champion", "rejected", "retired"
_VERSION_DIR = re.compile(r"^v(\d{4,})$")


class RegistryError(Exception):
    """A registry request that cannot be done; the message says why and what to do."""


def version_name(n: int) -> str:
    return f"v{n:04d}"


@dataclass(frozen=True)
class Version:
    number: int
    path: Path
    meta: dict

    @property
    def status(self) -> str:
        return self.meta.get("status", "?")


class Registry:
    """One queue's versions. Cheap to construct; nothing is read until asked."""

    def __init__(self, root: Path, keep_rejected: int = 5):
        self.root = Path(root)
        self.keep_rejected = keep_rejected

    # -- reading (lock-free; the service polls these between batches) --

    def champion_version(self) -> int | None:
        """The champion's version number, or None when the registry is empty. One small file read."""
        try:
            return int(json.loads((self.root / POINTER).read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def champion_dir(self) -> Path | None:
        """The champion version's folder, or None when the registry is empty."""
        n = self.champion_version()
        if n is None:
            return None
        path = self.root / version_name(n)
        return path if path.is_dir() else None

    def versions(self) -> list[Version]:
        """Every version present, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            m = _VERSION_DIR.match(path.name)
            if m and path.is_dir():
                found.append(Version(int(m[1]), path, _read_meta(path)))
        return sorted(found, key=lambda v: v.number)

    def version(self, n: int) -> Version:
        path = self.root / version_name(n)
        if not path.is_dir():
            have = ", ".join(str(v.number) for v in self.versions()) or "none"
            raise RegistryError(f"there is no version {n} in {self.root} (versions: {have}); "
                                f"see `reverser models --queue QUEUE list`")
        return Version(n, path, _read_meta(path))

    def history(self) -> list[dict]:
        return read_jsonl(self.root / HISTORY)  # a torn last line after a power cut: the rest still counts

    # -- changing (under the lock) --

    @contextmanager
    def locked(self):
        """Hold the registry's write lock (blocks while another process changes it); a process out of file
        handles is told to try again (RegistryError), as for a version it cannot check now."""
        with ExitStack() as held:
            try:
                held.enter_context(file_lock(self.root / LOCK))
            except OSError as e:
                if passing(e):
                    raise RegistryError(f"the registry in {self.root} cannot be changed now ({e.strerror}): too "
                                        "many files are open; try again in a moment") from None
                raise
            yield

    def import_shipped(self, folder: Path, who: str = "service") -> int | None:
        """Make the configured (shipped) model the champion when the registry has not seen its weights.

        An empty registry gets it as version 1. Later, a configured model whose
        weights the registry has never imported (a new release shipped a new
        model, or the config points at another folder) is registered and
        promoted, with the old champion as its parent so `rollback` returns to
        it: a change of configuration takes effect. An unchanged one leaves the
        registry, and any fine-tune promoted since, alone. Returns the
        champion's version; None when the registry is empty and the folder
        does not exist yet.
        """
        folder = Path(folder)
        weights = folder / "model.safetensors"
        if not weights.is_file():
            return self.champion_version()
        digest = sha256_file(weights)
        if self._imported(digest):  # the common case: one hash and one small file read, no lock
            return self.champion_version()
        with self.locked():
            if self._imported(digest):
                return self.champion_version()
            from unet.checkpoint import load_model  # torch only when a model is really imported

            load_model(folder)  # refuse a broken model here, with the checkpoint's own message
            before, n = self.champion_version(), self._next_number()
            why = "the shipped model" if before is None else f"the configured model {folder} changed"
            stage = self.staging()
            for item in folder.iterdir():
                if item.is_file() and not item.name.startswith("."):
                    shutil.copy2(item, stage / item.name)
            meta = _read_meta(stage)
            meta.update(version=n, parent=before, status=CHAMPION, imported_from=str(folder),
                        source_sha256=digest, registered=now_iso(), why=why)
            write_json(stage / "meta.json", meta)
            os.rename(stage, self.root / version_name(n))
            if before is None:
                self._point(n)
            else:
                self._swap_champion(n, why)
            self.record("import", who, f"{why}: {folder} became version {n}", version=n, frm=before, to=n,
                        source_sha256=digest)
        return n

    def _imported(self, digest: str) -> bool:
        """Whether weights with this hash were ever imported (the history outlives pruned versions)."""
        return any(e.get("source_sha256") == digest for e in self.history())

    def staging(self) -> Path:
        """A fresh hidden folder inside the registry to write a new version into, before add()."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f".staging-{secrets.token_hex(4)}"
        path.mkdir()
        return path

    def add(self, staged: Path, promote: bool, who: str, why: str, **meta) -> int:
        """Register a staged model folder as the next version, champion or rejected; return its number."""
        with self.locked():
            n = self._next_number()
            before = self.champion_version()
            record = _read_meta(staged)
            record.update(meta, version=n, status=CHAMPION if promote else REJECTED,
                          registered=now_iso(), why=why)
            write_json(staged / "meta.json", record)
            os.rename(staged, self.root / version_name(n))
            if promote:
                self._swap_champion(n, why)
                self.record("promote", who, why, version=n, frm=before, to=n)
            else:
                self.record("reject", who, why, version=n, frm=before, to=before)
            self._prune(who)
        return n

    def promote(self, n: int, who: str, why: str) -> None:
        """Make version n the champion; the old one is retired (kept, never pruned)."""
        with self.locked():
            _loadable(self.version(n))  # raises when missing or broken
            before = self.champion_version()
            if before == n:
                raise RegistryError(f"version {n} is already the champion")
            self._swap_champion(n, why)
            self.record("promote", who, why, version=n, frm=before, to=n)

    def rollback(self, who: str, why: str = "rolled back") -> int:
        """Make the champion's parent the champion again; the rolled-back one becomes rejected."""
        with self.locked():
            current = self.champion_version()
            if current is None:
                raise RegistryError(f"{self.root}: no champion yet, nothing to roll back")
            parent = self.version(current).meta.get("parent")
            if parent is None:
                raise RegistryError(f"version {current} is the first of its line (no parent); "
                                    f"use `promote VERSION` to pick another version")
            _loadable(self.version(parent))
            self._swap_champion(parent, why, old_status=REJECTED)
            self.record("rollback", who, why, version=parent, frm=current, to=parent)
            return parent

    def record(self, action: str, who: str, why: str, version: int | None = None,
               frm: int | None = None, to: int | None = None, **extra) -> None:
        """Append one line to history.jsonl (also used for runs that produced no version)."""
        append_jsonl(self.root / HISTORY, {"time": now_iso(), "who": who, "action": action, "version": version,
                                           "from": frm, "to": to, "why": why, **extra})

    def clean_staging(self) -> None:
        """Remove what a killed writer left half-made (call while no job is running)."""
        if self.root.is_dir():
            for path in self.root.glob(".staging-*"):
                shutil.rmtree(path, ignore_errors=True)

    # -- internals, called with the lock held --

    def _next_number(self) -> int:
        # Pruned versions leave their number in the history: a number is never handed out twice.
        used = [v.number for v in self.versions()]
        used += [e["version"] for e in self.history() if isinstance(e.get("version"), int)]
        return max(used, default=0) + 1

    def _point(self, n: int) -> None:
        write_json(self.root / POINTER, {"version": n, "since": now_iso()})

    def _swap_champion(self, n: int, why: str, old_status: str = RETIRED) -> None:
        old = self.champion_version()
        _update_meta(self.root / version_name(n), status=CHAMPION, why=why)
        self._point(n)  # the moment the service sees the new champion
        if old is not None and old != n and (self.root / version_name(old)).is_dir():
            _update_meta(self.root / version_name(old), status=old_status)

    def _prune(self, who: str) -> None:
        """Remove the oldest rejected versions beyond keep_rejected; never the champion or its parent."""
        champion = self.champion_version()
        keep = {champion}
        if champion is not None and (self.root / version_name(champion)).is_dir():
            keep.add(self.version(champion).meta.get("parent"))
        rejected = [v for v in self.versions() if v.status == REJECTED and v.number not in keep]
        excess = rejected[:max(0, len(rejected) - self.keep_rejected)]
        for v in excess:
            # Rename first, so a reader sees the version whole or not at all.
            trash = self.root / f".staging-pruned-{v.path.name}"
            os.rename(v.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
            self.record("prune", who, f"more than keep_rejected = {self.keep_rejected} rejected versions",
                        version=v.number, frm=champion, to=champion)


def _loadable(v: Version) -> None:
    """Refuse to make a version champion when it does not load (corrupt, pickled, another architecture)."""
    from unet.checkpoint import CheckpointError, load_model  # torch only when a champion changes

    try:
        load_model(v.path)
    except CheckpointError as e:
        if passing(e):   # no fault of the version: the process is out of file handles
            raise RegistryError(f"version {v.number} cannot be checked now ({e}): too many files are open; "
                                f"try again in a moment") from None
        raise RegistryError(f"version {v.number} does not load, so it cannot serve: {e}") from None


def _read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _update_meta(folder: Path, **changes) -> None:
    meta = _read_meta(folder)
    meta.update(changes)
    write_json(folder / "meta.json", meta)


def open_registry(cfg, queue: str, who: str = "service") -> Registry:
    """The queue's registry with the shipped model imported as version 1 (when it exists)."""
    reg = Registry(cfg.state_dir("models", queue), cfg.retrain.keep_rejected)
    reg.import_shipped(cfg.queues[queue].model, who)
    return reg
