"""Named configurations: the paper's Appendix A models and small CPU presets.

Appendix A (conditioning embedding 1024 wide, attention at 8/16/32 resolution, i.e. the levels
below the top one of a 64×64 model).
"""

from __future__ import annotations

from dataclasses import replace

from vidiff.conditioning import ConditioningConfig
from vidiff.config import Config, ConfigError, DataConfig, DiffusionConfig, SampleConfig, TrainConfig
from vidiff.nn.unet import UNetConfig

_EPS = DiffusionConfig(prediction="epsilon", loss_weighting="epsilon")
_V = DiffusionConfig(prediction="v_prediction", loss_weighting="v")
_TEXT = ConditioningConfig(kind="text")

PRESETS: dict[str, Config] = {
    # Small models that train on 2 CPU cores. The log-SNR shift of −2 (more training and sampling at
    # high noise, where the clip's shared colour and path are decided) and PC sampling make the
    # 10-minute model's clips keep their colour more often (experiments/demo_quality.py).
    "cpu-demo": Config(
        model=UNetConfig(
            base_channels=32,
            channel_mults=(1, 2, 4),
            num_res_blocks=1,
            attention_levels=(0, 1, 2),
            head_dim=32,
            emb_dim=128,
            cond_mlp_layers=2,
            recompute_norms=False,
        ),
        diffusion=replace(_V, logsnr_shift=-2.0),
        data=DataConfig(frames=8, size=16),
        train=TrainConfig(
            batch_size=4,
            steps=100_000,
            max_minutes=10.0,
            lr=1e-3,
            warmup_steps=100,
            ema_decay=0.995,
            save_every=1000,
            num_samples=8,
        ),
        # clips that keep one colour (experiments/demo_quality.py, 64 samples of a 10-minute `make demo`
        # model): 70 / 89 / 94% with 1 / 3 / 5 corrector steps; the correction that counts is at low
        # noise (5 steps at log-SNR <= -2 only: 66%). 10 steps at log-SNR >= -2 (1,200 evaluations):
        # 100% / 100% on two seed sets of a fresh `make demo` model; 98% / 100% on one that kept
        # 91% / 98% with 5 (README).
        sample=SampleConfig(
            sampler="pc", steps=200, options={"gamma": 0.1, "corrector_steps": 10, "corrector_min_logsnr": -2.0}
        ),
    ),
    "cpu-tiny": Config(
        model=UNetConfig(
            base_channels=16,
            channel_mults=(1, 2),
            num_res_blocks=1,
            attention_levels=(1,),
            head_dim=16,
            emb_dim=32,
            cond_mlp_layers=1,
        ),
        diffusion=_V,
        data=DataConfig(frames=4, size=16),
        train=TrainConfig(
            batch_size=4, steps=20, lr=1e-3, warmup_steps=5, ema_decay=0.9, save_every=10, log_every=5, num_samples=2
        ),
        sample=SampleConfig(sampler="ddim", steps=8),
    ),
    # The paper's models (Appendix A).
    "ucf101-16x64x64": Config(
        model=UNetConfig(
            base_channels=256,
            channel_mults=(1, 2, 4, 8),
            num_res_blocks=2,
            attention_levels=(1, 2, 3),
            dropout=0.1,
            emb_dim=1024,
            cond_mlp_layers=4,
        ),
        diffusion=_EPS,
        data=DataConfig(source="", frames=16, size=64),
        train=TrainConfig(batch_size=128, steps=60_000, lr=3e-4, ema_decay=0.9999, warmup_steps=1000),
        sample=SampleConfig(sampler="ancestral", steps=256, options={"gamma": 0.1}),
    ),
    "bair-64x64": Config(
        model=UNetConfig(
            base_channels=128,
            channel_mults=(1, 2, 3, 4),
            num_res_blocks=3,
            attention_levels=(1, 2, 3),
            dropout=0.1,
            emb_dim=1024,
            cond_mlp_layers=2,
        ),
        diffusion=_V,
        data=DataConfig(source="", frames=16, size=64, flip=True),
        train=TrainConfig(
            batch_size=128,
            steps=660_000,
            lr=2e-4,
            weight_decay=0.01,
            adam_beta2=0.999,
            ema_decay=0.999,
            warmup_steps=1000,
        ),
        sample=SampleConfig(
            sampler="pc", steps=256, options={"gamma": 0.0, "corrector_steps": 1}, reconstruction_weight=50.0
        ),
    ),
    "kinetics600-64x64": Config(
        model=UNetConfig(
            base_channels=256,
            channel_mults=(1, 2, 4, 8),
            num_res_blocks=2,
            attention_levels=(1, 2, 3),
            dropout=0.1,
            emb_dim=1024,
            cond_mlp_layers=2,
        ),
        diffusion=_V,
        data=DataConfig(source="", frames=16, size=64),
        train=TrainConfig(batch_size=256, steps=220_000, lr=2e-4, ema_decay=0.9999, warmup_steps=1000),
        sample=SampleConfig(
            sampler="pc", steps=128, options={"gamma": 0.0, "corrector_steps": 1}, reconstruction_weight=9.0
        ),
    ),
    "text-small-16x64x64": Config(
        model=UNetConfig(
            base_channels=128,
            channel_mults=(1, 2, 4, 8),
            num_res_blocks=2,
            attention_levels=(1, 2, 3),
            dropout=0.0,
            emb_dim=1024,
            cond_mlp_layers=2,
        ),
        diffusion=_EPS,
        data=DataConfig(source="", frames=16, size=64, image_frames=8),
        conditioning=_TEXT,
        train=TrainConfig(batch_size=128, steps=200_000, lr=3e-4, ema_decay=0.9999, warmup_steps=1000),
        sample=SampleConfig(sampler="ancestral", steps=256, options={"gamma": 0.3}, guidance=2.0),
    ),
    "text-9x128x128": Config(
        model=UNetConfig(
            base_channels=128,
            channel_mults=(1, 2, 4, 8, 16),
            num_res_blocks=2,
            attention_levels=(2, 3, 4),
            head_dim=128,
            dropout=0.1,
            emb_dim=1024,
            cond_mlp_layers=2,
        ),
        diffusion=_EPS,
        data=DataConfig(source="", frames=9, size=128, image_frames=7),
        conditioning=_TEXT,
        train=TrainConfig(batch_size=128, steps=800_000, lr=2e-4, ema_decay=0.9999, warmup_steps=1000),
        sample=SampleConfig(sampler="ancestral", steps=256, options={"gamma": 0.3}, guidance=2.0),
    ),
}
_small = PRESETS["text-small-16x64x64"]
PRESETS["text-large-16x64x64"] = replace(
    _small, model=replace(_small.model, base_channels=256, dropout=0.1), train=replace(_small.train, steps=700_000)
)
PRESETS["cpu-demo-class"] = replace(PRESETS["cpu-demo"], conditioning=ConditioningConfig(kind="class"))
# Beyond the paper: cross-attention to the caption's tokens, and each frame's absolute time times the
# whitened caption (frame_condition_product). With the product, samples move in the prompted direction,
# sign included, after 30 CPU minutes (100% at w = 0 and 1; without it about half: experiments/text_guidance.py).
PRESETS["cpu-demo-text"] = replace(
    PRESETS["cpu-demo"],
    conditioning=_TEXT,
    model=replace(
        PRESETS["cpu-demo"].model, text_cross_attention=True, frame_index_embedding=True, frame_condition_product=True
    ),
)

