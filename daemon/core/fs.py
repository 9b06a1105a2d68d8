"""File operations that never show a half-state: temp-then-rename writes, moves that never replace a file,
free names, file locks, JSON and JSON-lines files, hashes and timestamps.

Every writer in daemon/ goes through here (docs/architecture.md: data never passes through a
half-state a user can see). A temporary name may carry the id of the service
instance that writes it (`writer`, the spool's Owner id), so that a restart
can sweep a dead instance's leftovers at once instead of waiting for them to age.
"""

from __future__ import annotations

import errno
import fcntl
import filecmp
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
import typing
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .namebytes import NAME_MAX, fitted, name_bytes

PASSING = (errno.EMFILE, errno.ENFILE)   # too many open files, here or system-wide: gone in a moment
TEMP_PREFIX = ".reverser-"
RECEIPT_PREFIX = TEMP_PREFIX + "receipt-"   # + a claim's ticket: see write_atomic(receipt=)


def passing(e: BaseException | None) -> bool:
    """Whether e, or what it was raised from, is want of file handles (EMFILE, ENFILE): no fault of the file
    or the model being read, so it is tried again later, never judged."""
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, OSError) and e.errno in PASSING:
            return True
        if "Too many open files" in str(e):   # wrapped without its errno (a C extension's message)
            return True
        e = e.__cause__ or e.__context__
    return False


def temp_name(writer: str = "") -> str:
    """.reverser-[WRITER-]HEX.tmp: a hidden name, signed by the service instance that writes it, if any."""
    return f"{TEMP_PREFIX}{writer + '-' if writer else ''}{secrets.token_hex(6)}.tmp"


def temp_writer(name: str) -> str:
    """The instance id in a temporary name made by temp_name(), '' when it has none."""
    body = name[len(TEMP_PREFIX):]
    return body.rpartition("-")[0] if name.startswith(TEMP_PREFIX) and body.endswith(".tmp") else ""


