"""Config files for tests: a config.toml on temporary folders, with sections merged as TOML wants."""

from __future__ import annotations

from pathlib import Path


def write_config(folder: Path, models: dict[str, Path], text: str = "") -> Path:
    """A config.toml in folder with its own inbox/outbox/state, the given models as queues, plus text."""
    folder.mkdir(parents=True, exist_ok=True)
    queues = "".join(
        f'\n[queues.{q}]\ntask = "{"colorize" if q == "colorize" else "translate"}"\nmodel = "{m}"\n'
        for q, m in models.items())
    base = ('[runtime]\ndevice = "cpu"\nmax_batch = 4\ntorch_threads = 1\n'
            '[watch]\nsettle_seconds = 0.3\nrescan_seconds = 2\n'
            '[retrain]\nenabled = false\n')
    path = folder / "config.toml"
    path.write_text(merge_sections(base, text) + queues)
    return path


def merge_sections(base: str, extra: str) -> str:
    """TOML forbids a section twice: keys in extra's sections replace or join base's."""
    import tomllib

    merged = tomllib.loads(base)
    for sec, kv in tomllib.loads(extra).items():
        merged.setdefault(sec, {}).update(kv)
    lines = []
    for sec, kv in merged.items():
        lines.append(f"[{sec}]")
        for k, v in kv.items():
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
