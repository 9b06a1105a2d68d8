"""reverser's service: folders, queues, schedules and signals around the unet package.

The rooms, each importing only from the rooms below it (pyproject.toml's
import-linter contracts, checked by `make test`):

    commands/     the CLI and one module per command; nothing imports these
    service.py    the life cycle: start-up, main loop, reload, shutdown; wires the rooms together
    webhost.py    the service's side of the web server: bound first, moved on reload, stopped last
    statusfile.py status.json's lists (files left alone, halves waiting), a failed write said once
    preflight.py  the checks before start-up (config, folders, device, models)
    web/          the dashboard and HTTP API ([web]): server, API, pages, security, files by id
    conversion/   the inbox feed and the hot swap on top of three rooms that know nothing of each other:
                  watching/ (the watcher), claims/ (the claim protocol, owners, a picture's hints,
                  leftovers, retention), converting/ (the pipeline, memory budget, encoding, batch sizing)
    learning/     pairs intake, registry, serving model, challenger, retraining, promotion, reports, scheduler
    ops/          status board, Prometheus metrics, systemd notify, the health check, logs, journal (no torch)
    core/         config, file operations (fs), name rules (names), quarantine, memory limits,
                  writers holding a file open (openfiles)
    errors.py     exit codes and UsageError

conversion/, learning/ and ops/ never import each other.

To change X, open Y:

    a config key or its default           core/config.py (and config.toml, which documents every key)
    which files are inputs, partial, pairs core/names.py
    an image format read or written       unet/data.py IMAGE_EXTS (the table), conversion/converting/encode.py (options)
    how results are named                 core/names.py output_name
    atomic writes, moves, free names      core/fs.py
    the reason note of a failed file      core/quarantine.py
    claiming, done/, recovery after crash conversion/claims/spool.py (which instance is alive: conversion/claims/owners.py)
    reading an image of any kind          unet/images.py open_image (16-bit samples, TIFFs Pillow cannot open:
                                          unet/deepread.py)
    a multi-page TIFF's pages             conversion/converting/document.py (the pipeline decodes one page at a time)
    batching, decoding, writing results   conversion/converting/pipeline.py
    what an image costs in memory         conversion/converting/budget.py (the default budget: core/memory.py)
    when a file counts as complete        conversion/watching/watcher.py, core/openfiles.py
    what happens to an input after it     conversion/feed.py
    color points beside a picture         conversion/claims/sidecar.py, companions.py; unet/hints.py, guide.py
    the promotion rule                    learning/promotion.py decide
    the nightly training run              learning/retrain.py (child: learning/challenger.py)
    report.json / report.png              learning/report.py
    `reverser models list`                commands/models.py format_versions
    a Prometheus metric                   ops/prometheus.py
    status.json / `reverser status`       ops/status.py, commands/status.py
    when the watchdog says "stalled"      ops/health.py
    a command-line option                 commands/cli.py, then the command's module
    a dashboard page or an API route      web/pages.py (templates/, static/), web/api.py
    who may call the web server           web/security.py
"""
