"""Turning UI views into HTML responses: templates, error pages, redirects, security headers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    pass_context,
    select_autoescape,
)
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from agent.display import LAYOUT, visible
from agent.events import match_kind
from server.errors import CollectorError
from server.ui.matches import rule_labels
from server.ui.session import CSRF_FIELD, LoginRequired, login_url

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
# No inline script or style anywhere: the one stylesheet and script come from /ui/static.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
TITLES = {401: "Not logged in", 403: "Not allowed", 404: "Not found", 409: "Conflict", 413: "Too large", 422: "Cannot do that", 429: "Too many attempts"}


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value)


def when(value: str | None) -> str:
    """An API timestamp as people read it: ``2026-11-24 09:00:05`` (UTC)."""
    moment = _parse_time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "—"


@pass_context
def ago(context: Mapping[str, Any], value: str | None) -> str:
    moment = _parse_time(value)
    if moment is None:
        return "never"
    seconds = int((context["now"] - moment).total_seconds())
    if seconds < 0:
        return "in the future"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))


def thousands(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _html_mark(char: str) -> str:
    return f"&lt;U+{ord(char):04X}&gt;"


def shown(value: Any) -> Markup:
    """What every ``{{ ... }}`` writes: the value HTML-escaped, its hidden characters as ``<U+202E>`` marks.

    The environment's ``finalize``, so no template can forget it: agents choose paths,
    host names and labels, and a bidi override in one would reverse what the reviewer
    reads (``invoice<U+202E>gpj.exe`` shows as ``invoiceexe.jpg``) and spill into the
    text after it. Markup (a macro's output, ``join``) is marked too: the characters
    are never part of HTML syntax, so replacing them cannot break the markup. Tab and
    line breaks stay, for comments. A plain mark, not a styled element, as the same
    value may sit in an attribute (``title``, ``value``).
    """
    return Markup(visible(str(escape(value)), keep=LAYOUT, mark=_html_mark))


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"], default=True),
        undefined=StrictUndefined,
        finalize=shown,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, ago=ago, compact_json=compact_json, thousands=thousands, match_kind=match_kind, rule_labels=rule_labels)
    env.globals.update(csrf_field=CSRF_FIELD)
    return env


templates = _environment()


def render(request: Request, name: str, context: Mapping[str, Any] | None = None, *, status: int = 200) -> HTMLResponse:
    """A page; every template sees ``viewer`` (None on the login and some error pages), ``now`` and ``path``."""
    collector = request.app.state.collector
    values = {
        "viewer": getattr(request.state, "viewer", None),
        "now": collector.clock(),
        "path": request.url.path,
        **(context or {}),
    }
    return HTMLResponse(templates.get_template(name).render(values), status_code=status)


def redirect(url: str) -> RedirectResponse:
    """After a POST: the browser fetches ``url`` with GET, so a reload never resends the form."""
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", {"status": status, "title": TITLES.get(status, "Something went wrong"), "message": message}, status=status)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ())[1:]) or "request"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "the request is not valid"


class UiRoute(APIRoute):
    """Routes of the UI answer in HTML: a login redirect, or an error page instead of JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as exc:
                return redirect(login_url(exc.next_url))
            except CollectorError as exc:
                return error_page(request, exc.status_code, str(exc))
            except RequestValidationError as exc:
                return error_page(request, 422, _validation_message(exc))

        return page


class UiHeaders:
    """Security headers on every UI response; pages are never cached, the static files briefly."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != "/" and not path.startswith("/ui"):
            await self.app(scope, receive, send)
            return
        caching = b"private, max-age=300" if path.startswith("/ui/static/") else b"no-store"

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                headers += [(k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()]
                headers.append((b"cache-control", caching))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
