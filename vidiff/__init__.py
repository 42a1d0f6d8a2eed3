"""vidiff: Video Diffusion Models (Ho, Salimans, Gritsenko, Chan, Norouzi, Fleet, 2022).

The package is grouped by layer (the docs' Design page): ``diffusion/`` (the maths, samplers and
guidance), ``nn/`` (the network), ``io/`` (files and videos), ``data/``, ``metrics/``, ``hub/``,
``train/``, ``cli/`` and ``studio/``; the model (config, presets, checkpoint, pipeline, request) and the
tasks sit at the top. What users import is here: ``from vidiff import VideoDiffusion, get_preset``.
"""

__version__ = "0.1.0"

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from vidiff import train
from vidiff.config import Config
from vidiff.diffusion import Denoiser, DiffusionLoss
from vidiff.diffusion.gaussian import GaussianData
from vidiff.diffusion.guidance import classifier_free_guidance, clipped, compose, reconstruction_guidance, replacement
from vidiff.diffusion.sampling import SAMPLERS, get_sampler, logsnr_grid, register_sampler
from vidiff.errors import ConfigError, VidiffError
from vidiff.metrics.evaluate import evaluate
from vidiff.nn import UNet3D, UNetConfig
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import PRESETS, get_preset
from vidiff.request import SampleRequest
from vidiff.tasks import extend, interpolate, predict, upsample

__all__ = [
    "Config",
    "ConfigError",
    "Denoiser",
    "DiffusionLoss",
    "GaussianData",
    "PRESETS",
    "SAMPLERS",
    "SampleRequest",
    "UNet3D",
    "UNetConfig",
    "VideoDiffusion",
    "VidiffError",
    "classifier_free_guidance",
    "clipped",
    "compose",
    "evaluate",
    "extend",
    "get_preset",
    "get_sampler",
    "interpolate",
    "logsnr_grid",
    "predict",
    "reconstruction_guidance",
    "register_sampler",
    "replacement",
    "train",
    "upsample",
]

# Module paths of release 0.1.0 that moved when the package was grouped by layer: they still import,
# for one more release, as the module at the new place, with a DeprecationWarning naming it.
MOVED = {
    "vidiff.schedule": "vidiff.diffusion.schedule",
    "vidiff.gaussian": "vidiff.diffusion.gaussian",
    "vidiff.sampling": "vidiff.diffusion.sampling",
    "vidiff.guidance": "vidiff.diffusion.guidance",
    "vidiff.sampling_setup": "vidiff.request",
    "vidiff.layers": "vidiff.nn.layers",
    "vidiff.unet": "vidiff.nn.unet",
    "vidiff.pooling": "vidiff.nn.pooling",
    "vidiff.text": "vidiff.nn.text",
    "vidiff.extensions": "vidiff.nn.extensions",
    "vidiff.files": "vidiff.io.files",
    "vidiff.videoio": "vidiff.io.video",
    "vidiff.data.video_reader": "vidiff.io.decode",
    "vidiff.data.transforms": "vidiff.io.frames",
    "vidiff.publish": "vidiff.hub.publish",
    "vidiff.evaluate": "vidiff.metrics.evaluate",
    "vidiff.data.errors": "vidiff.errors",
    "vidiff.metrics.errors": "vidiff.errors",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module at its new place (the same object, not a copy)."""

    def __init__(self):
        self._specs = {}

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}: import it from there ({spec.name} goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._specs[module.__name__] = module.__spec__  # the import system sets the alias's on it next
        return module

    def exec_module(self, module):
        module.__spec__ = self._specs[module.__name__]  # the module's own spec back


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
