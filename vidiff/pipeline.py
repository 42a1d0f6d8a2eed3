"""The top-level model: a UNet3D, its parameterisation and configuration, conditioning, sampling,
`save_pretrained` / `from_pretrained` / `push_to_hub`.

    from vidiff import VideoDiffusion
    model = VideoDiffusion.from_pretrained("runs/demo")   # or a Hub model: "org/name"
    videos = model.sample(4, seed=0)             # (4, 3, f, h, w) in [−1, 1]
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from vidiff.checkpoint import load_config, load_weights, read_checkpoint
from vidiff.conditioning import build_conditioning
from vidiff.config import Config
from vidiff.diffusion.guidance import classifier_free_guidance
from vidiff.diffusion.process import Denoiser
from vidiff.diffusion.sampling import Noise, initial_noise
from vidiff.errors import VidiffError
from vidiff.io.files import atomic_write, save_tensors
from vidiff.io.frames import parse_size
from vidiff.nn.ema import weights_file
from vidiff.nn.unet import UNet3D
from vidiff.request import SamplerCall, SampleRequest, resolve_sampling


@contextlib.contextmanager
def evaluating(module):
    """`module` (when it is an nn.Module) in eval mode for the block, its training mode restored after
    it, also when the block raises: sampling must not leave a model that is being trained in eval mode."""
    was_training = isinstance(module, nn.Module) and module.training
    if isinstance(module, nn.Module):
        module.eval()
    try:
        yield module
    finally:
        if was_training:
            module.train()


def _per_sample(value, num: int) -> Optional[list]:
    """One value per sample from one value or a sequence of them (None stays None)."""
    if value is None:
        return None
    return [value] * num if isinstance(value, (str, int)) else list(value)


class VideoDiffusion(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.net = UNet3D(config.model)
        # not a registered submodule: it holds `net`, whose weights appear once in state_dict()
        object.__setattr__(self, "denoiser", Denoiser(self.net, config.diffusion.prediction))
        self.conditioning = build_conditioning(config.conditioning, config.model.num_classes)

    @property
    def classes(self) -> Optional[list]:
        return list(self.config.conditioning.classes) or None

    def condition(
        self,
        num: int,
        prompt: Union[str, Sequence[str], None] = None,
        class_label: Union[int, str, Sequence, None] = None,
        device="cpu",
    ) -> dict:
        """The network's condition for a request; for an unconditional model, none."""
        return self.conditioning.request(num, prompt, class_label, device=device)

    # ---- sampling -----------------------------------------------------------------------------
    def sampling(self, request: Optional[SampleRequest] = None, **changes) -> SamplerCall:
        """This model's sampler call for a request (defaults from its `sample` config)."""
        return resolve_sampling(self.config.sample, self.config.diffusion, request, **changes)

    def guided(self, guidance: float) -> Callable:
        """The denoiser, with classifier-free guidance at weight w for a conditional model."""
        if not guidance or not self.conditioning.guidable:
            return self.denoiser
        return classifier_free_guidance(self.denoiser, guidance, self.conditioning.null)

    @torch.no_grad()
    def sample(
        self,
        num: int = 1,
        request: Optional[SampleRequest] = None,
        *,
        frames: Optional[int] = None,
        size: Union[int, tuple, None] = None,
        batch_size: int = 16,
        progress=False,
        device=None,
        **changes,
    ) -> torch.Tensor:
        """Draw `num` videos (b, c, f, h, w) in [−1, 1] for a :class:`SampleRequest` (or its fields as
        keywords: `sampler`, `steps`, `grid`, `options`, `guidance`, `prompt`, `class_label`, `seed`, `clip`).
        Sample i uses seed `seed + i`, so it does not depend on the batch it was drawn in. `options` are
        the sampler's own (e.g. {"gamma": 0.3}; see `vidiff.diffusion.sampling.SAMPLERS`); every default comes from
        the model's `sample` config. `progress`: True for a bar over this call's steps, or a tqdm bar to
        advance (one bar over a whole command)."""
        request = SampleRequest.of(request, **changes)
        if num < 1:
            raise VidiffError(f"the number of videos to sample must be at least 1, got {num}")
        if frames is not None and frames < 1:
            raise VidiffError(f"frames={frames}: a video needs at least 1 frame (None: the model's own)")
        call = self.sampling(request)
        h, w = parse_size(size or self.config.data.size)
        shape = (self.config.model.in_channels, self.config.data.frames if frames is None else frames, h, w)
        device = device or next(self.parameters()).device
        prompts, labels = _per_sample(request.prompt, num), _per_sample(request.class_label, num)
        denoise = call.denoiser(self.denoiser, null=self.conditioning.null if self.conditioning.guidable else None)
        out = []
        own_bar = not hasattr(progress, "update")  # a command's bar (cli.common.command_bar) is only advanced
        bar = tqdm(total=num * call.steps, desc="sampling", disable=not progress, unit="step") if own_bar else progress
        with evaluating(self):
            for start in range(0, num, batch_size):
                n = min(batch_size, num - start)
                part = slice(start, start + n)
                cond = self.condition(
                    n,
                    None if prompts is None else prompts[part],
                    None if labels is None else labels[part],
                    device=device,
                )
                noise = Noise(range(request.seed + start, request.seed + start + n), device=device)
                z = initial_noise((n, *shape), noise, device=device)
                x = call(denoise, z, noise, cond=cond, callback=lambda i, s, x, n=n: bar.update(n))
                out.append(x.clamp(-1, 1).cpu())
        if own_bar:
            bar.close()
        return torch.cat(out)

    # ---- files --------------------------------------------------------------------------------
    def save_pretrained(self, path) -> Path:
        """Writes `model.safetensors` (the weights in use, e.g. EMA) and `config.json`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": "vidiff", "prediction": self.config.diffusion.prediction}
        save_tensors(path / "model.safetensors", self.net.state_dict(), meta)
        atomic_write(path / "config.json", self.config.to_json())
        return path

    @classmethod
    def from_pretrained(
        cls,
        path,
        use_ema: bool = True,
        device="cpu",
        *,
        ema=None,
        revision: Optional[str] = None,
        cache_dir=None,
        local_files_only: bool = False,
        token=None,
    ) -> "VideoDiffusion":
        """Load from a run folder (latest checkpoint), a checkpoint folder, a `save_pretrained` folder, or
        a model on the Hugging Face Hub: `"org/name"` (when no such local path exists) or
        `"hf://org/name[@revision]"`, fetched once into the Hugging Face cache (`cache_dir`, default
        HF_HUB_CACHE) at `revision`; `local_files_only` (or HF_HUB_OFFLINE=1) reads the cache only.
        Uses the EMA weights when the checkpoint has them and `use_ema`. `ema`: a post-hoc EMA of a run
        trained with train.ema=power instead (`vidiff ema`): its σ_rel (a number: the reconstruction at
        the checkpoint's step, in the run's ema/ folder) or its weights file."""
        if ema is not None and not use_ema:
            raise VidiffError(f"ema={ema!r} asks for a post-hoc EMA and use_ema=False for the raw weights: give one")

        def read(ck: Path) -> "VideoDiffusion":
            model = cls(load_config(ck))
            name = "ema.safetensors" if use_ema and (ck / "ema.safetensors").is_file() else "model.safetensors"
            load_weights(model.net, ck / name if ema is None else weights_file(ck, ema))
            return model

        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        return read_checkpoint(path, read, **hub).to(device).eval()

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        token=None,
        license: str = "apache-2.0",
        commit_message: str = "Upload vidiff model",
        folder=None,
        upload: bool = True,
    ) -> str:
        """Publish these weights (those in use, e.g. EMA), config.json and a model card on the Hugging
        Face Hub as `repo_id` in one commit; returns the commit's URL. `folder`: where the upload is
        built (default a temporary folder); `upload=False` builds it only and returns its path. A run
        folder publishes more (steps, samples, evaluation): `vidiff push RUN org/name`."""
        from vidiff.hub.publish import publish

        with tempfile.TemporaryDirectory() as tmp:
            return publish(
                self.save_pretrained(Path(tmp) / "weights"),
                repo_id,
                folder=folder,
                private=private,
                token=token,
                license=license,
                commit_message=commit_message,
                upload=upload,
            )