DESCRIPTIONS = {
    "cpu-demo": "small unconditional model for 2 CPU cores (make demo), 8×16×16",
    "cpu-demo-class": "cpu-demo, class-conditional (moving shapes: colour × shape)",
    "cpu-demo-text": "cpu-demo, text-conditional (MiniLM-L6 captions, attention pooling + cross-attention, "
    "frame time × whitened caption)",
    "cpu-tiny": "tiny model for tests and smoke runs, 4×16×16",
    "ucf101-16x64x64": "paper: UCF-101 unconditional, 256×(1,2,4,8), ε, 256 ancestral steps γ=0.1",
    "bair-64x64": "paper: BAIR video prediction 1→15, 128×(1,2,3,4)×3 blocks, v, PC sampler, w_r=50",
    "kinetics600-64x64": "paper: Kinetics-600 prediction 5→11, 256×(1,2,4,8), v, PC sampler, w_r=9",
    "text-small-16x64x64": "paper: small text-to-video model, 128 base, 8 image frames",
    "text-large-16x64x64": "paper: large text-to-video model, 256 base, 8 image frames",
    "text-9x128x128": "paper: 9×128×128 text model, 128×(1,2,4,8,16), head dim 128, 7 image frames",
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(
            f"unknown preset {name!r}; available presets: {', '.join(sorted(PRESETS))} "
            f"(run `vidiff presets` to list them)"
        )
    return PRESETS[name]
