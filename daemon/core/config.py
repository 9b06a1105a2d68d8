"""config.toml: one frozen dataclass per section, validated with messages a user can act on.

Every key has a default and a comment here; the shipped config.toml repeats
them. Unknown keys are errors with a suggestion, relative paths are resolved
against the config file's folder, and every error names the file, the key and
what was expected.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path


class ConfigError(Exception):
    """A configuration problem: exit status 78."""

    def __init__(self, file: Path | str | None, key: str | None, problem: str, hint: str = ""):
        self.file, self.key, self.problem, self.hint = file, key, problem, hint
        where = ": ".join(str(x) for x in (file, key) if x)
        super().__init__(f"{where}: {problem}" + (f"\n  hint: {hint}" if hint else ""))


Auto = typing.Literal["auto"]


@dataclass(frozen=True)
class PathsConfig:
    inbox: Path = Path("inbox")      # one sub-folder per queue: inbox/<queue>/ and inbox/<queue>/train/
    outbox: Path = Path("outbox")    # results in outbox/<queue>/, quarantined inputs in outbox/<queue>/failed/
    state: Path = Path("var")        # work/, done/, pairs/, models/, reports/, status.json


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    max_batch: int | Auto = "auto"       # images per forward pass; auto = measured best for the device at start-up
    max_delay_ms: float = 25.0           # wait for more items this long, counted from the first item queued
    decode_threads: int = 2              # threads reading and preparing images
    encode_threads: int = 2              # threads finishing and writing results
    queue_size: int = 64                 # files in flight at most (claimed, decoded or being written)
    memory_budget_mb: int | Auto = "auto"  # decoded images in flight at most, in MiB; auto = half the memory
                                         # of the machine, or of the cgroup's limit when one is set
    torch_threads: int = 0               # CPU threads for the model; 0 = torch's default
    drain_seconds: float = 30.0          # on SIGTERM, finish work in flight for at most this long


@dataclass(frozen=True)
class WatchConfig:
    observer: typing.Literal["auto", "inotify", "polling"] = "auto"  # polling for network shares
    settle_seconds: float = 1.0          # a file unchanged this long (size and mtime) is complete
    rescan_seconds: float = 30.0         # full scan of the inboxes this often, to catch missed events
    poll_seconds: float = 1.0            # polling observer's interval


@dataclass(frozen=True)
class LimitsConfig:
    max_pixels: int = 120_000_000        # larger images are refused before decoding (decompression bombs)
    max_file_mb: float = 300.0           # larger files are refused unread
    retry_attempts: int = 4              # transient errors (file vanished, permission) are retried this often
    retry_backoff_seconds: float = 0.5   # first wait between tries; doubles each time
    max_pages: int = 1000                # a TIFF with more pages is refused (a page bomb), its pages unread
    decode_seconds: float = 1800.0       # a decode (one page) running longer fails its file: none holds a slot


@dataclass(frozen=True)
class OutputConfig:
    format: typing.Literal["same", "jpeg", "png", "webp", "tiff"] = "same"  # same: the input's format
    jpeg_quality: int = 92               # 1-100, also used for WebP
    on_exists: typing.Literal["number", "replace"] = "number"  # number: NAME_after-1.jpg, never overwrite
    keep_inputs: bool = True             # keep processed inputs in <state>/done/<queue>/; false deletes them
    done_keep_days: float = 0.0          # remove kept inputs processed longer ago than this; 0 = keep forever
    done_max_mb: float = 0.0             # then remove the oldest while done/ holds more; 0 = no cap


@dataclass(frozen=True)
class RetrainConfig:
    enabled: bool = True                 # run the scheduled job at all
    cron: str = "0 3 * * *"              # when, in the local time zone (minute hour day month weekday)
    min_new_pairs: int = 20              # skip the run when fewer new pairs arrived since the last one
    max_minutes: float = 60.0            # training budget of one run
    max_epochs: int = 0                  # ... and at most this many epochs (0: the minutes alone decide)
    pair_timeout_minutes: float = 60.0   # a half left without its other half this long is quarantined
    val_percent: float = 15.0            # share of pairs held out (by a hash of the name) to score models
    margin: float = 0.05                 # a challenger must beat the champion's PSNR by this many dB
    promotion_confidence: float = 0.95   # ... with this confidence, over the held-out pairs' per-image gains
    min_holdout_pairs: int = 10          # fewer held-out pairs than this decide nothing: not promoted
    keep_rejected: int = 5               # rejected versions kept per queue; older ones are pruned
    threads: int = 1                     # CPU threads for the training child (conversion keeps the rest)
    nice: int = 10                       # the training child's niceness (lower priority than conversion)


@dataclass(frozen=True)
class LoggingConfig:
    level: typing.Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json: bool = False                   # one JSON object per line (also: reverser run --log-json)
    file: Path | None = None             # also log to this file, rotated
    rotation: str = "20 MB"              # rotate the file at this size
    retention: int = 5                   # rotated files kept


@dataclass(frozen=True)
class StatusConfig:
    interval_seconds: float = 2.0        # how often <state>/status.json is rewritten


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = False                # Prometheus text endpoint
    host: str = "127.0.0.1"              # keep it on localhost unless a proxy guards it
    port: int = 9464


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = False                # the dashboard, the HTTP API and /metrics on one port
    host: str = "127.0.0.1"              # any address other than loopback needs a token (and a TLS proxy)
    port: int = 8080
    token: str = ""                      # Bearer token for the API and the pages' login; "" = none (loopback only)
    max_connections: int = 200           # open connections at most; more are closed at once (file handles)
    header_seconds: float = 10.0         # a request's headers must come whole within this (slowloris)
    body_seconds: float = 600.0          # and its body (an upload) within this, or the connection is cut

    @property
    def loopback(self) -> bool:
        """Whether host is a loopback address: the server is reachable from this machine only."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as [::1]) or localhost."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class QueueConfig:
    task: typing.Literal["colorize", "translate"]   # what the queue's model does
    model: Path                                      # the shipped model folder: version 1 of the registry
    base_pairs: tuple[Path, ...] = ()                # pair folders always mixed into retraining
    # colorize: an input that has color already is written through unchanged (keep), colorized anew, its
    # colors lost (recolor), or quarantined (fail)
    color_inputs: typing.Literal["keep", "recolor", "fail"] = "keep"
    name: str = ""                                   # filled in from [queues.<name>]


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    queues: dict[str, QueueConfig] = field(default_factory=dict)
    file: Path | None = None

    # Folder layout, in one place.
    def inbox(self, q: str) -> Path:
        return self.paths.inbox / q

    def train_inbox(self, q: str) -> Path:
        return self.paths.inbox / q / "train"

    def outbox(self, q: str) -> Path:
        return self.paths.outbox / q

    def failed(self, q: str) -> Path:
        return self.paths.outbox / q / "failed"

    def state_dir(self, kind: str, q: str | None = None) -> Path:
        """<state>/<kind>[/<queue>] for kind in work, done, pairs, models, reports."""
        return self.paths.state / kind / q if q else self.paths.state / kind


