"""What the commands share: configuration and sampling arguments, loading a model, reading a clip,
writing videos. Every command module imports this one and no other command module."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import torch

from vidiff import spread
from vidiff.conditioning import KINDS
from vidiff.config import parse_bool
from vidiff.diffusion.sampling import GRIDS, SAMPLERS
from vidiff.request import SampleRequest

# SampleRequest's fields that have a flag: the CLI defines them, the studio writes them
REQUEST_FIELDS = {f.name: f for f in fields(SampleRequest) if f.metadata.get("flag")}


# ---- configuration -----------------------------------------------------------------------------
def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        help="named configuration (see `vidiff presets`; default cpu-demo, or the run's own "
        "configuration with --resume)",
    )
    p.add_argument("--config", help="a config.json to start from instead of a preset")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config field, e.g. --set model.base_channels=32 (repeatable)",
    )
    p.add_argument(
        "--data",
        help="builtin:moving-shapes, a folder of videos, or shards made by `vidiff prepare` "
        "(their folder, or a pattern/URL of .tar shards) (sets data.source)",
    )
    p.add_argument("--steps", type=int, help="sets train.steps")
    p.add_argument("--minutes", type=float, help="stop after this many minutes (sets train.max_minutes)")
    p.add_argument("--batch-size", type=int, help="global batch size (sets train.batch_size)")
    p.add_argument("--image-frames", type=int, help="joint image-video training: images per video (data.image_frames)")
    p.add_argument("--conditioning", choices=KINDS, help="sets conditioning.kind")
    p.add_argument("--text-encoder", help="local Hugging Face encoder folder (sets conditioning.text_encoder)")
    p.add_argument(
        "--fps",
        type=float,
        help="read clips at this frame rate by presentation time (sets data.fps; default: each file's own rate)",
    )
    p.add_argument("--skip-bad-files", action="store_true", help="log and skip unreadable videos")


_FLAGS = [
    ("data", "data.source"),
    ("steps", "train.steps"),
    ("minutes", "train.max_minutes"),
    ("batch_size", "train.batch_size"),
    ("image_frames", "data.image_frames"),
    ("conditioning", "conditioning.kind"),
    ("text_encoder", "conditioning.text_encoder"),
    ("fps", "data.fps"),
]


def overrides_from_args(args) -> list:
    """The `section.key=value` assignments given by --set and by the shortcut flags."""
    sets = list(args.set)
    for flag, key in _FLAGS:
        if getattr(args, flag, None) is not None:
            sets.append(f"{key}={getattr(args, flag)}")
    if getattr(args, "skip_bad_files", False):
        sets.append("data.skip_bad_files=true")
    trust_command_line_sources(sets)
    return sets


def trust_command_line_sources(sets) -> None:
    """A `pipe:` data source given on the command line (--data, --set data.source=…) is the user's own
    command and may run; one read from a config file may not (vidiff.data.shards.check_command)."""
    from vidiff.data.shards import trust_command

    for assignment in sets:
        key, _, value = assignment.partition("=")
        if key.strip() == "data.source":
            trust_command(value)


def config_from_args(args, base=None):
    """A preset (or --config file, or `base`) with the overrides applied."""
    from vidiff.presets import get_preset

    if args.config:
        base = _config_file(args.config)
    elif args.preset or base is None:
        base = get_preset(args.preset or "cpu-demo")
    return base.override(overrides_from_args(args))


def _config_file(path: str):
    """The Config of a --config file, or one line naming the file and what is wrong with it."""
    from vidiff.config import Config, ConfigError

    if not Path(path).is_file():
        raise ConfigError(f"--config {path}: not found; give a config.json (e.g. a run's)")
    try:
        return Config.from_dict(json.loads(Path(path).read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"--config {path}: not a readable JSON file ({e}); give a config.json (e.g. a run's)"
        ) from None
    except ConfigError as e:
        raise ConfigError(f"--config {path}: {e}") from None


# ---- sampling ----------------------------------------------------------------------------------
def _sampler_options() -> dict:
    """Every option of every registered sampler: name → (default, the samplers that take it)."""
    options: dict = {}
    for spec in SAMPLERS.values():
        for name, default in spec.options.items():
            options.setdefault(name, (default, []))[1].append(spec.name)
    return options


def _request_argument(p: argparse.ArgumentParser, name: str, *aliases: str, **kwargs) -> None:
    """The flag of SampleRequest's field `name` (its metadata names the flag), parsed into `args.<name>`."""
    p.add_argument(REQUEST_FIELDS[name].metadata["flag"], *aliases, dest=name, **kwargs)


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint, --num, the request's flags (--sampler, --steps, --grid, one flag per sampler
    option, --seed, conditioning), --batch-size and the output."""
    p.add_argument(
        "--checkpoint",
        required=True,
        help="run folder, checkpoint folder, save_pretrained folder, or a "
        "Hugging Face Hub model: hf://org/name[@revision] (or org/name when no such local path exists)",
    )
    p.add_argument(
        "--num-videos",
        "--num",
        dest="num",
        type=int,
        default=4,
        help="number of videos (--num is not accepted under torchrun: it abbreviates its --numa-binding)",
    )
    samplers = "; ".join(f"{name}: {spec.description}" for name, spec in sorted(SAMPLERS.items()))
    _request_argument(p, "sampler", choices=sorted(SAMPLERS), help=f"default: the model's sample.sampler. {samplers}")
    _request_argument(p, "steps", type=int, help="sampling steps (default: the model's sample.steps)")
    _request_argument(
        p,
        "grid",
        choices=GRIDS,
        help="the λ grid every sampler walks: uniform in t (the paper's) or "
        "in lambda (default: the model's sample.grid)",
    )
    for name, (default, takers) in _sampler_options().items():
        kind = parse_bool if isinstance(default, bool) else type(default)
        p.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"opt_{name}",
            type=kind,
            metavar=kind.__name__.upper(),
            help=f"option of the {', '.join(takers)} sampler (default: the model's sample.options, else {default})",
        )
    _request_argument(p, "seed", type=int, default=0, help="video i uses seed + i")
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="videos sampled at once; under torchrun, each process takes whole batches",
    )
    _request_argument(p, "prompt", help="text prompt (text-conditional models)")
    _request_argument(p, "class_label", help="class name or index (class-conditional models)")
    _request_argument(p, "guidance", type=float, help="classifier-free guidance weight w")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument(
        "--ema",
        type=_ema_choice,
        metavar="SIGMA_REL|FILE",
        help="a post-hoc EMA instead (train.ema=power runs): the σ_rel of one `vidiff ema` reconstructed, "
        "or its weights file",
    )
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--out", required=True, help="output folder")


def _ema_choice(text: str):
    """--ema: a number is a σ_rel, anything else a file."""
    try:
        return float(text)
    except ValueError:
        return text


def sampling_request(args) -> SampleRequest:
    """The SampleRequest of the parsed arguments (unset fields: the model's config)."""
    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    given = {name: getattr(args, name) for name in REQUEST_FIELDS if getattr(args, name, None) is not None}
    return SampleRequest(**given, options=options)


def load_model(args):
    """The model of --checkpoint, once --out and --fps are known to be usable (a bad output fails before any work)."""
    from vidiff.errors import VidiffError
    from vidiff.io.files import writable
    from vidiff.pipeline import VideoDiffusion

    if args.fps < 1:
        raise VidiffError(f"--fps {args.fps}: the frame rate of the written videos must be at least 1")
    frames = getattr(args, "frames", None)
    if frames is not None and frames < 1:  # 0 is not "the default": leave --frames out for that
        raise VidiffError(f"--frames {frames}: a video needs at least 1 frame; leave --frames out for the model's own")
    if args.no_ema and getattr(args, "ema", None) is not None:
        raise VidiffError(f"--ema {args.ema} asks for a post-hoc EMA and --no-ema for the raw weights: give one")
    writable(args.out)
    return VideoDiffusion.from_pretrained(
        args.checkpoint, use_ema=not args.no_ema, ema=getattr(args, "ema", None), device=spread.local_device()
    )


def one_process(command: str) -> None:
    """Commands that write one thing (shards, an upload, a server) refuse to run N times under torchrun."""
    from vidiff.errors import VidiffError

    if spread.world() > 1:
        raise VidiffError(f"vidiff {command} runs in one process: start it without torchrun")


def in_batches(args, make) -> torch.Tensor:
    """`make(seed, n)` → n videos, called for each batch of `args.batch_size` of the `args.num`
    videos with the seed of its first video (video i uses seed + i), the batches spread over
    torchrun's processes; the first process gets all videos, in order, equal to one process's (it
    writes them: `save_results`), the others an empty tensor."""
    from vidiff.errors import VidiffError

    if args.num < 1 or args.batch_size < 1:
        raise VidiffError(f"--num-videos ({args.num}) and --batch-size ({args.batch_size}) must be at least 1")
    parts = spread.map_ordered(
        spread.chunks(args.num, args.batch_size),
        lambda chunk: make(args.seed + chunk[0], chunk[1]).cpu(),
        main_only=True,
    )
    return torch.cat(parts) if parts else torch.empty(0)


def command_bar(args, per_video: int, desc: str = "sampling", unit: str = "step"):
    """One progress bar over a whole command: the videos of every batch this process draws (in_batches),
    `per_video` steps each; shown by the first process only under torchrun, over its share."""
    from tqdm.auto import tqdm

    batches = spread.chunks(args.num, args.batch_size)
    mine = sum(n for i, (_, n) in enumerate(batches) if i % spread.world() == spread.rank())  # as map_ordered
    return tqdm(total=mine * per_video, desc=desc, unit=unit, disable=not spread.is_main())


# ---- files -------------------------------------------------------------------------------------
def write_videos(videos: torch.Tensor, out: Path, fps: int = 8, prefix: str = "sample") -> list:
    """Each video as MP4 and GIF, a grid GIF of all (enlarged with nearest neighbours to at least
    256 px wide, so that small videos can be seen), every frame of every video in one PNG
    (`frames.png`, a row per video), and the raw tensor (safetensors)."""
    from vidiff.io.files import save_tensors
    from vidiff.io.video import make_grid, write_filmstrip, write_gif, write_mp4

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, v in enumerate(videos):
        write_mp4(out / f"{prefix}_{i:03d}.mp4", v, fps=fps)
        write_gif(out / f"{prefix}_{i:03d}.gif", v, fps=fps)
        paths.append(out / f"{prefix}_{i:03d}.mp4")
    grid = make_grid(videos, nrow=min(len(videos), 4))  # c f H W
    scale = max(1, 256 // grid.shape[-1])
    grid = torch.nn.functional.interpolate(grid[None], scale_factor=(1, scale, scale), mode="nearest")[0]
    write_gif(out / "grid.gif", grid, fps=fps)
    write_filmstrip(out / "frames.png", videos)
    save_tensors(out / f"{prefix}s.safetensors", {"videos": videos}, {"layout": "b c f h w", "range": "[-1, 1]"})
    return paths


def save_results(videos: torch.Tensor, args, what: str = "") -> None:
    """A command's videos (clamped to [−1, 1]) written to --out, and a line saying what was written
    (by the first process only, under torchrun)."""
    if not spread.is_main():
        return
    videos = videos.clamp(-1, 1).cpu()
    write_videos(videos, Path(args.out), fps=args.fps)
    print(
        f"wrote {len(videos)} {what + ' ' if what else ''}videos ({tuple(videos.shape[1:])}) to {args.out}: "
        f"sample_*.mp4, sample_*.gif, grid.gif, frames.png, samples.safetensors"
    )


def read_clip(path, size, max_frames=None, progress: bool = False) -> torch.Tensor:
    """A video file → float (1 c f h w) in [−1, 1], resized to cover `size` and centre-cropped
    (:func:`vidiff.io.video.read_clip`)."""
    from vidiff.io.video import read_clip as read

    return read(path, size, max_frames, progress=progress)


# ---- conditional tasks -------------------------------------------------------------------------
def add_task_arguments(p: argparse.ArgumentParser, method: bool = True) -> None:
    """The sampling arguments plus the conditioning method and w_r of predict / extend / interpolate /
    upsample."""
    add_sampling_arguments(p)
    if method:
        from vidiff.tasks import METHODS

        _request_argument(
            p,
            "method",
            choices=METHODS,
            default="reconstruction",
            help="conditioning method (paper §3.1); default reconstruction guidance",
        )
    _request_argument(
        p,
        "reconstruction_weight",
        "--guidance-weight",
        type=float,
        help="reconstruction guidance weight w_r (default: the model's sample.reconstruction_weight; "
        "the paper used 50 for BAIR, 9 for Kinetics)",
    )


def repeat(video: torch.Tensor, num: int) -> torch.Tensor:
    """One clip (1 c f h w) as `num` copies: one context, `num` samples."""
    from vidiff.errors import ConditioningError

    if num < 1:
        raise ConditioningError(f"--num must be at least 1, got {num}")
    return video.expand(num, *video.shape[1:]).contiguous()
