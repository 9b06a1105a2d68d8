"""The checks before start-up: the config, folders, device and every queue's model, without starting anything.

validate(cfg) is what both `reverser check` (commands/check.py) and the service
at start-up and at a reload run, so a config that passes `reverser check`
starts, and one that fails stops with exit status 78 (which the unit's
RestartPreventExitStatus= keeps from a restart loop).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .core.config import Config, ConfigError
from .core.fs import passing
from .learning.serving import candidates, model_dir, task_mismatch


class ConfigProblems(ConfigError):
    """Several configuration problems at once; its message lists them all."""

    def __init__(self, problems: list[ConfigError]):
        self.problems = problems
        first = problems[0]
        super().__init__(first.file, first.key, first.problem, first.hint)
        self.args = ("\n".join(describe(p) for p in problems),)

    def __str__(self) -> str:
        return self.args[0]


def validate(cfg: Config, models: bool = True, fallback: bool = False) -> list[ConfigError]:
    """Every problem that would stop the service, each naming the file, the key and the fix; [] when none.

    fallback: a champion that does not load is no problem when an earlier one
    (or the configured model) does, as the service then serves that one.
    """
    return check(cfg, models, fallback)[0]


def require_valid(cfg: Config, models: bool = True, fallback: bool = False) -> None:
    """Raise ConfigProblems (a ConfigError: exit 78) when validate() finds anything."""
    problems = validate(cfg, models, fallback)
    if problems:
        raise ConfigProblems(problems)


def check(cfg: Config, models: bool, fallback: bool = False) -> tuple[list[ConfigError], dict]:
    """(problems, facts for the summary: the device and each queue's model)."""
    problems = _folder_problems(cfg) + _overlap_problems(cfg) + _web_problems(cfg)
    device, problem = _device(cfg)
    problems += [problem] if problem else []
    facts = {"device": device, "models": {}}
    if models:
        for q in cfg.queues:
            summary, problem = _check_model(cfg, q, fallback)
            facts["models"][q] = summary
            problems += [problem] if problem else []
    return problems, facts


# Folders -------------------------------------------------------------------

def _folder_problems(cfg: Config) -> list[ConfigError]:
    wanted = [("[paths] inbox", cfg.paths.inbox), ("[paths] outbox", cfg.paths.outbox),
              ("[paths] state", cfg.paths.state)]
    for q in cfg.queues:  # sub-folders that already exist must be usable too
        wanted += [(f"[paths] inbox ({q})", cfg.inbox(q)), (f"[paths] outbox ({q})", cfg.outbox(q)),
                   (f"[paths] outbox ({q})", cfg.failed(q))]
    if cfg.logging.file is not None:
        wanted.append(("[logging] file", cfg.logging.file.parent))
    problems = []
    for key, path in wanted:
        why = folder_problem(path)
        if why:
            problems.append(ConfigError(cfg.file, key, f"{path}: {why}",
                                        "create it and give the service's user write access "
                                        "(under systemd: list it in ReadWritePaths=)"))
    return problems


def folder_problem(path: Path) -> str | None:
    """Why the service could not use path as a folder it writes into, or None when it can (or can create it)."""
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            return f"{probe} is a dangling link"
        if probe.parent == probe:
            return "no existing parent folder"
        probe = probe.parent
    if not probe.is_dir():
        return "exists but is not a folder" if probe == path else f"cannot be created: {probe} is a file"
    # os.access honours permissions, ACLs and the immutable flag; statvfs catches read-only mounts,
    # which os.access reports as writable for root.
    if os.statvfs(probe).f_flag & os.ST_RDONLY:
        return "on a read-only file system" if probe == path else f"cannot be created: {probe} is read-only"
    if not os.access(probe, os.W_OK | os.X_OK):
        return "not writable" if probe == path else f"cannot be created: {probe} is not writable"
    return None


def _overlap_problems(cfg: Config) -> list[ConfigError]:
    # A result or state file inside a watched inbox would be picked up as new input, forever.
    ours = [("[paths] outbox", cfg.outbox(q)) for q in cfg.queues]
    ours += [("[paths] state", cfg.state_dir(k)) for k in ("work", "done", "pairs", "models", "reports")]
    for q in cfg.queues:
        inbox = cfg.inbox(q).resolve()
        for key, path in ours:
            path = path.resolve()
            if path == inbox or inbox in path.parents or path in inbox.parents:
                return [ConfigError(cfg.file, key, f"{path} overlaps the watched inbox {inbox}",
                                    "give inbox, outbox and state separate folders, none inside another")]
    return []


# The web server ----------------------------------------------------------------

TOKEN_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(24))' makes one"