def write_atomic(folder: Path, name: str, data: bytes | typing.BinaryIO, on_exists: str = "number",
                 receipt: str | None = None, writer: str = "", mode: int = 0o644) -> Path:
    """Write data (bytes, or a file read from its start, a MiB at a time) as folder/name so no reader ever
    sees a partial file; return the final path.

    on_exists="number" never replaces a file: NAME_after.jpg taken gives
    NAME_after-1.jpg, and so on. The final name is claimed with link(), which
    fails when the name exists, so two writers cannot both take it.

    receipt: write through folder/receipt (a hidden name) and keep it after the
    result is in place, as a second hard link to it, until the caller removes it.
    A link count of 2 then proves the result was placed; see conversion/claims/spool.py
    for how a restart uses that. Where hard links are not supported the receipt
    is lost in the rename. writer: the instance id put into temporary names. mode: the file's
    permissions from its creation on (less the umask).
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (receipt or temp_name(writer))
    if receipt:
        tmp.unlink(missing_ok=True)  # left by an attempt that never placed its result
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    placed = False
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:   # a large result written to a file as it was made (a multi-page TIFF): never whole in memory
                data.seek(0)
                shutil.copyfileobj(data, f, 1 << 20)
            f.flush()
            os.fsync(f.fileno())
        final = _place(tmp, folder, name, on_exists, keep=bool(receipt), writer=writer)
        placed = True
        return final
    finally:
        if not (placed and receipt):
            tmp.unlink(missing_ok=True)


def _place(tmp: Path, folder: Path, name: str, on_exists: str, keep: bool, writer: str = "") -> Path:
    """Give the written file tmp its final name in folder; keep: tmp stays as a second link."""
    if on_exists == "replace":
        final = folder / name
        if keep:
            second = folder / temp_name(writer)
            os.link(tmp, second)
            try:
                os.replace(second, final)
            finally:
                second.unlink(missing_ok=True)
        else:
            os.replace(tmp, final)
        return final
    for final in free_names(folder, name):
        try:
            os.link(tmp, final)
            return final
        except FileExistsError:
            continue
        except OSError:
            # Filesystems without hard links (some network shares): check, then rename.
            if final.exists():
                continue
            os.replace(tmp, final)
            return final
    raise FileExistsError(f"{folder}: no free name for {name}")


def sweep_temp(folder: Path, older_than: float = 600.0, is_alive=None) -> int:
    """Remove our temporary files (TEMP_PREFIX) that a killed process left in folder; return how many.

    A file signed by a service instance (temp_name(writer)) goes as soon as is_alive says that
    instance no longer runs; others only when old, as a live process sharing the folder may be
    writing a fresh one.
    """
    removed, now = 0, time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if e.name.startswith(RECEIPT_PREFIX) or not e.name.startswith(TEMP_PREFIX):
            continue  # a receipt tells recovery a result was written: Spool.recover() removes it
        try:
            writer = temp_writer(e.name)
            dead = bool(writer) and is_alive is not None and not is_alive(writer)
            if dead or now - e.stat(follow_symlinks=False).st_mtime > older_than:
                os.unlink(e.path)
                removed += 1
        except OSError:
            pass
    return removed


def move_into(src: Path, folder: Path, name: str, writer: str = "") -> Path:
    """Move src to folder/name without ever replacing a file there (NAME-1.EXT, ...); return the new path.

    On one filesystem this is link-then-unlink, so the name appears whole or not
    at all; across filesystems the file is copied to a temporary name first.
    """
    folder.mkdir(parents=True, exist_ok=True)
    st = os.lstat(src)
    earlier = placed_copy(src, st, folder, name)
    if earlier is not None:  # an earlier move was cut short (kill -9) after placing it: finish that one
        src.unlink(missing_ok=True)
        return earlier
    staged = src
    try:
        if st.st_dev != os.stat(folder).st_dev:
            staged = folder / temp_name(writer)
            copy_entry(src, staged, st)  # a copy cut short (a full disk) is removed at once, below
        final = _link_free(staged, folder, name)
    except BaseException:
        if staged != src:
            staged.unlink(missing_ok=True)
        raise
    if staged != src:
        src.unlink(missing_ok=True)
    return final


def placed_copy(src: Path, st: os.stat_result, folder: Path, name: str, by_bytes: bool = True) -> Path | None:
    """The file an earlier move_into(src, folder, name) placed before it was cut short, if any.

    A move on one filesystem is link-then-unlink: cut between the two, folder holds
    a second link to src (the same inode). Across filesystems it is copy-then-unlink,
    and the copy is recognised by its bytes (when by_bytes). Only the names move_into
    would try are looked at, up to the first free one.
    """
    for candidate in free_names(folder, name):
        try:
            cst = os.lstat(candidate)
        except FileNotFoundError:
            return None
        except OSError:
            continue
        if os.path.samestat(cst, st):
            return candidate
        if (by_bytes and cst.st_dev != st.st_dev and stat.S_ISREG(st.st_mode) and stat.S_ISREG(cst.st_mode)
                and cst.st_size == st.st_size and filecmp.cmp(src, candidate, shallow=False)):
            return candidate
    return None


def other_link(path: Path, folder: Path, name: str) -> Path | None:
    """The name in folder, other than path's own, of the file path is a hard link to (a receipt's result), or
    None: the names write_atomic(folder, name) would give are looked at first, then every name in folder."""
    st = os.lstat(path)
    found = placed_copy(path, st, folder, name, by_bytes=False)
    if found is not None and found != path:
        return found
    try:   # numbered past a name removed since, say: any visible name of the same inode
        entries = list(os.scandir(folder))
    except OSError:
        return None
    for e in entries:
        if e.inode() == st.st_ino and not e.name.startswith(TEMP_PREFIX) and \
                os.path.samestat(e.stat(follow_symlinks=False), st):
            return Path(e.path)
    return None


def copy_entry(src: Path, dst: Path, st: os.stat_result) -> None:
    """Copy src (whose lstat is st) to the new name dst, flushed to disk: across filesystems, before a rename."""
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        with open(src, "rb") as fi, open(dst, "xb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
            fo.flush()
            os.fsync(fo.fileno())
    else:  # a FIFO or device cannot be copied without opening it; keep an empty stand-in
        dst.touch()


NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP)   # os.link's "not here"


def rename_new(src: Path, dst: Path) -> None:
    """Move src to the new name dst, never replacing a file there (FileExistsError): a hard link, then src's
    name removed; where the filesystem has no hard links (some network filesystems), a check, then a rename."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in NO_HARD_LINKS:
            raise
        if os.path.lexists(dst):
            raise FileExistsError(dst) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def _link_free(staged: Path, folder: Path, name: str) -> Path:
    for final in free_names(folder, name):
        try:
            rename_new(staged, final)
        except FileExistsError:
            continue
        return final
    raise FileExistsError(f"{folder}: no free name for {name}")


