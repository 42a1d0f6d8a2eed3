"""vidiff: Video Diffusion Models (Ho, Salimans, Gritsenko, Chan, Norouzi, Fleet, 2022)."""

__version__ = "0.1.0"
