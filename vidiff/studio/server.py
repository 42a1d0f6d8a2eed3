"""The HTTP side of the studio: Python's threading HTTP server, one thread per request (so two
browsers and a long job never wait on each other), JSON routes onto :class:`~vidiff.studio.app.Studio`
and file routes that serve only the runs folder and the studio's outputs.

Every request must name an allowed Host (stops DNS rebinding: a name the attacker's DNS points at
this machine is refused). Served beyond loopback, every request must also carry the studio's token,
like Jupyter's: in the URL printed at start (`/?token=…`, which sets a cookie and redirects to the
URL without it), in a cookie, or as `Authorization: token …`; on loopback only when --token is given.
Requests that change anything are POSTs that need a JSON body (or, for an upload, an X-Filename
header), which a page of another site cannot send without the browser asking first; the studio does
not answer such questions, and it refuses any POST whose Origin is not its own.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Optional
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

from vidiff.errors import VidiffError
from vidiff.studio.paths import StudioError, servable

log = logging.getLogger("vidiff.studio")
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript"),
    "/static/style.css": ("style.css", "text/css"),
}
CHUNK = 1 << 16
MAX_DRAIN = 1 << 30  # an upload over the limit is read and dropped up to this size, so the page gets the message
MAX_JSON = 1 << 20
TOKEN_ENV = "VIDIFF_STUDIO_TOKEN"  # --token from the environment, so that it does not show in `ps`
_HOST = re.compile(r"(?P<name>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>\d{1,5}))?")
_LENGTH = re.compile(r"\d{1,15}")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def split_url(text: str):
    """urlsplit, with a URL it cannot split refused as a bad request (not a 500)."""
    try:
        return urlsplit(text)
    except ValueError:
        raise StudioError(f"{text[:100]!r} is not a URL this studio can read", 400) from None


def split_host(value: str) -> Optional[tuple]:
    """(name, port or None) of a Host header (`studio.lan:7860`, `[::1]:7860`), the name lowercased
    without brackets or a trailing dot; None when it is not a host name at all."""
    m = _HOST.fullmatch((value or "").strip())
    if not m:
        return None
    return m.group("name").strip("[]").rstrip(".").lower(), int(m.group("port")) if m.group("port") else None


def check_token(token: str) -> str:
    """A token given with --token or VIDIFF_STUDIO_TOKEN, refused when short or unfit for a cookie."""
    if not re.fullmatch(r"[A-Za-z0-9._~-]{16,}", token):
        raise VidiffError(
            f"--token (or {TOKEN_ENV}) must be at least 16 letters, digits or - _ . ~; leave it out "
            f"and the studio makes one up"
        )
    return token


def studio_url(host: str, port: int, token: Optional[str]) -> str:
    """The URL to open: the machine's name for a wildcard address, with the token when there is one."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
    return base + (f"?token={token}" if token else "")


