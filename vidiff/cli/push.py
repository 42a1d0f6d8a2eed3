"""`vidiff push`: publish a trained model on the Hugging Face Hub (EMA weights, config.json, a model card)."""

from __future__ import annotations

from pathlib import Path

from vidiff.cli.common import one_process


def register(sub) -> None:
    p = sub.add_parser("push", help="publish a run's model on the Hugging Face Hub, with a model card")
    p.add_argument("run", help="run folder (its latest checkpoint), checkpoint folder or save_pretrained folder")
    p.add_argument("repo_id", metavar="org/name", help="the Hub model repository (created if it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--dry-run", action="store_true", help="build the folder that would be uploaded, upload nothing")
    p.add_argument(
        "--folder", help="build the upload here and keep it (default: a temporary folder; with --dry-run: RUN/hub)"
    )
    p.add_argument(
        "--eval",
        dest="eval_report",
        help="a `vidiff eval --out` report for the card (default: RUN/eval.json when there is one)",
    )
    p.add_argument(
        "--license", default="apache-2.0", help="the weights' license, a Hub license id (default apache-2.0)"
    )
    p.add_argument("--message", default="Upload vidiff model", help="commit message")
    p.add_argument("--token", help="Hugging Face token (default: the logged-in one, or HF_TOKEN)")
    p.set_defaults(func=run)


def run(args) -> None:
    one_process("push")
    from vidiff.hub.publish import publish
    from vidiff.io.files import writable

    folder = args.folder or (str(Path(args.run) / "hub") if args.dry_run else None)
    if folder is not None:
        writable(folder, "--folder")
    result = publish(
        args.run,
        args.repo_id,
        folder=folder,
        private=args.private,
        token=args.token,
        license=args.license,
        eval_report=args.eval_report,
        commit_message=args.message,
        upload=not args.dry_run,
    )
    if args.dry_run:
        files = ", ".join(sorted(p.name for p in Path(result).iterdir()))
        print(
            f"built the upload of {args.repo_id} in {result} ({files}); nothing was uploaded. Upload it with "
            f"`vidiff push {args.run} {args.repo_id}`"
        )
    else:
        print(
            f"published {args.run} as https://huggingface.co/{args.repo_id} ({result}); load it with "
            f"`vidiff sample --checkpoint hf://{args.repo_id} --out samples`"
        )
