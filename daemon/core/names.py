"""Which names mean what: image extensions, inputs, partial files, training pairs, results, reason files;
how a name is shortened to fit the file-name limit, and how it is printed (namebytes.py, which needs no
torch, so ops/ can print names too).

One rule per question, each used by every part that asks it: the watcher,
the service's inbox scan, `reverser convert`, the pairs intake and quarantine.
The image-extension table is unet's (unet.data.IMAGE_EXTS, what training
reads); the Pillow format of each extension is Pillow's own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from PIL import Image

from unet.data import IMAGE_EXTS

from .namebytes import NAME_MAX, fitted, name_bytes, shown  # noqa: F401  (one import for every name rule)

Image.init()
# Suffix -> Pillow format, for inputs we read and outputs we write.
EXT_FORMAT = {ext: Image.registered_extensions()[ext] for ext in sorted(IMAGE_EXTS)}
FORMAT_EXT = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif"}
# Formats we read but do not write: a GIF result would be palette-quantized; a HEIC or AVIF photo's
# result is a JPEG, which every viewer opens.
WRITE_INSTEAD = {".gif": ".png", ".heic": ".jpg", ".heif": ".jpg", ".avif": ".jpg"}
# Names writers use while a file is still arriving.
PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", "~")
REASON_SUFFIX = ".reason.txt"
_BEFORE = re.compile(r"_before$", re.IGNORECASE)
_HALF = re.compile(r"^(?P<name>.+)_(?P<half>before|after)$", re.IGNORECASE)
_HALF_END = re.compile(r"_(before|after)$", re.IGNORECASE)
# NAME_hints.json or NAME_hints.png beside NAME_before.EXT: its color points (unet/hints.py).
HINTS_EXTS = (".json", ".png")
_HINTS = re.compile(r"^(?P<name>.+)_hints$", re.IGNORECASE)


def is_image(name: str) -> bool:
    """An image file's name by its extension (any case)."""
    return Path(name).suffix.lower() in IMAGE_EXTS


def is_partial(name: str) -> bool:
    """Names writers use while a file is incomplete (and hidden files): never taken."""
    return name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES)


def is_input(name: str) -> bool:
    """NAME_before.<image ext>: the names the service converts."""
    stem, ext = os.path.splitext(name)
    return is_image(name) and stem.lower().endswith("_before") and len(stem) > len("_before")


def is_convertible(name: str) -> bool:
    """What `reverser convert` takes from a folder: image files, not hidden, not results (_after)."""
    return not name.startswith(".") and is_image(name) and "_after" not in Path(name).stem


def is_pair_file(name: str) -> bool:
    """What the pairs intake takes: an image file name, not hidden, not a partial download."""
    return not is_partial(name) and is_image(name)


def pair_half(stem: str) -> tuple[str, str] | None:
    """NAME_before -> (NAME, 'before'), NAME_after -> (NAME, 'after'); None for any other stem."""
    m = _HALF.match(stem)
    return (m["name"], m["half"].lower()) if m else None


def is_hints(name: str) -> bool:
    """NAME_hints.json or NAME_hints.png (any case): color points for NAME_before.EXT, not an input."""
    stem, ext = os.path.splitext(name)
    return not is_partial(name) and ext.lower() in HINTS_EXTS and _HINTS.match(stem) is not None


def hints_stem(name: str) -> str:
    """NAME_hints.json -> NAME; NAME_before.EXT -> NAME: the stem a picture and its hints share."""
    stem = os.path.splitext(name)[0]
    m = _HINTS.match(stem)
    return m["name"] if m else _BEFORE.sub("", stem)


def hints_names(input_name: str) -> list[str]:
    """The names NAME_before.EXT's hints may have, json first: NAME_hints.json, NAME_hints.png, each
    with the marker and extension in lower or upper case (NAME itself as it is spelled)."""
    stem = hints_stem(input_name)
    return [stem + marker + ext for ext in HINTS_EXTS for marker, ext in
            (("_hints", ext), ("_HINTS", ext.upper()), ("_hints", ext.upper()), ("_HINTS", ext))]


def output_name(input_name: str, fmt: str = "same") -> str:
    """NAME_before.EXT -> NAME_after.EXT; NAME.EXT -> NAME_after.EXT; fmt other than same picks the EXT.
    A name that would not fit the file-name limit has NAME cut short."""
    path = Path(input_name)
    stem = _BEFORE.sub("", path.stem)
    ext = path.suffix.lower() if fmt == "same" else FORMAT_EXT[fmt]
    ext = WRITE_INSTEAD.get(ext, ext) if ext in EXT_FORMAT else ".png"
    if fmt == "same" and path.suffix and path.suffix.lower() == ext:
        ext = path.suffix  # keep the user's spelling: .JPG stays .JPG
    return fitted(stem, f"_after{ext}")  # NAME.EXT at the limit: NAME_after.EXT would not fit whole


def format_list() -> str:
    """The formats read, for a person: 'BMP, GIF, JPEG, PNG, TIFF or WebP'."""
    shown = sorted({"WebP" if f == "WEBP" else f for f in EXT_FORMAT.values()})
    return ", ".join(shown[:-1]) + " or " + shown[-1]


def input_name(name: str) -> str:
    """The name under which an image dropped into an inbox is converted: grandma.jpg -> grandma_before.jpg
    (grandma_after.jpg too); cut short to fit the file-name limit."""
    stem, ext = os.path.splitext(name)
    stem = _HALF_END.sub("", stem) or "photo"
    return fitted(stem, f"_before{ext}")


def why_left_alone(name: str, expect: str, rename=None) -> tuple[str, str]:
    """(why a file is left alone, what to do about it): a format not read is named as such, before the name
    is blamed. rename(name) gives the name it should have, where one can be said (the inbox: input_name)."""
    ext = Path(name).suffix
    if ext and ext.lower() not in IMAGE_EXTS:
        return (f"the format {shown(ext)} is not one read here (read: {', '.join(sorted(IMAGE_EXTS))})",
                f"save it as {format_list()} instead")
    if rename is not None and is_image(name):
        return f"the name is not {expect}", f"rename it {shown(rename(name))}"
    return f"the name is not {expect}", f"give it a name like {expect}"


def not_taken(name: str, expect: str, rename=None) -> str:
    """Why a file name is left alone and what to do, for the log (see why_left_alone)."""
    why, fix = why_left_alone(name, expect, rename)
    return f"left alone: {why}; {fix}"


def reason_name(name: str) -> str:
    """NAME.reason.txt, the name cut short when the whole would not fit (the note names the file in full)."""
    return fitted(name, REASON_SUFFIX)



def is_inbox_file(name: str) -> bool:
    """What the inbox watcher hands on: a picture, or a picture's hints (which may come alone: a re-color)."""
    return is_input(name) or is_hints(name)