class Handler(BaseHTTPRequestHandler):
    timeout = 60  # seconds a connection may wait for a request's next bytes: a stalled client frees its thread
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

    # ---- who may ask -------------------------------------------------------------------------------
    def _admit(self) -> bool:
        """Refuse (403) a foreign Host, a POST from another site's page, a request without the token.
        A GET with the right `?token=` gets the cookie and a redirect to itself without the token;
        True when that answer was sent."""
        host = split_host(self.headers.get("Host"))
        if host is None or not self.server.host_allowed(host[0]):
            raise StudioError(
                f"Host {self.headers.get('Host')!r} is not a name this studio answers to; open it by "
                f"its address, or start it with --allow-host NAME",
                403,
            )
        if self.command == "POST":
            self._check_origin(host)
        token = self.server.token
        if token is None:
            return False
        url = split_url(self.path)
        query = parse_qsl(url.query, keep_blank_values=True)
        if any(k == "token" and same(v, token) for k, v in query):
            if self.command == "POST":
                return False
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = "/" + url.path.lstrip("/\\") + (f"?{rest}" if rest else "")  # never //other.site
            self._send(303, b"", "text/plain", {"Location": location, "Set-Cookie": self.server.cookie()})
            return True
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        if (scheme.lower() == "token" and same(given.strip(), token)) or any(
            same(v, token) for v in self._cookies(self.server.cookie_name)
        ):
            return False
        raise StudioError(
            "this studio needs its token: open the URL it printed at start (http://…/?token=…), "
            "or send the header Authorization: token TOKEN",
            403,
        )

    def _check_origin(self, host: tuple) -> None:
        """A POST that names its Origin must come from the studio's own page (the Host it was sent to)."""
        origin = self.headers.get("Origin")
        if origin is None:
            return
        u = split_url(origin.strip())
        theirs = split_host(u.netloc) if u.scheme in ("http", "https") else None
        ok = (
            theirs is not None
            and theirs[0] == host[0]
            and (host[1] is None or (theirs[1] or {"http": 80, "https": 443}[u.scheme]) == host[1])
        )
        if not ok:
            raise StudioError(
                f"refused a request sent by the page of another site (Origin {origin}); the studio "
                f"takes actions from its own page only",
                403,
            )

    def _cookies(self, name: str) -> list:
        values = []
        for header in self.headers.get_all("Cookie") or []:
            for part in header.split(";"):
                key, _, value = part.strip().partition("=")
                if key == name:
                    values.append(value)
        return values

    # ---- routing ----------------------------------------------------------------------------------
    def _guard(self, route) -> None:
        try:
            if not self._admit():
                route()
        except StudioError as e:
            if self.command == "POST":  # the body may be unread: do not take it for the next request
                self.close_connection = True
            self._error(e.status, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug: say so in the page, keep serving
            if self.command == "POST":
                self.close_connection = True
            log.error("%s %s failed:\n%s", self.command, self.path, traceback.format_exc())
            self._error(500, f"internal error ({type(e).__name__}: {e}); see the studio's terminal")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._guard(self._get)

    def do_POST(self) -> None:
        self._guard(self._post)

    def _get(self) -> None:
        url = split_url(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        s = self.studio
        if url.path in STATIC:
            name, kind = STATIC[url.path]
            return self._send(200, resources.files("vidiff.studio").joinpath("static", name).read_bytes(), kind)
        if url.path.startswith("/files/runs/"):
            return self._file(s.runs, url.path[len("/files/runs/") :])
        if url.path.startswith("/files/out/"):
            return self._file(s.outputs, url.path[len("/files/out/") :])
        routes = {
            "/api/info": s.info,
            "/api/runs": s.runs_list,
            "/api/outputs": s.outputs_list,
            "/api/run": lambda: s.run(query.get("name", "")),
            "/api/clips": lambda: s.clips(query.get("run", "")),
        }
        if url.path in routes:
            return self._json(routes[url.path]())
        if url.path.startswith("/api/jobs/"):
            return self._json(s.queue.view(url.path[len("/api/jobs/") :]))
        raise StudioError(f"{url.path}: no such page", 404)

    def _length(self) -> int:
        """The body's size from Content-Length, refused when absent, not a plain number or chunked."""
        if self.headers.get("Transfer-Encoding"):
            raise StudioError("the studio does not read chunked requests: send the body with a Content-Length", 411)
        values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not values:
            raise StudioError("the request has no Content-Length", 411)
        if len(values) > 1 or not _LENGTH.fullmatch(next(iter(values))):
            raise StudioError(f"bad Content-Length {', '.join(sorted(values))}: give the body's size in bytes", 400)
        return int(next(iter(values)))

    def _body(self, limit: int) -> bytes:
        """At most `limit` bytes of body; a larger one is read and dropped (up to MAX_DRAIN) and refused."""
        length = self._length()
        if length > limit:
            remaining = length if length <= MAX_DRAIN else 0
            while remaining > 0:
                got = self.rfile.read(min(CHUNK, remaining))
                if not got:
                    break
                remaining -= len(got)
            if length > MAX_DRAIN:
                self.close_connection = True
            raise StudioError(
                f"the file is too large ({length / 2**20:.1f} MiB); the studio takes up to {limit / 2**20:.0f} MiB", 413
            )
        return self.rfile.read(length)

    def _post(self) -> None:
        path = split_url(self.path).path
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
            req = json.loads(self._body(MAX_JSON) or b"{}")
        except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, nested past Python's limit
            raise StudioError(f"the request is not JSON: {type(e).__name__}: {str(e)[:200]}") from None
        if not isinstance(req, dict):
            raise StudioError("the request must be a JSON object")
        self._json(routes[path](req))


def same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())


class StudioServer(ThreadingHTTPServer):
    """The studio's HTTP server. `token`: what every request must carry (made up when the studio is
    served beyond loopback and none is given); `allow_hosts`: Host names it answers to besides
    localhost, IP addresses (DNS rebinding needs a name) and this machine's name."""

    daemon_threads = True

    def __init__(self, studio, host: str, port: int, token: Optional[str] = None, allow_hosts=()):
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)
        self.studio = studio
        self.token = token if token or is_loopback(host) else secrets.token_urlsafe(32)
        self.cookie_name = f"vidiff-studio-{self.server_address[1]}"  # one per port: studios side by side
        names = {"localhost", socket.gethostname().lower(), *(h.lower().rstrip(".") for h in allow_hosts)}
        self.allowed_names = names | ({host.lower()} if not is_ip(host) else set())

    def host_allowed(self, name: str) -> bool:
        return is_ip(name) or name in self.allowed_names

    def cookie(self) -> str:
        return f"{self.cookie_name}={self.token}; HttpOnly; SameSite=Strict; Path=/"


def make_server(
    studio, host: str = "127.0.0.1", port: int = 7860, token: Optional[str] = None, allow_hosts=()
) -> StudioServer:
    return StudioServer(studio, host, port, token, allow_hosts)
