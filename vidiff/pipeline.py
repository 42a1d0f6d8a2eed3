"""The top-level model: a UNet3D, its parameterisation and configuration, conditioning, sampling,
`save_pretrained` / `from_pretrained`.

    from vidiff import VideoDiffusion
    model = VideoDiffusion.from_pretrained("runs/demo")
    videos = model.sample(4, seed=0)             # (4, 3, f, h, w) in [−1, 1]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, atomic_write_text, load_config, load_tensors, resolve_checkpoint
from .config import Config
from .diffusion import Denoiser
from .guidance import classifier_free_guidance
from .sampling import Noise, get_sampler, initial_noise
from .unet import UNet3D


class VideoDiffusion(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.net = UNet3D(config.model)
        self.denoiser = Denoiser(self.net, config.diffusion.prediction)
        self._text_encoder = None
        self.classes: Optional[list] = None

    # ---- conditioning -------------------------------------------------------------------------
    @property
    def conditioning(self) -> str:
        return self.config.train.conditioning

    def text_encoder(self):
        if self._text_encoder is None:
            from .text import TextEncoder
            tr = self.config.train
            self._text_encoder = TextEncoder(tr.text_encoder or None, max_length=tr.text_max_length)
        return self._text_encoder

    def condition(self, num: int, prompt: Union[str, Sequence[str], None] = None,
                  class_label: Union[int, Sequence[int], None] = None, device="cpu") -> dict:
        """Conditioning keywords for the network; for an unconditional model, none."""
        if self.conditioning == "class":
            if class_label is None:
                raise ValueError("this model is class-conditional: pass class_label (--class N); -1 for unconditional")
            labels = [class_label] * num if isinstance(class_label, int) else list(class_label)
            n = self.config.model.num_classes
            bad = [c for c in labels if not -1 <= c < n]
            if bad:
                raise ValueError(f"class label(s) {bad} out of range: this model has {n} classes (0..{n - 1})")
            return {"class_labels": torch.tensor(labels, device=device)}
        if self.conditioning == "text":
            if prompt is None:
                raise ValueError("this model is text-conditional: pass prompt (--prompt \"...\")")
            prompts = [prompt] * num if isinstance(prompt, str) else list(prompt)
            tokens, mask = self.text_encoder().encode(prompts)
            return {"text_tokens": tokens.to(device), "text_mask": mask.to(device)}
        if prompt is not None or class_label is not None:
            raise ValueError("this model is unconditional: it takes no prompt or class label")
        return {}

    # ---- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num: int = 1, *, frames: Optional[int] = None, size: Union[int, tuple, None] = None,
               sampler: Optional[str] = None, steps: Optional[int] = None, gamma: Optional[float] = None,
               guidance: Optional[float] = None, prompt=None, class_label=None, seed: int = 0,
               batch_size: int = 16, clip: Optional[bool] = None, progress: bool = False, device=None) -> torch.Tensor:
        """Draw `num` videos (b, c, f, h, w) in [−1, 1]. Sample i uses seed `seed + i`, so it does not
        depend on the batch it was drawn in. Defaults come from the model's `sample` config."""
        sc = self.config.sample
        sampler_name = sampler or sc.sampler
        steps = steps or sc.steps
        gamma = sc.gamma if gamma is None else gamma
        guidance = sc.guidance if guidance is None else guidance
        clip = sc.clip if clip is None else clip
        frames = frames or self.config.data.frames
        size = size or self.config.data.size
        h, w = (size, size) if isinstance(size, int) else size
        device = device or next(self.parameters()).device
        sample_fn = get_sampler(sampler_name)
        kwargs = dict(**self.config.diffusion.schedule(),
                      clip=1.0 if clip else None)
        if sampler_name != "ddim":
            kwargs["gamma"] = gamma
        if sampler_name == "pc":
            kwargs.update(corrector_steps=sc.corrector_steps, delta=sc.delta)
        was_training = self.training
        self.eval()
        out = []
        bar = tqdm(total=num * steps, desc="sampling", disable=not progress, unit="step")
        for start in range(0, num, batch_size):
            n = min(batch_size, num - start)
            cond = self.condition(n, prompt if isinstance(prompt, (str, type(None))) else prompt[start:start + n],
                                  class_label if isinstance(class_label, (int, type(None)))
                                  else class_label[start:start + n], device=device)
            denoise = self.denoiser
            if guidance and cond:
                denoise = classifier_free_guidance(self.denoiser, guidance)
            noise = Noise(range(seed + start, seed + start + n), device=device)
            z = initial_noise((n, self.config.model.in_channels, frames, h, w), noise, device=device)
            x = sample_fn(denoise, z, steps, noise=noise, callback=lambda i, s, x, n=n: bar.update(n), **kwargs, **cond)
            out.append(x.clamp(-1, 1).cpu())
        bar.close()
        self.train(was_training)
        return torch.cat(out)

    # ---- files --------------------------------------------------------------------------------
    def save_pretrained(self, path) -> Path:
        """Writes `model.safetensors` (the weights in use, e.g. EMA) and `config.json`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": "vidiff", "prediction": self.config.diffusion.prediction}
        tmp = path / ".model.safetensors.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}, tmp, metadata=meta)
        tmp.replace(path / "model.safetensors")
        extra = {"classes": self.classes} if self.classes else {}
        atomic_write_text(path / "config.json", json.dumps({**self.config.to_dict(), **extra}, indent=2))
        return path

    @classmethod
    def from_pretrained(cls, path, use_ema: bool = True, device="cpu") -> "VideoDiffusion":
        """Load from a run folder (latest checkpoint), a checkpoint folder, or a `save_pretrained` folder.
        Uses the EMA weights when the checkpoint has them and `use_ema`."""
        ck = resolve_checkpoint(path)
        config, classes = load_config(ck)
        model = cls(config)
        model.classes = classes
        weights = ck / ("ema.safetensors" if use_ema and (ck / "ema.safetensors").is_file() else "model.safetensors")
        state = load_tensors(weights)
        missing, unexpected = model.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{str(weights)!r} does not fit its config.json: missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}")
        return model.to(device).eval()
