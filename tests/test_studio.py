"""The studio's helpers and its HTTP server, without a browser: safe paths, run folders, the
reproducing commands, the job queue, uploads, and the server's refusals."""

import contextlib
import fcntl
import http.client
import io
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from vidiff.cli import build_parser, main
from vidiff.cli.common import sampling_request
from vidiff.io.video import write_mp4
from vidiff.presets import get_preset
from vidiff.request import SampleRequest
from vidiff.studio import media
from vidiff.studio.app import Studio
from vidiff.studio.commands import eval_argv, sample_argv, shell_line, task_argv
from vidiff.studio.jobs import Job, JobQueue, error_line, parse_progress
from vidiff.studio.paths import StudioError, resolve_inside, servable
from vidiff.studio.plots import line_plot_svg
from vidiff.studio.runs import list_runs, preset_of, read_metrics, run_details, run_summary, series
from vidiff.studio.server import make_server


def fake_run(root, name="tiny", preset="cpu-tiny", steps=(2, 4)):
    """A run folder as training leaves it, without training: config, metrics, checkpoints, grids."""
    run = root / name
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text(get_preset(preset).to_json())
    rows = [{"step": s, "loss": 1.0 / s, "lr": 1e-3} for s in range(1, steps[-1] + 1)]
    rows.insert(2, {"step": 2, "fvd": 900.0, "fvd_num": 2})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo')
    for s in steps:
        ck = run / "checkpoints" / f"step_{s:07d}"
        ck.mkdir(parents=True)
        (ck / "model.safetensors").write_bytes(b"x")
        Image.new("RGB", (8, 8)).save(run / "samples" / f"step_{s:07d}.gif")
    return run


# ---- paths ---------------------------------------------------------------------------------------
def test_only_paths_inside_the_root_resolve(tmp_path):
    root = tmp_path / "runs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "v.mp4").write_bytes(b"x")
    (root / "a" / ".lock").write_text("")
    (tmp_path / "secret.json").write_text("{}")
    os.symlink(tmp_path / "secret.json", root / "a" / "link.json")
    assert resolve_inside(root, "a/v.mp4") == (root / "a" / "v.mp4").resolve()
    for bad in [
        "../secret.json",
        "a/../../secret.json",
        "/etc/passwd",
        "a/.lock",
        "a\\..\\x",
        "a/link.json",
        "a/v.mp4\x00.png",
        "",
    ]:
        with pytest.raises(StudioError) as e:
            resolve_inside(root, bad)
        assert e.value.status == 403, bad
    with pytest.raises(StudioError) as e:
        resolve_inside(root, "a/missing.mp4")
    assert e.value.status == 404
    (root / "a" / "model.safetensors").write_bytes(b"x")
    for refused in ["a/model.safetensors", "a"]:  # weights and folders are not served
        with pytest.raises(StudioError, match="not a media"):
            servable(root, refused)
    assert servable(root, "a/v.mp4")[1] == "video/mp4"


# ---- runs ----------------------------------------------------------------------------------------
def test_runs_are_listed_with_preset_steps_loss_and_fvd(tmp_path):
    fake_run(tmp_path)
    fake_run(tmp_path / "ablation", "wide", "cpu-demo", steps=(3,))
    custom = fake_run(tmp_path, "custom")
    (custom / "config.json").write_text(get_preset("cpu-tiny").override(["model.base_channels=8"]).to_json())
    (tmp_path / ".studio" / "x").mkdir(parents=True)
    (tmp_path / "notes").mkdir()
    assert list_runs(tmp_path) == ["ablation/wide", "custom", "tiny"]
    row = run_summary(tmp_path, "tiny")
    assert row["preset"] == "cpu-tiny" and row["steps"] == 4 and row["checkpoints"] == 2
    assert row["loss"] == pytest.approx(0.25) and row["fvd"] == 900.0 and not row["training"]
    assert run_summary(tmp_path, "ablation/wide")["preset"] == "cpu-demo"
    assert run_summary(tmp_path, "custom")["preset"] == "custom"
    d = run_details(tmp_path, "tiny")
    assert d["curves"]["loss"] == [(s, 1.0 / s) for s in range(1, 5)] and d["curves"]["fvd"] == [(2, 900.0)]
    assert [g["path"] for g in d["grids"]] == ["tiny/samples/step_0000002.gif", "tiny/samples/step_0000004.gif"]
    assert d["checkpoint_names"] == ["step_0000002", "step_0000004"] and d["frames"] == 4
    with pytest.raises(StudioError):
        run_summary(tmp_path, "notes")
    with pytest.raises(StudioError):
        run_summary(tmp_path, "../tiny")


