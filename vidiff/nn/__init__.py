"""The network: the factorized space-time UNet of the paper and its parts.

layers.py      convolutions, the recomputing norm + activation + conv, attention with relative positions
unet.py        UNet3D and UNetConfig
pooling.py     pooling a caption's tokens into one vector (attention pooling, whitened mean)
text.py        the frozen text encoder (a local Hugging Face folder or the packaged MiniLM-L6)
extensions.py  the options beyond the paper, called by the UNet through one hook
ema.py         the power-function EMA of the weights (EDM2) and its post-hoc reconstruction
"""

from vidiff.nn.unet import UNet3D, UNetConfig

__all__ = ["UNet3D", "UNetConfig"]