def _web_problems(cfg: Config) -> list[ConfigError]:
    """[web]: a reachable server needs a token; a token must be long enough; /metrics on one port only.
    The token itself is never printed."""
    w, problems = cfg.web, []
    if not w.enabled:
        return []
    if w.token and (len(w.token) < 16 or not w.token.isprintable() or any(c.isspace() for c in w.token)):
        problems.append(ConfigError(cfg.file, "[web] token", f"too weak: {len(w.token)} character(s), or spaces "
                                    "or control characters in it", f"use 16 or more printable characters; {TOKEN_HINT}"))
    if not w.loopback and not w.token:
        problems.append(ConfigError(
            cfg.file, "[web] token", f"empty while [web] host = {w.host!r} is not a loopback address: anyone who "
            "reaches the port could upload, delete, promote and train",
            f'set [web] token to a secret ({TOKEN_HINT}) and put a TLS proxy in front (README, "Web dashboard '
            'and HTTP API"), or keep [web] host = "127.0.0.1"'))
    m = cfg.metrics
    if m.enabled and m.port == w.port:
        problems.append(ConfigError(cfg.file, "[metrics] port", f"{m.port} is [web] port too; the web server "
                                    "serves /metrics itself", "remove [metrics] (or set enabled = false there)"))
    return problems


# Device ----------------------------------------------------------------------

def _device(cfg: Config):
    """(the device the service would use, or None; the problem, or None)."""
    import torch

    name = cfg.runtime.device
    key = "[runtime] device"
    if name == "auto":
        return ("cuda" if torch.cuda.is_available() else "cpu"), None
    if name == "cpu":
        return "cpu", None
    if not torch.cuda.is_available():
        return None, ConfigError(cfg.file, key, f"{name!r} asked for, but CUDA is not available here",
                                 'use "auto" (CUDA when present, else the CPU) or "cpu"; on a GPU host check '
                                 "nvidia-smi and that the service can open /dev/nvidia*")
    index = int(name.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        return None, ConfigError(cfg.file, key, f"{name!r} asked for, but this host has {count} CUDA device(s)",
                                 f'use "cuda" or "cuda:0" to "cuda:{count - 1}"')
    return name, None


# Models ------------------------------------------------------------------------

def _check_model(cfg: Config, queue: str, fallback: bool = False) -> tuple[str, ConfigError | None]:
    """(a one-line summary of the queue's model, the problem with it or None)."""
    from unet.checkpoint import CheckpointError, load_model

    key = f"[queues.{queue}] model"
    first = None
    for folder in candidates(cfg, queue) if fallback else [model_dir(cfg, queue)]:
        try:
            model = load_model(folder)
        except CheckpointError as e:
            if passing(e):   # the model is not at fault: the process is out of file handles
                return str(folder), ConfigError(cfg.file, key, f"cannot check the model now: {e}",
                                                "too many files are open: try again in a moment")
            first = first or (str(folder), ConfigError(
                cfg.file, key, f"cannot load the model: {e}",
                "point model at a folder holding model.safetensors, config.json and meta.json "
                "(reverser train --out writes one)"))
            continue
        summary = f"{folder} (version {model.version if model.version is not None else '?'})"
        want = cfg.queues[queue].task
        if model.task_cfg.name != want:
            return summary, ConfigError(cfg.file, key, task_mismatch(folder, model.task_cfg.name, want),
                                        f"use a {want} model, or set task = {model.task_cfg.name!r}")
        return summary, None
    return first


# Messages ----------------------------------------------------------------------

def describe(e: ConfigError) -> str:
    """'FILE:LINE: KEY: problem' plus an indented hint, the way compilers point at a source line."""
    line = _toml_line(e) or find_line(e.file, e.key)
    where = f"{e.file}:{line}" if e.file and line else (str(e.file) if e.file else "")
    head = ": ".join(x for x in (where, e.key, e.problem) if x)
    return head + (f"\n  hint: {e.hint}" if e.hint else "")


def _toml_line(e: ConfigError) -> int | None:
    m = re.search(r"\(at line (\d+), column \d+\)", e.problem)
    return int(m.group(1)) if m else None


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
_KEY = re.compile(r'^\s*"?([A-Za-z0-9_.-]+)"?\s*=')


def find_line(file: Path | str | None, key: str | None) -> int | None:
    """The line of the config file where key ('[section] name', 'queues.NAME' or a section) is written."""
    if not file or not key:
        return None
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    m = re.fullmatch(r"\[([^\]]+)\] (\S+)(?: \(.*\))?", key)
    section, name = (m.group(1), m.group(2)) if m else (key, None)
    current = ""
    for number, text in enumerate(lines, 1):
        header = _HEADER.match(text)
        if header:
            current = header.group(1).replace('"', "")
            if name is None and (current == section or current.startswith(section + ".")):
                return number
            continue
        k = _KEY.match(text)
        if k and name is not None and current == section and k.group(1) == name:
            return number
        if k and name is None and current == "" and k.group(1) == section:
            return number
    if name is not None:  # a key that was left out: point at its section
        return find_line(file, section)
    return None
