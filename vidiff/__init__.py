"""vidiff: Video Diffusion Models (Ho, Salimans, Gritsenko, Chan, Norouzi, Fleet, 2022)."""

__version__ = "0.1.0"

from vidiff.config import Config, ConfigError  # noqa: E402
from vidiff.diffusion import Denoiser, DiffusionLoss  # noqa: E402
from vidiff.pipeline import VideoDiffusion  # noqa: E402
from vidiff.presets import PRESETS, get_preset  # noqa: E402
from vidiff.unet import UNet3D, UNetConfig  # noqa: E402

__all__ = [
    "Config",
    "ConfigError",
    "Denoiser",
    "DiffusionLoss",
    "VideoDiffusion",
    "PRESETS",
    "get_preset",
    "UNet3D",
    "UNetConfig",
]
