"""The studio's requests, as methods of :class:`Studio` (plain dicts in, dicts out, StudioError for a
refused request), and the HTTP server that routes the page's calls to them."""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Optional

from vidiff.diffusion.sampling import SAMPLERS
from vidiff.errors import VidiffError
from vidiff.io.files import VIDEO_EXTENSIONS, atomic_write, find_videos
from vidiff.metrics.evaluate import METRICS
from vidiff.studio import media
from vidiff.studio.commands import TASKS, eval_argv, sample_argv, shell_line, task_argv
from vidiff.studio.jobs import JobQueue
from vidiff.studio.paths import StudioError, is_inside, resolve_inside
from vidiff.studio.plots import line_plot_svg
from vidiff.studio.runs import list_runs, read_config, run_details, run_folder, run_summary
from vidiff.tasks import METHODS

log = logging.getLogger("vidiff.studio")
MAX_CLIPS = 200  # real clips of a run's data offered in the condition tab


def display_path(path: Path) -> str:
    """A path as the user would type it from where the studio runs: relative when inside, else absolute."""
    rel = os.path.relpath(Path(path).resolve())
    return rel if not rel.startswith("..") else str(Path(path).resolve())


class Studio:
    """The studio over one runs folder; its own files go to `outputs` (default RUNS/.studio).

    `any_folder`: whether Evaluate may read any folder or file of this machine (its real clips, its
    Inception weights). `serve` allows it on a loopback address only; served to the network, Evaluate
    reads built-in data, the runs' own data sources and what lies inside the runs folder."""

    def __init__(
        self,
        runs,
        outputs=None,
        workers: int = 1,
        max_upload_bytes: int = media.MAX_UPLOAD_BYTES,
        any_folder: bool = True,
    ):
        self.any_folder = any_folder
        self.runs = Path(runs).resolve()
        self.outputs = Path(outputs or self.runs / ".studio").resolve()
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes = max_upload_bytes
        self.queue = JobQueue(workers)
        self.skipped: set = set()  # folders already warned about, so the log says it once

    def out_url(self, path: Path) -> str:
        return "/files/out/" + path.resolve().relative_to(self.outputs).as_posix()

    def _new_folder(self, kind: str) -> Path:
        return self.outputs / kind / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"

    # ---- reading ----------------------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "samplers": [{"name": n, "description": s.description} for n, s in sorted(SAMPLERS.items())],
            "methods": list(METHODS),
            "tasks": list(TASKS),
            "metrics": list(METRICS),
            "max_upload_bytes": self.max_upload_bytes,
            "max_upload_frames": media.MAX_UPLOAD_FRAMES,
            "video_extensions": list(VIDEO_EXTENSIONS),
            "runs_folder": display_path(self.runs),
        }

    def runs_list(self) -> list:
        """A row per run; a folder that cannot be shown (another tool's, damaged) gets a row that says
        why it is skipped, so that it does not hide the others."""
        rows = []
        for name in list_runs(self.runs):
            try:
                rows.append(run_summary(self.runs, name))
            except Exception as e:  # whatever one folder holds, the other runs are listed
                message = str(e) if isinstance(e, StudioError) else f"{name} cannot be read ({type(e).__name__}: {e})"
                rows.append({"name": name, "error": f"skipped: {message}", "skipped": True})
                if (name, message) not in self.skipped:
                    self.skipped.add((name, message))
                    log.warning("runs list: skipped %s: %s", name, message)
        return rows

    def run(self, name: str) -> dict:
        d = run_details(self.runs, name)
        d["plots"] = {
            "loss": line_plot_svg(d["curves"]["loss"], "training loss", "loss", log_y=True),
            "fvd": line_plot_svg(d["curves"]["fvd"], "FVD (EMA samples)", "fvd"),
        }
        return d

    def clips(self, name: str) -> list:
        """Real clips of the run's data to condition on: files of a folder source, or builtin clips."""
        source = run_details(self.runs, name)["data_source"]
        if source.startswith("builtin:"):
            return [f"{source}#{i}" for i in range(8)]
        if not source or not Path(source).is_dir():
            return []
        return [f.relative_to(source).as_posix() for f in find_videos(source, allow_empty=True)[:MAX_CLIPS]]

    def outputs_list(self) -> list:
        """Sample folders the studio wrote, newest first: the fake side of an evaluation."""
        from safetensors import safe_open

        out = []
        for f in (self.outputs / kind / "*" / "samples.safetensors" for kind in ("generate", "condition")):
            for path in self.outputs.glob(str(f.relative_to(self.outputs))):
                meta = path.parent / "request.json"
                request = json.loads(meta.read_text()) if meta.is_file() else {}
                with safe_open(str(path), "pt") as st:
                    shape = st.get_slice("videos").get_shape()  # b c f h w
                out.append(
                    {
                        "id": path.parent.relative_to(self.outputs).as_posix(),
                        "run": request.get("run"),
                        "videos": shape[0],
                        "frames": shape[2],
                        "time": path.stat().st_mtime,
                    }
                )
        return sorted(out, key=lambda o: -o["time"])

    # ---- jobs -------------------------------------------------------------------------------------
    def _checkpoint(self, req: dict) -> tuple:
        run = run_folder(self.runs, str(req.get("run") or ""))
        name = req.get("checkpoint") or "latest"
        if name != "latest":
            if name not in run_details(self.runs, str(req["run"]))["checkpoint_names"]:
                raise StudioError(f"checkpoint {name!r} is not one of the run's checkpoints")
            run = run / "checkpoints" / name
        return run, display_path(run)

    def _submit(self, kind: str, argv: list, out: Path, req: dict, finish) -> dict:
        command = shell_line(argv)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "request.json", json.dumps({**req, "command": command}, indent=2))
        job = self.queue.submit(kind, argv, command, out, finish)
        return self.queue.view(job.id)

    def generate(self, req: dict) -> dict:
        _, checkpoint = self._checkpoint(req)
        out = self._new_folder("generate")
        argv = sample_argv(checkpoint, display_path(out), req)

        def finish(job) -> dict:
            videos = media.load_samples(out)
            views = media.write_previews(out, videos)
            return {
                "videos": [
                    {
                        "view": self.out_url(out / v),
                        "mp4": self.out_url(out / f"sample_{i:03d}.mp4"),
                        "gif": self.out_url(out / f"sample_{i:03d}.gif"),
                    }
                    for i, v in enumerate(views)
                ],
                "frames_png": self.out_url(out / "frames.png"),
                "shape": list(videos.shape[1:]),
                "output": out.relative_to(self.outputs).as_posix(),
            }

        return self._submit("generate", argv, out, req, finish)

    def _clip(self, req: dict) -> Path:
        """The clip a task conditions on: an upload (by its id) or a real clip of the run's data."""
        if req.get("upload"):
            path = resolve_inside(self.outputs, str(req["upload"]))
            if path.parent != self.outputs / "uploads":
                raise StudioError("upload: not an uploaded clip")
            return path
        clip, run = str(req.get("clip") or ""), str(req.get("run") or "")
        source = run_details(self.runs, run)["data_source"]
        if not clip or clip not in self.clips(run):
            raise StudioError("choose a clip: upload one, or pick one of the run's data")
        if not source.startswith("builtin:"):  # a file of the folder, whatever its name holds (`a#b.mp4`)
            return Path(source) / clip
        return self._builtin_clip(run, source, int(clip.rsplit("#", 1)[1]))

    def _builtin_clip(self, run: str, source: str, index: int) -> Path:
        from vidiff.config import Config
        from vidiff.data import dataset_from_config
        from vidiff.io.video import write_mp4

        cfg = Config.from_dict(run_details(self.runs, run)["config"])  # the clips the run trained on
        d = cfg.data
        name = f"{source.split(':')[1]}-{d.frames}x{d.size}-seed{cfg.train.seed}-{index}.mp4"
        path = self.outputs / "clips" / name
        if not path.is_file():
            write_mp4(path, dataset_from_config(d, seed=cfg.train.seed)[index]["video"], fps=8)
        return path

    def condition(self, req: dict) -> dict:
        _, checkpoint = self._checkpoint(req)
        clip = self._clip(req)
        out = self._new_folder("condition")
        argv = task_argv(checkpoint, display_path(clip), display_path(out), req)
        task = argv[0]

        def finish(job) -> dict:
            videos = media.load_samples(out)
            given = media.input_preview(clip, out, max_frames=videos.shape[2])
            flag = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
            known = media.known_frames(
                task,
                videos.shape[2],
                context=int(flag.get("--context", 0)),
                given=given,
                factor=int(flag.get("--factor", 1)),
            )
            media.marked_filmstrip(out / "known.png", videos, known)
            views = media.write_previews(out, videos)
            return {
                "input": self.out_url(out / "input.mp4"),
                "outputs": [self.out_url(out / v) for v in views],
                "mp4": [self.out_url(out / f"sample_{i:03d}.mp4") for i in range(len(views))],
                "filmstrip": self.out_url(out / "known.png"),
                "known": known,
                "task": task,
                "output": out.relative_to(self.outputs).as_posix(),
            }

        return self._submit("condition", argv, out, req, finish)

    def _data_sources(self) -> set:
        """The data folders the runs were trained on (unreadable runs skipped)."""
        sources = set()
        for name in list_runs(self.runs):
            try:
                source = read_config(run_folder(self.runs, name)).get("data", {}).get("source", "")
            except StudioError:
                continue
            if source and not source.startswith("builtin:"):
                sources.add(Path(source).expanduser().resolve())
        return sources

    def _readable(self, key: str, value: str) -> None:
        """Refuse (403) a path Evaluate may not read (see the class docstring)."""
        path = Path(value).expanduser().resolve()
        if self.any_folder or is_inside(self.runs, path):
            return
        if key == "real" and path in self._data_sources():
            return
        raise StudioError(
            f"{key}: {value} is outside the runs folder; this studio is served to the network, so "
            f"Evaluate reads only built-in data, the runs' data sources and files inside "
            f"{display_path(self.runs)}",
            403,
        )

    def evaluate(self, req: dict) -> dict:
        real = str(req.get("real") or "").strip()
        if not real.startswith("builtin:"):
            if real:
                self._readable("real", real)
            if not real or not Path(real).is_dir():
                raise StudioError(f"real: {real or '(empty)'} is not a folder of videos (or builtin:moving-shapes)")
        if str(req.get("inception_weights") or "").strip():
            self._readable("inception_weights", str(req["inception_weights"]).strip())
        fake = resolve_inside(self.outputs, str(req.get("fake") or "-"))
        if not (fake / "samples.safetensors").is_file():
            raise StudioError("fake: choose a folder of samples the studio generated")
        out = self._new_folder("evaluate")
        argv = eval_argv(
            real if real.startswith("builtin:") else display_path(Path(real)),
            display_path(fake),
            display_path(out / "report.json"),
            req,
        )

        def finish(job) -> dict:
            return {
                "report": json.loads((out / "report.json").read_text()),
                "report_url": self.out_url(out / "report.json"),
            }

        return self._submit("evaluate", argv, out, req, finish)

    # ---- uploads ----------------------------------------------------------------------------------
    def upload(self, name: str, body) -> dict:
        """Store an uploaded clip under a random name and check it; a bad one is removed and refused."""
        name = Path(str(name or "")).name or "upload"
        suffix = Path(name).suffix.lower()
        if suffix not in VIDEO_EXTENSIONS:
            raise StudioError(f"{name}: not a video file; upload one of {' '.join(VIDEO_EXTENSIONS)}")
        path = self.outputs / "uploads" / f"{secrets.token_hex(8)}{suffix}"
        atomic_write(path, body)
        try:
            info = media.check_upload(path, name)
        except StudioError:
            path.unlink(missing_ok=True)
            raise
        return {"upload": path.relative_to(self.outputs).as_posix(), "name": name, **info}

    def close(self) -> None:
        self.queue.close()


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the studio as Ctrl+C does, so that its `finally` stops the running jobs
    (a signal ignored, as under nohup, stays ignored)."""

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:
                signal.signal(sig, stop)


def serve(
    runs,
    host: str = "127.0.0.1",
    port: int = 7860,
    outputs=None,
    workers: int = 1,
    ready: Optional[callable] = None,
    token: Optional[str] = None,
    allow_hosts=(),
) -> None:
    """Run the studio until interrupted (Ctrl+C, SIGTERM, SIGHUP); its running jobs are stopped with it.
    `ready(url)` is called once it listens, with the URL to open (the token in it, if there is one)."""
    from vidiff.studio.server import is_loopback, make_server, studio_url

    studio = Studio(runs, outputs, workers, any_folder=is_loopback(host))
    atexit.register(studio.close)  # also when the interpreter ends some other way
    try:
        server = make_server(studio, host, port, token, allow_hosts)
    except OSError as e:  # the port is taken, the address is not this machine's
        studio.close()
        raise VidiffError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port (or check --host)"
        ) from e
    _stop_on_signals()
    if ready:
        ready(studio_url(host, server.server_address[1], server.token))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        studio.close()