def test_metrics_reading_skips_torn_lines_and_thins_long_curves(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        '{"step": 1, "loss": 2}\n[1]\n{"step": 2, "loss": NaN}\n{"step": 3, "loss": 1}\n{"st'
    )
    rows = read_metrics(tmp_path / "m.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert series(rows, "loss") == [(1, 2.0), (3, 1.0)]  # NaN left out
    many = [{"step": i, "loss": float(i)} for i in range(2500)]
    thin = series(many, "loss", max_points=1000)
    assert len(thin) <= 1001 and thin[0] == (0, 0.0) and thin[-1] == (2499, 2499.0)
    assert read_metrics(tmp_path / "missing.jsonl") == []
    assert preset_of({}) == "custom"


# ---- commands ------------------------------------------------------------------------------------
def test_the_shown_command_is_one_vidiff_parses_to_the_same_request():
    req = {
        "num": "3",
        "seed": 7,
        "sampler": "ddim",
        "steps": "12",
        "guidance": "1.5",
        "class_label": "red circle",
        "frames": 9,
        "prompt": "",
    }
    argv = sample_argv("runs/my run", "out dir", req)
    line = shell_line(argv)
    assert line.startswith("vidiff sample --checkpoint 'runs/my run' --num-videos 3 --seed 7 --sampler ddim --steps 12")
    assert "--class 'red circle'" in line and "--prompt" not in line
    args = build_parser().parse_args(argv)
    assert sampling_request(args) == SampleRequest(
        sampler="ddim", steps=12, guidance=1.5, class_label="red circle", seed=7
    )
    assert (args.checkpoint, args.num, args.frames, args.out) == ("runs/my run", 3, 9, "out dir")
    for bad, match in [
        ({"num": 0}, "num must be between 1"),
        ({"sampler": "magic"}, "sampler must be one of"),
        ({"steps": "ten"}, "steps must be a whole number"),
        ({"guidance": "-1"}, "guidance"),
    ]:
        with pytest.raises(StudioError, match=match):
            sample_argv("r", "o", bad)


@pytest.mark.parametrize(
    "req,expect",
    [
        ({"task": "predict", "context": 2, "total_frames": 6}, {"context": 2, "frames": 6}),
        ({"task": "extend", "length": 12, "overlap": 2}, {"length": 12, "overlap": 2}),
        ({"task": "interpolate", "factor": 3}, {"factor": 3}),
        (
            {"task": "upsample", "method": "replacement", "reconstruction_weight": 5},
            {"method": "replacement", "reconstruction_weight": 5.0},
        ),
    ],
)
def test_task_commands_parse(req, expect):
    args = build_parser().parse_args(task_argv("runs/r", "clip.mp4", "out", req))
    assert args.command == req["task"] and args.video == "clip.mp4"
    assert {k: getattr(args, k) for k in expect} == expect


def test_task_and_eval_requests_are_checked():
    with pytest.raises(StudioError, match="length"):
        task_argv("r", "c", "o", {"task": "extend"})
    with pytest.raises(StudioError, match="task must be one of"):
        task_argv("r", "c", "o", {"task": "rm -rf"})
    args = build_parser().parse_args(eval_argv("real", "fake", "r.json", {"metrics": ["fvd", "kvd"], "num_frames": 9}))
    assert (args.metrics, args.num_frames, args.out) == ("fvd,kvd", 9, "r.json")
    with pytest.raises(StudioError, match="metrics"):
        eval_argv("real", "fake", "r.json", {"metrics": ["fvd", "psnr"]})
    with pytest.raises(StudioError, match="num_frames must be between 9"):
        eval_argv("real", "fake", "r.json", {"num_frames": 4})


def test_progress_and_errors_are_read_from_the_command_output():
    assert parse_progress("sampling:  40%|████      | 8/20 [00:01<00:02,  5.00step/s]") == ("sampling", 8, 20)
    assert parse_progress("I3D fake: 3clip [00:02,  1.5clip/s]") == ("I3D fake", 3, 0)
    assert parse_progress("wrote 2 videos to out") is None
    assert (
        error_line(["INFO x", "vidiff sample: error: checkpoint 'x' does not exist; pass a run folder"])
        == "checkpoint 'x' does not exist; pass a run folder"
    )
    assert error_line(["Traceback", "ValueError: boom"]) == "Traceback\nValueError: boom"


# ---- media ---------------------------------------------------------------------------------------
def test_known_frames_are_marked_in_the_filmstrip(tmp_path):
    assert media.known_frames("predict", 4, context=2) == [True, True, False, False]
    assert media.known_frames("interpolate", 5, factor=2) == [True, False, True, False, True]
    assert media.known_frames("extend", 4, given=3) == [True, True, True, False]
    assert media.known_frames("upsample", 2) == [False, False]
    videos = torch.zeros(2, 3, 4, 16, 16)
    media.marked_filmstrip(tmp_path / "k.png", videos, [True, False, True, False], frame_size=32, border=3)
    img = torch.from_numpy(__import__("numpy").array(Image.open(tmp_path / "k.png")))
    assert img.shape == (2 * 38, 4 * 38, 3)
    assert img[0, 0].tolist() == list(media.KNOWN) and img[0, 38].tolist() == list(media.GENERATED)
    assert img[40, 2 * 38 + 1].tolist() == list(media.KNOWN)  # second video, third frame
    assert img[10, 10].tolist() == [128, 128, 128]  # the frame itself (0 → grey)


def test_uploads_are_checked(tmp_path):
    good = tmp_path / "clip.mp4"
    write_mp4(good, torch.rand(3, 6, 16, 16) * 2 - 1)
    assert media.check_upload(good, "clip.mp4") == {"frames": 6, "height": 16, "width": 16, "fps": 8.0}
    with pytest.raises(StudioError, match="too long .6 frames"):
        media.check_upload(good, "clip.mp4", max_frames=5)
    (tmp_path / "bad.mp4").write_text("not a video")
    with pytest.raises(StudioError, match="bad.mp4: cannot be read as a video"):
        media.check_upload(tmp_path / "bad.mp4", "bad.mp4")
    with pytest.raises(StudioError, match="notes.txt: not a video file"):
        media.check_upload(good, "notes.txt")


def test_plots_are_svg_with_one_point_per_row():
    svg = line_plot_svg([(1, 2.0), (2, 1.0), (3, 0.5)], "loss <b>", "loss", log_y=True)
    assert svg.startswith('<svg class="plot loss"') and "loss &lt;b&gt;" in svg
    line = svg.split('class="line" d="')[1].split('"')[0]
    assert line.count("L") == 2 and line.startswith("M")
    assert "no data yet" in line_plot_svg([], "fvd")


def test_an_error_printed_after_an_unfinished_progress_bar_reaches_the_page():
    """tqdm leaves its bar without a newline (`\r…bar`), then the command prints its error on that line."""
    out = (
        b"sampling:  40%|####      | 8/20 [00:01<00:02]\rsampling:  45%|####5     | 9/20 [00:01<00:02]"
        b"vidiff sample: error: not enough memory for 16 videos; lower --num-videos\n"
    )
    job = Job("j", "generate", [], "vidiff sample", Path("."))
    JobQueue._follow(job, SimpleNamespace(stdout=io.BufferedReader(io.BytesIO(out))))
    assert (job.done, job.total) == (9, 20)
    assert error_line(job.log) == "not enough memory for 16 videos; lower --num-videos"


# ---- the server ----------------------------------------------------------------------------------
@contextlib.contextmanager
def serving(runs, host="127.0.0.1", **kw):
    studio = Studio(runs, max_upload_bytes=50_000)
    srv = make_server(studio, host, 0, **kw)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        studio.close()


@pytest.fixture
def server(tmp_path):
    fake_run(tmp_path / "runs")
    with serving(tmp_path / "runs") as srv:
        yield srv


def respond(srv, method, path, body=None, headers=None):
    """(status, headers, body: JSON decoded when it is JSON) of one request to the server."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.headers, (json.loads(data) if r.getheader("Content-Type") == "application/json" else data)


def request(srv, method, path, body=None, headers=None):
    status, _, data = respond(srv, method, path, body, headers)
    return status, data


def test_the_server_serves_the_page_runs_and_files_and_refuses_the_rest(server):
    status, page = request(server, "GET", "/")
    assert status == 200 and b"vidiff studio" in page and b"http" not in page.split(b"<body>")[1]  # nothing external
    status, runs = request(server, "GET", "/api/runs")
    assert status == 200 and [r["name"] for r in runs] == ["tiny"]
    status, run = request(server, "GET", "/api/run?name=tiny")
    assert status == 200 and '<svg class="plot loss"' in run["plots"]["loss"]
    status, gif = request(server, "GET", "/files/runs/tiny/samples/step_0000002.gif", headers={"Range": "bytes=0-5"})
    assert status == 206 and gif == b"GIF87a"
    for path in [
        "/files/runs/../../etc/passwd",
        "/files/runs/tiny/../../../etc/passwd",
        "/files/runs/%2e%2e/x.json",
        "/files/out/../tiny/config.json",
        "/files/runs/tiny/checkpoints/step_0000002/model.safetensors",
        "/files/runs/tiny/config.json/..%2f..%2f..%2fetc%2fpasswd",
    ]:
        status, body = request(server, "GET", path)
        assert status == 403 and "refused path" in body["error"], path
    assert request(server, "GET", "/api/runs", headers={"Host": "attacker.example:80"})[0] == 403
    assert request(server, "POST", "/api/generate", body="{}", headers={"Content-Type": "text/plain"})[0] == 415
    status, body = request(
        server, "POST", "/api/generate", body='{"run": "../x"}', headers={"Content-Type": "application/json"}
    )
    assert status == 403 and "refused path" in body["error"]


def test_bad_uploads_get_a_message_and_the_server_goes_on(server, tmp_path):
    status, body = request(server, "POST", "/api/upload", body=b"hello", headers={"X-Filename": "a.mp4"})
    assert status == 400 and "a.mp4: cannot be read as a video" in body["error"]
    status, body = request(server, "POST", "/api/upload", body=b"x" * 60_000, headers={"X-Filename": "big.mp4"})
    assert status == 413 and "too large" in body["error"]
    assert (
        request(server, "POST", "/api/upload", body=b"x", headers={"X-Filename": "x.exe"})[1]["error"]
        == "x.exe: not a video file; upload one of .mp4 .avi .mov .mkv .webm .gif .m4v"
    )
    assert not list((tmp_path / "runs" / ".studio" / "uploads").glob("*"))  # refused files are not kept
    write_mp4(tmp_path / "c.mp4", torch.zeros(3, 5, 16, 16))
    status, body = request(
        server, "POST", "/api/upload", body=(tmp_path / "c.mp4").read_bytes(), headers={"X-Filename": "my%20clip.mp4"}
    )
    assert status == 200 and body["name"] == "my clip.mp4" and body["frames"] == 5
    assert request(server, "GET", "/api/runs")[0] == 200


def test_jobs_queue_and_the_page_answers_meanwhile(server):
    """Two jobs at once (two browsers): both finish, the second waits its turn, the server stays responsive.
    The command fails (the fake run's weights are not weights): its one-line error reaches the page."""
    post = lambda: request(
        server,
        "POST",
        "/api/generate",
        body=json.dumps({"run": "tiny", "steps": 1}),
        headers={"Content-Type": "application/json"},
    )[1]
    first, second = post(), post()
    assert first["command"].startswith("vidiff sample --checkpoint ") and "--steps 1" in first["command"]
    t = time.time()
    assert request(server, "GET", "/api/runs")[0] == 200 and time.time() - t < 2
    assert request(server, "GET", f"/api/jobs/{second['id']}")[1]["status"] == "queued"
    for job in (first, second):
        deadline = time.time() + 120
        while (view := request(server, "GET", f"/api/jobs/{job['id']}")[1])["status"] in ("queued", "running"):
            assert time.time() < deadline
            time.sleep(0.2)
        assert view["status"] == "error" and "step_0000004' is not a vidiff checkpoint" in view["error"]
    assert request(server, "GET", "/api/jobs/nope")[0] == 404


def test_evaluate_reads_only_known_folders_when_served_to_the_network(tmp_path):
    """Served beyond loopback, Evaluate's real clips must be built-in data, a run's own data source or
    inside the runs folder, and its Inception weights inside the runs folder; on loopback any folder."""
    run = fake_run(tmp_path / "runs")
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir(), elsewhere.mkdir()
    config = json.loads((run / "config.json").read_text())
    config["data"]["source"] = str(data)
    (run / "config.json").write_text(json.dumps(config))
    open_studio, closed = Studio(tmp_path / "runs"), Studio(tmp_path / "runs", any_folder=False)
    try:
        with pytest.raises(StudioError, match="elsewhere is outside the runs folder") as e:
            closed.evaluate({"real": str(elsewhere), "fake": "f"})
        assert e.value.status == 403
        with pytest.raises(StudioError, match=r"real: \(empty\) is not a folder"):
            open_studio.evaluate({"real": "", "fake": "f"})
        with pytest.raises(StudioError, match="inception_weights: /etc/passwd is outside"):
            closed.evaluate({"real": "builtin:moving-shapes", "fake": "f", "inception_weights": "/etc/passwd"})
        for studio, real in ((closed, str(data)), (closed, "builtin:moving-shapes"), (open_studio, str(elsewhere))):
            with pytest.raises(StudioError, match="f: not found"):  # the real clips passed; the fake folder is next
                studio.evaluate({"real": real, "fake": "f"})
    finally:
        open_studio.close(), closed.close()


JSON = {"Content-Type": "application/json"}


def test_served_to_the_network_every_request_needs_the_token_and_an_allowed_host(tmp_path):
    """Bound to 0.0.0.0: the token from the printed URL (a cookie after the first visit) or an
    Authorization header; a Host that is not an address, localhost or --allow-host is refused even
    with the token (DNS rebinding), and so is a POST from another site's page."""
    fake_run(tmp_path / "runs")
    with serving(tmp_path / "runs", "0.0.0.0", allow_hosts=["studio.lan"]) as srv:
        token, port = srv.token, srv.server_address[1]
        assert token and len(token) >= 40
        status, _, body = respond(srv, "GET", "/api/runs")
        assert status == 403 and "needs its token" in body["error"]
        assert request(srv, "GET", "/", headers={"Cookie": f"vidiff-studio-{port}=wrong"})[0] == 403
        assert request(srv, "GET", "/?token=" + token[:-1])[0] == 403
        auth = {"Authorization": f"token {token}"}
        status, body = request(srv, "GET", "/api/runs", headers={**auth, "Host": "evil.example"})
        assert status == 403 and "not a name this studio answers to" in body["error"]
        status, headers, _ = respond(srv, "GET", f"/api/runs?x=1&token={token}")
        assert status == 303 and headers["Location"] == "/api/runs?x=1"
        cookie = headers["Set-Cookie"]
        assert (
            cookie.startswith(f"vidiff-studio-{port}={token};")
            and "HttpOnly" in cookie
            and "SameSite=Strict" in cookie
            and "Path=/" in cookie
        )
        for path in ("//evil.example/", "/\\evil.example/"):  # the redirect stays on this site
            assert not re.match(r"/[/\\]", respond(srv, "GET", f"{path}?token={token}")[1]["Location"]), path
        jar = {"Cookie": f"other=1; {cookie.split(';')[0]}"}
        assert request(srv, "GET", "/api/runs", headers=jar)[1][0]["name"] == "tiny"
        assert request(srv, "GET", "/api/runs", headers=auth)[0] == 200
        assert request(srv, "GET", "/api/runs", headers={**auth, "Host": f"studio.lan:{port}"})[0] == 200
        assert request(srv, "POST", "/api/generate", '{"run": "nope"}', {**JSON, **auth})[0] == 404  # let through
        assert request(srv, "POST", "/api/generate", '{"run": "nope"}', {**JSON})[0] == 403
        for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"http://127.0.0.1:{port + 1}"):
            status, body = request(srv, "POST", "/api/generate", '{"run": "tiny"}', {**JSON, **jar, "Origin": origin})
            assert status == 403 and "another site" in body["error"], origin
        own = {**JSON, **jar, "Origin": f"http://127.0.0.1:{port}"}
        assert request(srv, "POST", "/api/generate", '{"run": "nope"}', own)[0] == 404
    assert not (tmp_path / "runs" / ".studio" / "generate").exists()  # no job was queued


def test_on_loopback_a_foreign_origin_is_refused_and_a_given_token_is_required(tmp_path):
    fake_run(tmp_path / "runs")
    with serving(tmp_path / "runs") as srv:
        assert srv.token is None and request(srv, "GET", "/api/runs")[0] == 200
        port = srv.server_address[1]
        status, body = request(
            srv, "POST", "/api/generate", '{"run": "tiny"}', {**JSON, "Origin": "http://evil.example"}
        )
        assert status == 403 and "another site" in body["error"]
        assert (
            request(
                srv,
                "POST",
                "/api/generate",
                '{"run": "nope"}',
                {**JSON, "Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"},
            )[0]
            == 404
        )
    with serving(tmp_path / "runs", token="a-token-of-16-chars") as srv:
        assert request(srv, "GET", "/api/runs")[0] == 403
        assert request(srv, "GET", "/api/runs", headers={"Authorization": "token a-token-of-16-chars"})[0] == 200


def raw(srv, head: bytes, body: bytes = b"") -> bytes:
    """The answer to a request written byte for byte (the server closes the connection after a refusal)."""
    with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=20) as s:
        s.sendall(head + b"\r\n\r\n" + body)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        return answer


