"""Where the Dask dashboard really is, how to reach it from a laptop, and who may open it.

Analysts on a login node cannot open the dashboard directly: they need the actual port (Dask picks another
one when 8787 is taken) and an ssh tunnel. We print both instead of leaving them to guess.

Loopback is not private on a shared login node: every account there can connect to 127.0.0.1 and read the
dashboard, the workers' pages and their logs. So the scheduler's web server of every cluster we start asks for
a secret made for the run, as Jupyter does: the printed URL carries it (`?token=...`), the first request with
it gets a cookie, and a request with neither the token nor the cookie is refused (403).

Also here: the performance report (--dask-report) on the distributed that coffea[dask-awkward] resolves to.
"""

from __future__ import annotations

import getpass
import hmac
import os
import secrets
import socket
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import distributed
from jinja2 import Environment, FileSystemLoader
from tornado import httputil

TUNNEL_LOCAL_PORT = 8000
TOKEN_PARAMETER = "token"
COOKIE = "coffea_dispatch_dashboard"
REPORT_BASE, RENAMED_REPORT_BASE = "file.html", "file.html.jinja"  # bokeh's page template, before and since 3.9


def dashboard_port(link: str) -> int | None:
    port = urlsplit(link).port
    return port


def on_remote_host(environ: dict[str, str] | None = None) -> bool:
    return bool((environ if environ is not None else os.environ).get("SSH_CONNECTION"))


def dashboard_lines(link: str, show_tunnel: bool = False, environ: dict[str, str] | None = None) -> list[str]:
    """The dashboard URL (with its token, if any); on a remote host (or when asked) also the exact ssh tunnel
    and the local URL."""
    lines = [f"Dask dashboard: {link}"]
    port = dashboard_port(link)
    if port is not None and (show_tunnel or on_remote_host(environ)):
        user = getpass.getuser()
        host = socket.getfqdn()
        query = f"?{urlsplit(link).query}" if urlsplit(link).query else ""
        lines.append(f"from your laptop: ssh -N -L {TUNNEL_LOCAL_PORT}:localhost:{port} {user}@{host}")
        lines.append(f"then open http://localhost:{TUNNEL_LOCAL_PORT}/status{query}")
    return lines


def with_token(link: str, token: str) -> str:
    return urlsplit(link)._replace(query=urlencode({TOKEN_PARAMETER: token})).geturl()


def require_token(http_server) -> str:
    """Make `http_server` (a scheduler's tornado server) answer only requests that carry a new secret; return it."""
    token = secrets.token_urlsafe(24)
    http_server.request_callback = TokenGate(http_server.request_callback, token)
    return token


class TokenGate(httputil.HTTPServerConnectionDelegate):
    """In front of the scheduler's web application: requests pass with the run's token (query `token=`, or the
    header `Authorization: token ...`) or the cookie that a request with the token is given; others get 403."""

    def __init__(self, application: httputil.HTTPServerConnectionDelegate, token: str):
        self.application = application
        self.token = token

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _GatedRequest(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.application.on_close(server_conn)

    def verdict(self, start_line, headers: httputil.HTTPHeaders) -> tuple[int, str] | None:
        """None to pass the request on; else (status, Location) for a login redirect or a refusal."""
        parts = urlsplit(start_line.path)
        query = dict(parse_qsl(parts.query))
        cookie = SimpleCookie(headers.get("Cookie", "")).get(COOKIE)
        authorization = headers.get("Authorization", "")
        if self._is_token(query.get(TOKEN_PARAMETER)):
            rest = urlencode({k: v for k, v in query.items() if k != TOKEN_PARAMETER})
            return 302, parts._replace(scheme="", netloc="", query=rest).geturl() or "/"
        if self._is_token(cookie.value if cookie else None) or self._is_token(authorization.removeprefix("token ")):
            return None
        return 403, ""

    def _is_token(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


class _GatedRequest(httputil.HTTPMessageDelegate):
    def __init__(self, gate: TokenGate, server_conn: object, request_conn: httputil.HTTPConnection):
        self.gate, self.server_conn, self.request_conn = gate, server_conn, request_conn
        self.inner: httputil.HTTPMessageDelegate | None = None
        self.answer: tuple[int, str] | None = None

    def headers_received(self, start_line, headers):
        self.answer = self.gate.verdict(start_line, headers)
        if self.answer is None:
            self.inner = self.gate.application.start_request(self.server_conn, self.request_conn)
            return self.inner.headers_received(start_line, headers)
        return None

    def data_received(self, chunk: bytes):
        return self.inner.data_received(chunk) if self.inner is not None else None

    def finish(self) -> None:
        if self.inner is not None:
            self.inner.finish()
            return
        status, location = self.answer
        headers = httputil.HTTPHeaders({"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"})
        if status == 302:
            headers["Location"] = location
            headers["Set-Cookie"] = f"{COOKIE}={self.gate.token}; Path=/; HttpOnly; SameSite=Strict"
            body = b""
        else:
            body = b"this Dask dashboard needs the URL with the token that coffea-dispatch printed\n"
        headers["Content-Length"] = str(len(body))
        reason = "Found" if status == 302 else "Forbidden"
        self.request_conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", status, reason), headers, body)
        self.request_conn.finish()

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()


class _BaseUnderOldName(FileSystemLoader):
    """bokeh's templates, with the page template also under the name it had before bokeh 3.9."""

    def get_source(self, environment: Environment, template: str):
        if template == REPORT_BASE:
            return f'{{% extends "{RENAMED_REPORT_BASE}" %}}', None, lambda: True
        return super().get_source(environment, template)


def report_template_compatible() -> None:
    """distributed 2025.3.1 (what coffea[dask-awkward] resolves to) renders the performance report from a
    template extending bokeh's "file.html", which bokeh 3.9 (coffea[dask-awkward] takes bokeh up to 3.9) renamed
    "file.html.jinja": --dask-report failed with TemplateNotFound. Later distributed (2026.8) ships a "file.html"
    of its own; where it does not, the one template environment bokeh keeps per process (the scheduler of every
    cluster we start runs in this process) finds the page under its old name again."""
    from bokeh.core.templates import get_env

    environment = get_env()
    loader = environment.loader
    if not isinstance(loader, FileSystemLoader) or isinstance(loader, _BaseUnderOldName):
        return
    shipped = Path(distributed.__file__).parent / "dashboard" / "templates" / REPORT_BASE
    names = loader.list_templates()
    if REPORT_BASE in names or RENAMED_REPORT_BASE not in names or shipped.exists():
        return
    environment.loader = _BaseUnderOldName(loader.searchpath, loader.encoding, loader.followlinks)
