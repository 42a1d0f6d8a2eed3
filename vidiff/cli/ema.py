"""`vidiff ema`: the post-hoc EMA of a run trained with train.ema=power (Karras et al. 2024, EDM2):
the EMA of any length σ_rel, reconstructed by least squares from the run's snapshots of its tracked
profiles, written as a weights file that `vidiff sample --ema` and `from_pretrained(ema=…)` load."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("ema", help="reconstruct a post-hoc EMA of any length from a train.ema=power run")
    p.add_argument("run", help="the run folder (its ema_snapshots/ folder)")
    p.add_argument(
        "--sigma-rel",
        type=float,
        required=True,
        help="the EMA length: its standard deviation relative to the step (EDM2's σ_rel, e.g. 0.05–0.2)",
    )
    p.add_argument("--step", type=int, help="reconstruct at this snapshot's step (default: the last snapshot)")
    p.add_argument(
        "--out",
        help="the weights file (default RUN/ema/sigma_rel_X_step_N.safetensors, which "
        "--ema X of `vidiff sample` on the checkpoint of step N reads)",
    )
    p.set_defaults(func=run)


def run(args) -> None:
    from vidiff.cli.common import one_process
    from vidiff.nn.ema import write_reconstruction

    one_process("ema")
    path = write_reconstruction(args.run, args.sigma_rel, args.step, args.out)
    print(
        f"wrote the post-hoc EMA of σ_rel {args.sigma_rel} to {path}; sample it with "
        f"`vidiff sample --checkpoint {args.run} --ema {args.sigma_rel} --out DIR`"
    )
