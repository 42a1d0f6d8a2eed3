"""The HTTP side of the studio: Python's threading HTTP server, one thread per request (so two
browsers and a long job never wait on each other), JSON routes onto :class:`~vidiff.studio.app.Studio`
and file routes that serve only the runs folder and the studio's outputs.

Requests that change anything are POSTs that need a JSON body (or, for an upload, an X-Filename
header), which a page of another site cannot send without the browser asking first; the studio does
not answer such questions. Bound to loopback, it also refuses Host headers other than its own, which
stops DNS rebinding.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

from .paths import StudioError, servable

log = logging.getLogger("vidiff.studio")
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/static/app.js": ("app.js", "text/javascript"),
          "/static/style.css": ("style.css", "text/css")}
CHUNK = 1 << 16
MAX_DRAIN = 1 << 30  # an upload over the limit is read and dropped up to this size, so the page gets the message


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Handler(BaseHTTPRequestHandler):
    server_version = "vidiff-studio"
    protocol_version = "HTTP/1.1"

    @property
    def studio(self):
        return self.server.studio

    def log_message(self, format, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # ---- responses --------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, kind: str, headers: dict = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value, status: int = 200) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _file(self, root, relative: str, hidden: bool = False) -> None:
        path, kind = servable(root, unquote(relative), hidden=hidden)
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if m and size and (m.group(1) or m.group(2)):
            if m.group(1):
                start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
            else:
                start = max(0, size - int(m.group(2)))
            if start > end:
                return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
            status = 206
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        headers = {"Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(status, body, kind, headers)

    # ---- routing ----------------------------------------------------------------------------------
    def _host_ok(self) -> bool:
        if not self.server.loopback_only:
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        return is_loopback(host)

    def _guard(self, route) -> None:
        try:
            if not self._host_ok():
                raise StudioError("this studio answers on its loopback address only", 403)
            route()
        except StudioError as e:
            self._error(e.status, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug: say so in the page, keep serving
            log.error("%s %s failed:\n%s", self.command, self.path, traceback.format_exc())
            self._error(500, f"internal error ({type(e).__name__}: {e}); see the studio's terminal")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._guard(self._get)

    def do_POST(self) -> None:
        self._guard(self._post)

    def _get(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        s = self.studio
        if url.path in STATIC:
            name, kind = STATIC[url.path]
            return self._send(200, resources.files("vidiff.studio").joinpath("static", name).read_bytes(), kind)
        if url.path.startswith("/files/runs/"):
            return self._file(s.runs, url.path[len("/files/runs/"):])
        if url.path.startswith("/files/out/"):
            return self._file(s.outputs, url.path[len("/files/out/"):])
        routes = {"/api/info": s.info, "/api/runs": s.runs_list, "/api/outputs": s.outputs_list,
                  "/api/run": lambda: s.run(query.get("name", "")),
                  "/api/clips": lambda: s.clips(query.get("run", ""))}
        if url.path in routes:
            return self._json(routes[url.path]())
        if url.path.startswith("/api/jobs/"):
            return self._json(s.queue.view(url.path[len("/api/jobs/"):]))
        raise StudioError(f"{url.path}: no such page", 404)

    def _body(self, limit: int) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise StudioError("the request has no length", 411) from None
        if length > limit:
            remaining = length if length <= MAX_DRAIN else 0
            while remaining > 0:
                got = self.rfile.read(min(CHUNK, remaining))
                if not got:
                    break
                remaining -= len(got)
            if length > MAX_DRAIN:
                self.close_connection = True
            raise StudioError(f"the file is too large ({length / 2**20:.1f} MiB); the studio takes up to "
                              f"{limit / 2**20:.0f} MiB", 413)
        return self.rfile.read(length)

    def _post(self) -> None:
        path = urlsplit(self.path).path
        s = self.studio
        if path == "/api/upload":
            name = self.headers.get("X-Filename")
            if not name:
                raise StudioError("an upload needs its file name in the X-Filename header")
            size = self.headers.get("Content-Length", "0")
            body = self._body(s.max_upload_bytes)
            log.info("upload %s (%s bytes)", unquote(name), size)
            return self._json(s.upload(unquote(name), body))
        routes = {"/api/generate": s.generate, "/api/condition": s.condition, "/api/evaluate": s.evaluate}
        if path not in routes:
            raise StudioError(f"{path}: no such action", 404)
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            raise StudioError("send the request as JSON (Content-Type: application/json)", 415)
        try:
            req = json.loads(self._body(1 << 20) or b"{}")
        except json.JSONDecodeError as e:
            raise StudioError(f"the request is not JSON: {e}") from None
        if not isinstance(req, dict):
            raise StudioError("the request must be a JSON object")
        self._json(routes[path](req))


class StudioServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, studio, host: str, port: int):
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)
        self.studio = studio
        self.loopback_only = is_loopback(host)


def make_server(studio, host: str = "127.0.0.1", port: int = 7860) -> StudioServer:
    return StudioServer(studio, host, port)
