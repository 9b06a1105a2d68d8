"""The U-Net, its two tasks, checkpoints, the Predictor and training. Knows nothing of folders being watched."""

from .checkpoint import CheckpointError, Model, load_model, new_model, save_model
from .images import ImageError, open_image
from .model import UNet, UNetConfig
from .predictor import Predictor, pick_device
from .tasks import TaskConfig

__all__ = [
    "CheckpointError", "ImageError", "Model", "Predictor", "TaskConfig", "UNet", "UNetConfig",
    "load_model", "new_model", "open_image", "pick_device", "save_model",
]