_HALF_MARK = re.compile(r"_(before|after)$", re.IGNORECASE)   # as core/names.py's, kept whole


def free_names(folder: Path, name: str):
    """The names a file called name may take in folder, in turn: NAME.EXT, NAME-1.EXT, NAME-2.EXT, ..."""
    return (folder / n for n in numbered(name))


def numbered(name: str, first: int = 1, split_ext: bool = True, limit: int = NAME_MAX):
    """name, then name numbered from first: NAME.EXT, NAME-1.EXT, NAME-2.EXT, ... (up to 100 000 names).

    The one numbering rule of every free name here (results, done/ and failed/ files,
    pair names, report folders). split_ext=False numbers after the whole name (a pair's
    name or a time stamp, which have no extension). 'a.tar.gz' numbers before its last
    suffix only ('a.tar-1.gz'), which is enough here. Every name fits in limit bytes:
    where NAME-N.EXT would not, NAME is cut short, never the number, the extension or a
    half's _before/_after marker (NAME_after-1.jpg, not NAM_afte-1.jpg).
    """
    stem, ext = os.path.splitext(name) if split_ext else (name, "")
    stem, ext = (stem, ext) if stem else (name, "")
    marked = _HALF_MARK.search(stem) if len(_HALF_MARK.sub("", stem)) else None
    stem, mark = (stem[:marked.start()], marked.group()) if marked else (stem, "")
    yield name if name_bytes(name) <= limit else fitted(stem, mark + ext, limit)
    for n in range(first, first + 100_000):
        yield fitted(stem, f"{mark}-{n}{ext}", limit)


def move(src: Path, dst: Path) -> None:
    """Rename src to dst (replacing it); across filesystems, copy to a hidden name beside dst, rename, delete src."""
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(temp_name())
        try:
            copy_entry(src, tmp, os.lstat(src))
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.unlink(src)


@contextmanager
def file_lock(path: Path, blocking: bool = True):
    """Hold an exclusive flock on path (created if need be) while inside; across processes and hosts sharing
    the folder. Not blocking: raise BlockingIOError at once when another holder has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def now_iso() -> str:
    """Local time with its offset, to the second: what a person reading history.jsonl wants."""
    return local_iso(time.time())


def local_iso(t: float) -> str:
    """A time.time() as now_iso() writes it."""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def write_json(path: Path, obj, mode: int = 0o644) -> None:
    """Write a JSON file whole: temp name in the same folder, fsync, rename."""
    write_atomic(path.parent, path.name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), "replace",
                 mode=mode)


def json_text(obj, **kw) -> str:
    """JSON readable as UTF-8, whatever names obj holds: a name that is not UTF-8 (surrogate escapes) is
    written as \\udcNN escapes, which json.loads turns back into the same name."""
    text = json.dumps(obj, ensure_ascii=False, **kw)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, **kw)
    return text


def append_jsonl(path: Path, entry: dict) -> None:
    """Append one JSON line to path and flush it to disk (history.jsonl, index.jsonl)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json_text(entry) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, start)  # a line cut short (a full disk) would spoil the next one appended
            raise
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict]:
    """Every whole line of a JSON-lines file; [] when there is none. A torn last line (a power cut) is skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
