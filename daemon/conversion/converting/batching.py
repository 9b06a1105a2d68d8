"""Which prepared items run together in one forward pass: the batcher's choice of the next batch.

Items wait in groups, one per model and working size. The next batch is the
oldest group that is full (max_batch of its queue) or whose first item has
waited the longest delay, cut to max_batch; the rest of it stays grouped.
"""

from __future__ import annotations


def pick(groups: dict, now: float, delay: float, max_batch: dict[str, int]) -> list | None:
    """The oldest group that is full or has waited long enough, cut to max_batch; None if none is.

    groups: {key: [item, ...]}, items with .job.queue and .queued (monotonic), oldest first; changed in place.
    """
    best = None
    for key, items in groups.items():
        full = len(items) >= max_batch.get(items[0].job.queue, 1)
        if (full or now >= items[0].queued + delay) and (best is None or items[0].queued < groups[best][0].queued):
            best = key
    if best is None:
        return None
    items = groups[best]
    n = max_batch.get(items[0].job.queue, 1)
    batch, rest = items[:n], items[n:]
    if rest:
        groups[best] = rest
    else:
        del groups[best]
    return batch
