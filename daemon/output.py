"""Files that appear whole: result names and formats, the temp-then-rename that hides half-written
results, moving inputs between folders without replacing anything, and sweeping temporary files."""

from __future__ import annotations

import errno
import filecmp
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from pathlib import Path

from PIL import Image

from unet.images import Plain

# Suffix -> Pillow format, for inputs we read and outputs we write.
EXT_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF",
              ".tiff": "TIFF", ".bmp": "BMP", ".gif": "GIF"}
FORMAT_EXT = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif"}
# Formats we read but do not write: a GIF result would be palette-quantized.
WRITE_INSTEAD = {".gif": ".png"}
TEMP_PREFIX = ".reverser-"
RECEIPT_PREFIX = TEMP_PREFIX + "receipt-"   # + a claim's ticket: see write_atomic(receipt=)
_writer = ""   # the running service's instance id (spool.Owner), put into temporary names
_BEFORE = re.compile(r"_before$", re.IGNORECASE)


def output_name(input_name: str, fmt: str = "same") -> str:
    """NAME_before.EXT -> NAME_after.EXT; NAME.EXT -> NAME_after.EXT; fmt other than same picks the EXT."""
    path = Path(input_name)
    stem = _BEFORE.sub("", path.stem)
    ext = path.suffix.lower() if fmt == "same" else FORMAT_EXT[fmt]
    ext = WRITE_INSTEAD.get(ext, ext) if ext in EXT_FORMAT else ".png"
    if fmt == "same" and path.suffix and path.suffix.lower() == ext:
        ext = path.suffix  # keep the user's spelling: .JPG stays .JPG
    return f"{stem}_after{ext}"


def takes_ycc(ext: str) -> bool:
    """Whether encode() takes a YCbCr image for this extension as it is (JPEG stores YCbCr)."""
    return EXT_FORMAT[ext.lower()] == "JPEG"


def encode(image: Image.Image, ext: str, quality: int, source: Plain | None = None) -> bytes:
    """The image encoded for its extension, with the source's color profile and EXIF where they fit."""
    fmt = EXT_FORMAT[ext.lower()]
    if image.mode == "YCbCr" and fmt != "JPEG":
        image = image.convert("RGB")
    if fmt in ("JPEG", "BMP") and image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1] if image.mode == "RGBA" else "L")
    kwargs = {}
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if fmt == "JPEG":
        kwargs["subsampling"] = "4:2:0"   # chroma at half resolution, as a YCbCr result from finish() holds it
    if fmt == "PNG":
        # Lossless at any level. Level 3 took 0.42x the time of Pillow's default 6 on a 12 MP result and
        # made files 2% larger on the plates (-3% on the 12 MP one).
        kwargs["compress_level"] = 3
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate"
    if source is not None:
        icc = source.icc_profile
        # An ICC profile describes one color space: a gray profile on an RGB result would be wrong.
        if icc and len(icc) > 20 and _icc_fits(icc[16:20], image.mode):
            kwargs["icc_profile"] = icc
        if source.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
            kwargs["exif"] = source.exif
    with _scratch() as f:
        image.save(f, format=fmt, **kwargs)
        f.seek(0)
        return f.read()


def _scratch():
    """An in-memory file with a real descriptor to encode into.

    Pillow encodes into a file descriptor in one call that lets go of the
    GIL; into a BytesIO it encodes block by block holding it, and the thread
    running the network then waits for the GIL at every layer: a forward pass
    of 40 ms took 900 while a 12 MP JPEG was being encoded beside it.
    """
    if hasattr(os, "memfd_create"):
        return os.fdopen(os.memfd_create("reverser-encode", os.MFD_CLOEXEC), "w+b")
    return tempfile.TemporaryFile()


def _icc_fits(space: bytes, mode: str) -> bool:
    return (space == b"RGB " and mode in ("RGB", "RGBA", "YCbCr")) or (space == b"GRAY" and mode in ("L", "LA"))


def sign_temp_files(owner_id: str) -> None:
    """Put owner_id into this process's temporary names, so a restart can tell a dead writer's leftovers."""
    global _writer
    _writer = owner_id


def temp_name() -> str:
    """.reverser-[OWNER-]HEX.tmp: a hidden name, signed by the service instance that writes it, if any."""
    return f"{TEMP_PREFIX}{_writer + '-' if _writer else ''}{secrets.token_hex(6)}.tmp"


def temp_writer(name: str) -> str:
    """The instance id in a temporary name made by temp_name(), '' when it has none."""
    body = name[len(TEMP_PREFIX):]
    return body.rpartition("-")[0] if name.startswith(TEMP_PREFIX) and body.endswith(".tmp") else ""


def write_atomic(folder: Path, name: str, data: bytes, on_exists: str = "number",
                 receipt: str | None = None) -> Path:
    """Write data as folder/name so no reader ever sees a partial file; return the final path.

    on_exists="number" never replaces a file: NAME_after.jpg taken gives
    NAME_after-1.jpg, and so on. The final name is claimed with link(), which
    fails when the name exists, so two writers cannot both take it.

    receipt: write through folder/receipt (a hidden name) and keep it after the
    result is in place, as a second hard link to it, until the caller removes it.
    A link count of 2 then proves the result was placed; see spool.py for how a
    restart uses that. Where hard links are not supported the receipt is lost
    in the rename.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (receipt or temp_name())
    if receipt:
        tmp.unlink(missing_ok=True)  # left by an attempt that never placed its result
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    placed = False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        final = _place(tmp, folder, name, on_exists, keep=bool(receipt))
        placed = True
        return final
    finally:
        if not (placed and receipt):
            tmp.unlink(missing_ok=True)


def _place(tmp: Path, folder: Path, name: str, on_exists: str, keep: bool) -> Path:
    """Give the written file tmp its final name in folder; keep: tmp stays as a second link."""
    if on_exists == "replace":
        final = folder / name
        if keep:
            second = folder / temp_name()
            os.link(tmp, second)
            try:
                os.replace(second, final)
            finally:
                second.unlink(missing_ok=True)
        else:
            os.replace(tmp, final)
        return final
    for final in _names(folder, name):
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

    A file signed by a service instance (output.temp_name) goes as soon as is_alive says that
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


def move_into(src: Path, folder: Path, name: str) -> Path:
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
    if st.st_dev != os.stat(folder).st_dev:
        staged = folder / temp_name()
        _copy(src, staged, st)
    try:
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
    for candidate in _names(folder, name):
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


def _copy(src: Path, dst: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        with open(src, "rb") as fi, open(dst, "xb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
            fo.flush()
            os.fsync(fo.fileno())
    else:  # a FIFO or device cannot be copied without opening it; keep an empty stand-in
        dst.touch()


def _link_free(staged: Path, folder: Path, name: str) -> Path:
    for final in _names(folder, name):
        try:
            os.link(staged, final, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
                raise
            # No hard links here (some network filesystems): check, then rename.
            if os.path.lexists(final):
                continue
            os.rename(staged, final)
            return final
        os.unlink(staged)
        return final
    raise FileExistsError(f"{folder}: no free name for {name}")


def _names(folder: Path, name: str):
    """The names a file called name may take in folder, in turn: NAME.EXT, NAME-1.EXT, NAME-2.EXT, ...

    'a.tar.gz' numbers before its last suffix only ('a.tar-1.gz'), which is enough here.
    """
    stem, ext = os.path.splitext(name)
    stem, ext = (stem, ext) if stem else (name, "")
    yield folder / name
    for n in range(1, 100_000):
        yield folder / f"{stem}-{n}{ext}"