@pytest.mark.parametrize("length,status", [("-5", 400), ("abc", 400), ("1_0", 400), (None, 411), ("chunked", 411)])
def test_a_bad_content_length_is_refused(server, length, status):
    head = b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
    if length == "chunked":
        head += b"\r\nTransfer-Encoding: chunked"
    elif length is not None:
        head += b"\r\nContent-Length: " + length.encode()
    answer = raw(server, head, b"2\r\n{}\r\n0\r\n\r\n" if length == "chunked" else b"{}")
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    assert b"Content-Length" in answer.split(b"\r\n\r\n", 1)[1]  # the message names the header


@pytest.mark.parametrize(
    "extra,body",
    [
        (b"\r\nOrigin: http://[::1", b"{}"),  # an Origin urlsplit cannot read
        (b"", b"\xff"),  # a body that is not UTF-8
        (b"", b"[" * 100_000),  # nested past Python's recursion limit
    ],
    ids=["origin", "not-utf8", "deep"],
)
def test_odd_requests_are_refused_not_a_server_error(server, extra, body):
    head = (
        b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        + extra
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
    )
    answer = raw(server, head, body)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_content_length_minus_one_is_refused_before_the_body_is_read(server, tmp_path):
    """Content-Length: -1 made the server read until the client closed (64 MiB kept in memory and
    stored): the answer must come while the client is still sending, and the body must not be read."""
    s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=20)
    s.sendall(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filename: a.mp4\r\nContent-Length: -1\r\n\r\n")
    sent = [0]

    def send():
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            while sent[0] < 64 * 2**20:
                sent[0] += s.send(chunk)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        answer = s.recv(4096)
    except socket.timeout:
        answer = b"(no answer while the body was being sent)"
    sender.join(20)
    s.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert sent[0] < 32 * 2**20  # the server stopped taking bytes: what went was the sockets' buffers
    assert not list((tmp_path / "runs" / ".studio" / "uploads").glob("*"))


def test_a_run_killed_while_training_shows_as_interrupted(server, tmp_path):
    run = tmp_path / "runs" / "tiny"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom vidiff.io.files import run_lock\n"
            "with run_lock(sys.argv[1]):\n print('locked', flush=True); time.sleep(60)",
            str(run),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        row = request(server, "GET", "/api/runs")[1][0]
        assert row["training"] and row["state"] == "training"
    finally:
        holder.kill()  # SIGKILL: the lock file keeps its holder's line, the lock itself goes
        holder.wait()
    assert (run / ".lock").read_text().startswith("process ")
    row = request(server, "GET", "/api/runs")[1][0]
    assert not row["training"] and row["state"] == "interrupted"


def test_a_foreign_folder_is_skipped_and_the_runs_are_listed(server, tmp_path, caplog):
    foreign = tmp_path / "runs" / "classifier"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model": "resnet50"}')
    (foreign / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    with caplog.at_level(logging.WARNING, logger="vidiff.studio"):
        for _ in range(2):
            status, rows = request(server, "GET", "/api/runs")
            assert status == 200 and [r["name"] for r in rows] == ["classifier", "tiny"]
            assert rows[0]["skipped"] and "not a vidiff configuration" in rows[0]["error"] and "loss" in rows[1]
    assert len([r for r in caplog.records if "classifier" in r.getMessage()]) == 1  # said once


def test_a_clip_named_with_a_hash_can_be_conditioned_on(server, tmp_path):
    data = tmp_path / "data"
    write_mp4(data / "a#b.mp4", torch.zeros(3, 4, 16, 16))
    config_file = tmp_path / "runs" / "tiny" / "config.json"
    config = json.loads(config_file.read_text())
    config["data"]["source"] = str(data)
    config_file.write_text(json.dumps(config))
    assert request(server, "GET", "/api/clips?run=tiny")[1] == ["a#b.mp4"]
    status, job = request(server, "POST", "/api/condition", json.dumps({"run": "tiny", "clip": "a#b.mp4"}), JSON)
    assert status == 200 and f"--video {shlex.quote(str(data / 'a#b.mp4'))} " in job["command"]


def test_cli_refuses_a_bad_port_and_a_taken_one_in_one_line(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["studio", "--runs", str(tmp_path / "runs"), "--port", "99999"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "vidiff studio: error: --port 99999: a port is a number from 0 to 65535 (0 picks a free one)"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["studio", "--runs", str(tmp_path / "runs"), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"vidiff studio: error: cannot listen on 127.0.0.1:{port}: Address already in use; choose another "
        f"--port (or check --host)"
    )
    assert main(["studio", "--runs", str(tmp_path / "runs"), "--token", "short"]) == 2
    assert "--token (or VIDIFF_STUDIO_TOKEN) must be at least 16" in capsys.readouterr().err


def children(pid: int) -> list:
    """The processes whose parent is `pid` (from /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def test_sigterm_stops_the_studio_and_its_running_job(tmp_path):
    """`vidiff studio` (its token from the environment) runs a job that waits, silent, for the
    checkpoint's read lock; SIGTERM to the studio must end that job too."""
    run = fake_run(tmp_path / "runs")
    checkpoint = run / "checkpoints" / "step_0000004"
    (checkpoint / "config.json").write_text((run / "config.json").read_text())
    (checkpoint / ".readers").touch()
    env = {
        **os.environ,
        "VIDIFF_STUDIO_TOKEN": "token-from-the-environment",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    with open(checkpoint / ".readers") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a training run that is replacing the checkpoint
        studio = subprocess.Popen(
            [sys.executable, "-m", "vidiff.cli", "studio", "--runs", str(tmp_path / "runs"), "--port", "0"],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        job = None
        try:
            line = studio.stdout.readline()
            m = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=token-from-the-environment ", line)
            assert m, line
            port = int(m.group(1))
            srv = SimpleNamespace(server_address=("127.0.0.1", port))
            assert request(srv, "GET", "/api/runs")[0] == 403
            auth = {"Authorization": "token token-from-the-environment"}
            assert request(srv, "POST", "/api/generate", '{"run": "tiny"}', {**JSON, **auth})[0] == 200
            deadline = time.time() + 30
            while not (kids := children(studio.pid)) and time.time() < deadline:
                time.sleep(0.1)
            assert kids, "the job did not start"
            job = kids[0]
            time.sleep(1)  # the job is now blocked on the lock, printing nothing
            studio.send_signal(signal.SIGTERM)
            studio.wait(15)
            deadline = time.time() + 10
            while (
                Path(f"/proc/{job}").exists()
                and "Z" not in Path(f"/proc/{job}/stat").read_text().split()[2]
                and time.time() < deadline
            ):
                time.sleep(0.1)
            assert not Path(f"/proc/{job}").exists() or Path(f"/proc/{job}/stat").read_text().split()[2] == "Z"
        finally:
            studio.kill()
            if job:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job, signal.SIGKILL)
