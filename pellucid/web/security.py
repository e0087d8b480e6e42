"""The page's security: the Host check (no DNS rebinding) and the headers every response carries."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class Guard:
    """ASGI middleware: refuse unexpected Host headers (DNS rebinding), add the security headers."""

    def __init__(self, app, allowed_hosts: tuple[str, ...]):
        self.app, self.allowed_hosts = app, allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if "*" not in self.allowed_hosts and host not in self.allowed_hosts:
            response = JSONResponse({"detail": f"unexpected Host header {host!r}"}, status_code=400)
            return await response(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                extra = MutableHeaders(scope=message)
                extra["Content-Security-Policy"] = CSP
                extra["X-Content-Type-Options"] = "nosniff"
                extra["Referrer-Policy"] = "no-referrer"
                if "cache-control" not in extra:
                    extra["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def host_name(header: str) -> str:
    """The host of a Host header, without the port (``[::1]:8000`` -> ``[::1]``)."""
    return header.split("]")[0] + "]" if header.startswith("[") else header.rsplit(":", 1)[0]


def allowed_hosts(host: str) -> tuple[str, ...]:
    """The Host headers to accept when serving on ``host``: any on a wildcard address, else local names."""
    return ("*",) if host in ("0.0.0.0", "::") else (*LOCAL_HOSTS, host, f"[{host}]")
