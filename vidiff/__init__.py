"""vidiff: Video Diffusion Models (Ho, Salimans, Gritsenko, Chan, Norouzi, Fleet, 2022)."""

__version__ = "0.1.0"

from .config import Config, ConfigError  # noqa: E402
from .diffusion import Denoiser, DiffusionLoss  # noqa: E402
from .pipeline import VideoDiffusion  # noqa: E402
from .presets import PRESETS, get_preset  # noqa: E402
from .unet import UNet3D, UNetConfig  # noqa: E402

__all__ = ["Config", "ConfigError", "Denoiser", "DiffusionLoss", "VideoDiffusion", "PRESETS", "get_preset",
           "UNet3D", "UNetConfig"]