SECTIONS = {f.name: f.type for f in fields(Config) if f.name not in ("queues", "file")}
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raise ConfigError naming the file and key on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found",
                          "pass --config PATH, or run from the folder holding config.toml") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, None, f"cannot read: {e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, None, f"not valid TOML: {e}",
                          "strings need quotes; each [section] and key may appear once") from None
    return parse_config(raw, path)


def parse_config(raw: dict, path: Path | None = None, base: Path | None = None) -> Config:
    base = base if base is not None else (path.parent.resolve() if path else Path.cwd())
    _reject_unknown(raw, list(SECTIONS) + ["queues"], path, "")
    sections = {}
    for name, cls in SECTIONS.items():
        cls = globals()[cls] if isinstance(cls, str) else cls
        sections[name] = _build(cls, raw.get(name, {}), path, name, base)
    queues_raw = raw.get("queues", {})
    if not isinstance(queues_raw, dict) or not queues_raw:
        raise ConfigError(path, "queues", "no queues defined",
                          'add a section like [queues.colorize] with task = "colorize" and model = "models/colorize"')
    queues = {}
    for qname, qraw in queues_raw.items():
        key = f"queues.{qname}"
        if not QUEUE_NAME.match(qname) or qname == "train":
            raise ConfigError(path, key, f"queue name {qname!r} is not a plain folder name",
                              "use letters, digits, '-', '_' or '.', and not 'train'")
        if not isinstance(qraw, dict):
            raise ConfigError(path, key, "expected a table: [queues.NAME] with task and model")
        queues[qname] = _build(QueueConfig, {**qraw, "name": qname}, path, key, base)
        if "color_inputs" in qraw and queues[qname].task != "colorize":
            raise ConfigError(path, f"[{key}] color_inputs", "only a colorize queue takes color_inputs: "
                              "a translate queue's inputs are color by design", f"remove it from [{key}]")
    return Config(**sections, queues=queues, file=path)


