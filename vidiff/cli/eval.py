"""`vidiff eval`: FVD / KVD / FID / IS / KID between real and generated videos."""
from __future__ import annotations


def register(sub) -> None:
    from ..evaluate import add_eval_arguments
    p = sub.add_parser("eval", help="FVD / KVD / FID / IS / KID between real and generated videos")
    add_eval_arguments(p)
    p.set_defaults(func=run)


def builtin_source(args):
    """`builtin:moving-shapes` as an evaluation source: `num` clips of the eval's frame count, 64×64."""
    def resolve(spec: str):
        import torch

        from ..data import build_dataset
        frames = getattr(args, "num_frames", 16) or 16
        ds = build_dataset(spec, frames=frames, size=64)  # DataError for unknown names and missing folders

        def real_source(num: int) -> torch.Tensor:
            return torch.stack([ds[i]["video"] for i in range(num)])
        real_source.cache_key = f"{spec}:frames={frames}:size=64"
        return real_source
    return resolve


def run(args) -> None:
    from ..evaluate import run_eval
    run_eval(args, resolve_source=builtin_source(args))
