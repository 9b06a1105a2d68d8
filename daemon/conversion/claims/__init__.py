"""The claim protocol: who owns a file, where it is (inbox, work/, done/, failed/), and how it moves.

spool.py (claims by atomic rename, receipts, recovery after a crash),
owners.py (the locks that say which instance is alive), companions.py and
sidecar.py (a picture's hints files, claimed and moved with it), leftovers.py
(moves that wait for room), retention.py (done/ kept for done_keep_days).
Never converts anything: the feed joins claims to the pipeline.
"""
