"""The pipeline: a claimed file's bytes in, its result written to the outbox.

pipeline.py (decode, micro-batches, the forward pass, finish, encode, on
worker pools), with its parts: jobs, batching, budget (memory in flight),
workers, deadline, document (multi-page TIFFs), colorinputs, unfinished,
encode and encode16, outbox (writing with receipts), autobatch (max_batch
measured). Knows nothing of inboxes or claims: a Job says where to read and
where to write, and its callback is told the outcome.
"""
