"""Whether a file that failed may not be whole yet: changed after it was claimed, still open, or just written.

A file that fails to decode (or to be read) is judged on its content only when
that content is whole; otherwise the pipeline reports it unfinished, and it
goes back to wait for its writer instead of being quarantined.
"""

from __future__ import annotations

import os
import time

from ...core.openfiles import open_for_writing
from .jobs import Job


def unfinished(job: Job, young: float) -> str:
    """Why job's file may not be whole yet, in words; '' when it is as its writer left it."""
    try:
        st = os.stat(job.path)
    except OSError:
        return ""
    if job.claimed is not None and (st.st_size, st.st_mtime_ns) != job.claimed:
        return "it changed after it was taken"
    writers, _ = open_for_writing([job.path])
    if writers:
        return f"process {writers[job.path]} still holds it open for writing"
    age = time.time() - st.st_mtime
    if age < young:
        return f"it was written {age:.0f} s ago, and a writer may append more"
    return ""
