"""`vidiff presets`: the named configurations, with parameter counts."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("presets", help="list the named configurations")
    p.set_defaults(func=run)


def run(args) -> None:
    from dataclasses import replace

    import torch

    from vidiff.conditioning import build_conditioning
    from vidiff.nn.unet import UNet3D
    from vidiff.presets import DESCRIPTIONS, PRESETS

    print(f"{'preset':22s} {'params':>9s}  {'input':>12s}  description")
    for name, cfg in PRESETS.items():
        known = build_conditioning(cfg.conditioning).network_fields()  # e.g. the text encoder's width
        model = replace(cfg.model, **{k: v for k, v in known.items() if not getattr(cfg.model, k)})
        with torch.device("meta"):
            n = sum(p.numel() for p in UNet3D(model).parameters())
        shape = f"{cfg.data.frames}x{cfg.data.size}x{cfg.data.size}"
        print(f"{name:22s} {n / 1e6:8.1f}M  {shape:>12s}  {DESCRIPTIONS.get(name, '')}")
