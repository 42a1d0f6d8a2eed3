"""Long jobs off the page's back: a queue of `vidiff` commands run as subprocesses by worker threads.

The page gets a job id at once and polls it; the progress is read from the command's own progress
bar (tqdm on stderr), the error from its one-line `vidiff CMD: error: …`. Two browsers that submit at
once both get their result; with one worker the second job waits, and the page says so. Closing the
queue stops the running commands (terminate, then kill after a grace period) and starts no other.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from vidiff.studio.paths import StudioError

_BAR = re.compile(r"(?:(?P<desc>[^:|]{1,60}):\s*)?(?P<pct>\d{1,3})%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)")
_COUNT = re.compile(r"^\s*(?P<desc>[^:|]{1,60}):\s*(?P<n>\d+)[a-z/]*\s*\[")  # a bar without a total
_ERROR = re.compile(r"vidiff [a-z-]+: error: ")
MAX_JOBS = 200  # finished jobs beyond this are forgotten, oldest first
GRACE = 5.0  # seconds a stopped command has to exit before it is killed


def parse_progress(line: str) -> Optional[tuple]:
    """(stage, done, total) from one tqdm line (`sampling:  40%|████  | 8/20 [00:01<…]`; total 0 for a
    bar that does not know it, `I3D fake: 3clip [00:02, …]`), else None."""
    m = _BAR.search(line)
    if m:
        return (m.group("desc") or "").strip(), int(m.group("n")), int(m.group("total"))
    m = _COUNT.search(line)
    return (m.group("desc").strip(), int(m.group("n")), 0) if m else None


def error_line(lines) -> str:
    """What went wrong, from a command's stderr: its one-line vidiff error, else the last lines."""
    lines = [x for x in lines if x.strip()]
    for line in reversed(lines):
        m = _ERROR.search(line)  # also after a progress bar left without its newline
        if m:
            return line[m.end() :]
    return "\n".join(lines[-8:]) or "the command failed without a message"


def read_line(job, line: str) -> None:
    """One line of a command's output: a progress bar updates the job, anything else goes to its log.
    A vidiff error printed after an unfinished bar (same line) is split off and logged."""
    m = _ERROR.search(line)
    if m and m.start() > 0:
        read_line(job, line[: m.start()])
        line = line[m.start() :]
    bar = None if m else parse_progress(line)
    if bar:
        job.stage, job.done, job.total = bar
    elif line.strip():
        job.log.append(line)


@dataclass
class Job:
    id: str
    kind: str
    argv: list
    command: str  # as shown to the user: `vidiff …`
    out: Path
    finish: Optional[Callable] = None  # Job -> dict of results, run in the worker after success
    status: str = "queued"  # queued | running | done | error
    stage: str = ""
    done: int = 0
    total: int = 0
    error: str = ""
    result: dict = field(default_factory=dict)
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None

    def view(self, ahead: int = 0) -> dict:
        now = self.finished or time.time()
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "command": self.command,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "queued_ahead": ahead,
            "progress": self.done / self.total if self.total else None,
            "error": self.error,
            "result": self.result,
            "seconds": round(now - (self.started or now), 1),
        }


class JobQueue:
    """Runs `python -m vidiff.cli ARGV` for each submitted job, `workers` at a time."""

    def __init__(self, workers: int = 1, cwd=None):
        self.jobs: dict = {}
        self.pending: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.cwd = cwd
        self.processes: dict = {}
        self.closed = False
        package_root = str(Path(__file__).resolve().parents[2])  # the vidiff that runs the studio runs the jobs
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
        }
        self.threads = [
            threading.Thread(target=self._work, daemon=True, name=f"studio-job-{i}") for i in range(max(1, workers))
        ]
        for t in self.threads:
            t.start()

    def submit(self, kind: str, argv: list, command: str, out: Path, finish: Optional[Callable] = None) -> Job:
        job = Job(secrets.token_hex(8), kind, list(argv), command, Path(out), finish)
        with self.lock:
            self.jobs[job.id] = job
            old = [j for j in self.jobs.values() if j.finished]
            for j in sorted(old, key=lambda j: j.finished)[: max(0, len(self.jobs) - MAX_JOBS)]:
                del self.jobs[j.id]
        self.pending.put(job)
        return job

    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise StudioError(f"no job {job_id!r} (the studio may have been restarted)", 404)
        return job

    def view(self, job_id: str) -> dict:
        job = self.get(job_id)
        with self.lock:
            ahead = sum(1 for j in self.jobs.values() if j.status == "queued" and j.created < job.created)
        return job.view(ahead if job.status == "queued" else 0)

    def close(self, grace: float = GRACE) -> None:
        """Stop the running commands: SIGTERM, then SIGKILL those still running after `grace` seconds.
        The queued ones never start."""
        with self.lock:
            self.closed = True
            procs = list(self.processes.values())
        for p in procs:
            p.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def _work(self) -> None:
        while True:
            job = self.pending.get()
            try:
                self._run(job)
            except Exception as e:  # a bug in a finisher must not stop the worker
                job.status, job.error = "error", f"{type(e).__name__}: {e}"
            finally:
                job.finished = time.time()

    def _run(self, job: Job) -> None:
        job.status, job.started = "running", time.time()
        job.out.mkdir(parents=True, exist_ok=True)
        with self.lock:  # under the lock, so that close() sees every command it has to stop
            if self.closed:
                job.status, job.error = "error", "the studio stopped before the job started"
                return
            proc = subprocess.Popen(
                [sys.executable, "-m", "vidiff.cli", *job.argv],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            self.processes[job.id] = proc
        try:
            self._follow(job, proc)
            code = proc.wait()
        finally:
            with self.lock:
                self.processes.pop(job.id, None)
        if code != 0:
            job.status, job.error = "error", error_line(job.log)
            return
        job.result = job.finish(job) if job.finish else {}
        job.status = "done"

    @staticmethod
    def _follow(job: Job, proc: subprocess.Popen) -> None:
        """Read the command's output as it comes: each line (or tqdm's \\r update) into the log and the progress."""
        buffer = ""
        while True:
            chunk = proc.stdout.read1(4096)
            if not chunk:
                break
            parts = re.split(r"[\r\n]", buffer + chunk.decode(errors="replace"))
            buffer = parts.pop()
            for line in parts:
                read_line(job, line)
        read_line(job, buffer)
