"""A model is a folder: model.safetensors + config.json + meta.json.

Weights are only ever read with safetensors, which parses a JSON header and raw
tensors and cannot execute code; a pickled checkpoint (torch.save, .pt, .bin,
.ckpt) is refused with a message, never unpickled.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .model import UNet, UNetConfig
from .tasks import Task, TaskConfig, make_task

WEIGHTS, CONFIG, META = "model.safetensors", "config.json", "meta.json"
FORMAT = 1
PICKLED = ("*.pt", "*.pth", "*.bin", "*.ckpt", "*.pkl")


class CheckpointError(ValueError):
    """A model folder that cannot be loaded; the message names the file and the fix."""


@dataclass
class Model:
    """A loaded model: the network, its task, and its record."""

    net: UNet
    task: Task
    task_cfg: TaskConfig
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def version(self):
        return self.meta.get("version")


def new_model(task_cfg: TaskConfig, unet_cfg: UNetConfig | None = None, pretrained: bool = True) -> Model:
    """A freshly initialised model whose network shape fits the task.

    A nonzero side_channels in unet_cfg asks for the task's auxiliary outputs
    (a blend head's bin logits) on a side head; the task says how many. A
    pretrained encoder starts from its ImageNet weights (pretrained=False
    leaves it random: load_model fills every weight from the folder, so a
    saved model never needs the package the first weights came from).
    """
    base = unet_cfg or UNetConfig()
    multiple = base.multiple
    task = make_task(task_cfg, multiple)
    ucfg = UNetConfig(**{**base.to_dict(), "widths": base.widths,
                         "in_channels": task.in_channels, "out_channels": task.out_channels,
                         "side_channels": task.side_channels if base.side_channels else 0})
    net = UNet(ucfg)
    if net.encoder is not None and pretrained:
        net.encoder.load_pretrained()
    if task_cfg.name == "translate":
        # Start at the base transform (identity or luma): zero the head.
        torch.nn.init.zeros_(net.head.weight)
        torch.nn.init.zeros_(net.head.bias)
    return Model(net, task, task_cfg, {})


def code_version() -> str:
    """The package version plus the git commit when running from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("reverser")
    except PackageNotFoundError:
        v = "0+unknown"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            v += "+g" + rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return v


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model is as readable as any file written here
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: Model, folder: str | Path, **meta) -> Path:
    """Write a model folder; each file appears whole (temp name, then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {**model.meta, **meta}
    record.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    record["code_version"] = code_version()
    config = {"format": FORMAT, "task": model.task_cfg.to_dict(), "unet": model.net.cfg.to_dict()}
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    _write_atomic(folder / WEIGHTS, lambda p: save_file(state, p))
    for name, obj in ((CONFIG, config), (META, record)):
        text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
        _write_atomic(folder / name, lambda p, t=text: Path(p).write_text(t))
    model.meta, model.path = record, folder
    return folder


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; a model folder needs {WEIGHTS}, {CONFIG} and {META}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return obj


def load_model(folder: str | Path) -> Model:
    """Load a model folder, or raise CheckpointError naming the file at fault."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: model folder not found")
    weights = folder / WEIGHTS
    if not weights.exists():
        pickled = sorted(p.name for pat in PICKLED for p in folder.glob(pat))
        hint = (f"; found {', '.join(pickled)}: pickled checkpoints are refused because loading them can run "
                f"code. Convert it where you trust it, with safetensors.torch.save_file") if pickled else ""
        raise CheckpointError(f"{weights}: missing{hint}")
    config = _read_json(folder / CONFIG)
    meta = _read_json(folder / META)
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{folder / CONFIG}: format {config.get('format')!r}, this version reads {FORMAT}")
    try:
        task_cfg = TaskConfig.from_dict(config["task"])
        unet_cfg = UNetConfig.from_dict(config["unet"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG}: invalid architecture or task ({e})") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{weights}: not a readable safetensors file ({e}); it may be truncated, corrupt, or a pickle"
        ) from None
    try:
        model = new_model(task_cfg, unet_cfg, pretrained=False)
    except ValueError as e:
        raise CheckpointError(f"{folder / CONFIG}: invalid architecture or task ({e})") from None
    if model.net.cfg != unet_cfg:
        raise CheckpointError(
            f"{folder / CONFIG}: channels {unet_cfg.in_channels}->{unet_cfg.out_channels} do not fit task "
            f"{task_cfg.name!r} ({model.net.cfg.in_channels}->{model.net.cfg.out_channels})"
        )
    expected = model.net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for label, keys in (("missing", missing), ("unexpected", unexpected),
                                               ("wrong shape", wrong)) if keys)
        raise CheckpointError(f"{weights}: weights do not match the architecture in {CONFIG} ({detail})")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{weights}: non-finite values (NaN or inf) in {', '.join(bad[:3])}")
    model.net.load_state_dict(state)
    model.net.eval()
    model.meta, model.path = meta, folder
    return model
