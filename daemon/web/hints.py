"""Color points through the web: a hints body checked, and its sidecar placed in the inbox.

The inbox contract: a picture's ``NAME_hints.json`` is placed (temp file, then
rename) under the picture's final inbox name stem BEFORE the picture
``NAME_before.EXT`` is placed, so the service that claims the picture finds its
hints beside it (moves.py). The routes that read points are in api.py and
recolor.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from unet.hints import HintError, parse_hints

from ..core.fs import rename_new, temp_name
from ..core.names import hints_stem
from .ondisk import Refused

def checked(body: bytes) -> bytes:
    """A hints body as canonical JSON bytes, or Refused(400) with the HintError's reason."""
    try:
        hints = parse_hints(body)
    except HintError as e:
        raise Refused(400, f"bad hints: {e}") from None
    if not hints:
        raise Refused(400, "bad hints: no color points")
    return hints.to_json().encode()


def sidecar_name(picture_name: str) -> str:
    """NAME_before.EXT -> NAME_hints.json (the stem the picture will have in the inbox)."""
    return f"{hints_stem(picture_name)}_hints.json"


def place_sidecar(inbox: Path, picture_name: str, body: bytes) -> Path:
    """Write body as the picture's sidecar in inbox whole (temp file, fsync, then its name), never over a
    file of that name (FileExistsError); returns it."""
    tmp = inbox / temp_name("web-hints")
    final = inbox / sidecar_name(picture_name)
    try:
        with open(tmp, "xb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        rename_new(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final
