"""`vidiff presets`: the named configurations, with parameter counts."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("presets", help="list the named configurations")
    p.set_defaults(func=run)


def run(args) -> None:
    from dataclasses import replace

    import torch

    from ..presets import DESCRIPTIONS, PRESETS
    from ..text import text_encoder_dim
    from ..unet import UNet3D
    print(f"{'preset':22s} {'params':>9s}  {'input':>12s}  description")
    for name, cfg in PRESETS.items():
        model = cfg.model
        if cfg.conditioning.kind == "text" and not model.text_dim:  # counted with the configured encoder's tokens
            model = replace(model, text_dim=text_encoder_dim(cfg.conditioning.text_encoder or None))
        with torch.device("meta"):
            n = sum(p.numel() for p in UNet3D(model).parameters())
        shape = f"{cfg.data.frames}x{cfg.data.size}x{cfg.data.size}"
        print(f"{name:22s} {n / 1e6:8.1f}M  {shape:>12s}  {DESCRIPTIONS.get(name, '')}")
