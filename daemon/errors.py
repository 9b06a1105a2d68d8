"""Exit codes and the usage error: the bottom room, imported by anything, importing nothing of daemon/.

Exit codes follow sysexits: 0 ok, 64 usage, 65 bad input data, 70 internal
error, 75 try again later, 78 bad configuration.
"""

from __future__ import annotations

import os

EX_OK, EX_USAGE, EX_DATAERR, EX_SOFTWARE, EX_CONFIG = (
    os.EX_OK, os.EX_USAGE, os.EX_DATAERR, os.EX_SOFTWARE, os.EX_CONFIG)
EX_TEMPFAIL = getattr(os, "EX_TEMPFAIL", 75)


class UsageError(Exception):
    """Wrong arguments: exit 64."""