def _reject_unknown(raw: dict, known: list[str], path, prefix: str) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            raise ConfigError(path, f"{prefix}{key}", "unknown key", hint)


def _build(cls, raw, path, section: str, base: Path):
    if not isinstance(raw, dict):
        raise ConfigError(path, section, f"expected a table [{section}], got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    _reject_unknown(raw, names, path, f"[{section}] ")
    values = {}
    for f in fields(cls):
        key = f"[{section}] {f.name}"
        if f.name in raw:
            values[f.name] = _coerce(raw[f.name], hints[f.name], path, key, base)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(path, key, "missing", f"add {f.name} = ... to [{section}]")
        else:
            default = f.default if f.default is not MISSING else f.default_factory()
            values[f.name] = _resolve(default, base)
    _check_ranges(cls, values, path, section)
    return cls(**values)


def _resolve(value, base: Path):
    if isinstance(value, Path):
        return value if value.is_absolute() else (base / value)
    if isinstance(value, tuple):
        return tuple(_resolve(v, base) for v in value)
    return value


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            Path: "a path string"}.get(tp, str(tp))


def _coerce(value, tp, path, key: str, base: Path):
    """Check value against the annotated type; paths are resolved against base."""
    origin = typing.get_origin(tp)
    bad = ConfigError(path, key, f"expected {_describe(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin in (typing.Union, types.UnionType):
        if value == "" and type(None) in typing.get_args(tp):
            return None  # "" means unset for optional keys
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, key, base)
            except ConfigError:
                pass
        raise bad
    if origin is tuple:
        if not isinstance(value, list):
            raise bad
        return tuple(_coerce(v, typing.get_args(tp)[0], path, key, base) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if tp is Path:
        if isinstance(value, str) and value:
            return _resolve(Path(value).expanduser(), base)
        raise bad
    raise AssertionError(f"unhandled config type {tp}")


# (section class, field) -> (test, what is expected)
_RANGES = {
    (RuntimeConfig, "max_batch"): (lambda v: v == "auto" or 1 <= v <= 1024, '"auto" or an integer 1-1024'),
    (RuntimeConfig, "max_delay_ms"): (lambda v: 0 <= v <= 60_000, "0 to 60000 milliseconds"),
    (RuntimeConfig, "decode_threads"): (lambda v: 1 <= v <= 64, "1 to 64"),
    (RuntimeConfig, "encode_threads"): (lambda v: 1 <= v <= 64, "1 to 64"),
    (RuntimeConfig, "queue_size"): (lambda v: 1 <= v <= 100_000, "1 to 100000"),
    (RuntimeConfig, "memory_budget_mb"): (lambda v: v == "auto" or 64 <= v <= 1 << 30,
                                          '"auto" or 64 MiB or more'),
    (RuntimeConfig, "torch_threads"): (lambda v: 0 <= v <= 1024, "0 (default) or a thread count"),
    (RuntimeConfig, "drain_seconds"): (lambda v: 0 <= v <= 3600, "0 to 3600 seconds"),
    (RuntimeConfig, "device"): (lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
                                '"auto", "cpu", "cuda" or "cuda:N"'),
    (WatchConfig, "settle_seconds"): (lambda v: 0 <= v <= 3600, "0 to 3600 seconds"),
    (WatchConfig, "rescan_seconds"): (lambda v: 0.1 <= v <= 86400, "0.1 to 86400 seconds"),
    (WatchConfig, "poll_seconds"): (lambda v: 0.05 <= v <= 3600, "0.05 to 3600 seconds"),
    (LimitsConfig, "max_pixels"): (lambda v: v >= 1, "a positive pixel count"),
    (LimitsConfig, "max_file_mb"): (lambda v: v > 0, "a positive number of megabytes"),
    (LimitsConfig, "retry_attempts"): (lambda v: 1 <= v <= 100, "1 to 100"),
    (LimitsConfig, "retry_backoff_seconds"): (lambda v: 0 <= v <= 600, "0 to 600 seconds"),
    (LimitsConfig, "max_pages"): (lambda v: v >= 1, "a positive page count"),
    (LimitsConfig, "decode_seconds"): (lambda v: 0 < v <= 86400, "more than 0, up to 86400 seconds"),
    (OutputConfig, "jpeg_quality"): (lambda v: 1 <= v <= 100, "1 to 100"),
    (OutputConfig, "done_keep_days"): (lambda v: 0 <= v <= 100 * 365, "0 (keep forever) or a number of days"),
    (OutputConfig, "done_max_mb"): (lambda v: v >= 0, "0 (no cap) or a size in MB"),
    (RetrainConfig, "min_new_pairs"): (lambda v: v >= 0, "0 or more"),
    (RetrainConfig, "max_minutes"): (lambda v: 0 < v <= 24 * 60, "more than 0, at most 1440 minutes"),
    (RetrainConfig, "max_epochs"): (lambda v: 0 <= v <= 100_000, "0 (no limit) to 100000 epochs"),
    (RetrainConfig, "pair_timeout_minutes"): (lambda v: v > 0, "a positive number of minutes"),
    (RetrainConfig, "val_percent"): (lambda v: 1 <= v <= 50, "1 to 50 percent"),
    (RetrainConfig, "margin"): (lambda v: v >= 0, "0 or more dB"),
    (RetrainConfig, "promotion_confidence"): (lambda v: 0.5 <= v < 1, "0.5 to below 1, e.g. 0.95"),
    (RetrainConfig, "min_holdout_pairs"): (lambda v: v >= 1, "1 or more"),
    (RetrainConfig, "keep_rejected"): (lambda v: v >= 0, "0 or more"),
    (RetrainConfig, "threads"): (lambda v: 1 <= v <= 1024, "1 or more"),
    (RetrainConfig, "nice"): (lambda v: 0 <= v <= 19, "0 to 19"),
    (RetrainConfig, "cron"): (lambda v: _valid_cron(v), 'five fields, e.g. "0 3 * * *"'),
    (LoggingConfig, "retention"): (lambda v: v >= 0, "0 or more files"),
    (StatusConfig, "interval_seconds"): (lambda v: 0.1 <= v <= 3600, "0.1 to 3600 seconds"),
    (MetricsConfig, "port"): (lambda v: 1 <= v <= 65535, "a TCP port, 1 to 65535"),
    (WebConfig, "port"): (lambda v: 1 <= v <= 65535, "a TCP port, 1 to 65535"),
    (WebConfig, "host"): (lambda v: v.strip() != "", 'an address, e.g. "127.0.0.1"'),
    (WebConfig, "max_connections"): (lambda v: 1 <= v <= 100_000, "1 to 100000"),
    (WebConfig, "header_seconds"): (lambda v: 0.1 <= v <= 3600, "0.1 to 3600 seconds"),
    (WebConfig, "body_seconds"): (lambda v: 1 <= v <= 86400, "1 to 86400 seconds"),
}


def _valid_cron(expr: str) -> bool:
    try:
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(expr)
        return True
    except (ValueError, TypeError):
        return False


def _check_ranges(cls, values: dict, path, section: str) -> None:
    for name, value in values.items():
        rule = _RANGES.get((cls, name))
        if rule and value is not None and not rule[0](value):
            raise ConfigError(path, f"[{section}] {name}", f"expected {rule[1]}, got {value!r}")
