"""The chat page `edgetune serve` serves at ``/``: one static HTML file (``flows/static/index.html``).

The page is plain HTML, CSS and JavaScript with no build step and nothing fetched from
elsewhere; it uses the server's own ``/v1`` API as any client would: chat streamed over
``/v1/chat/completions`` (showing which adapter version answered), thumbs up or down and
a better answer through ``/v1/feedback``, and the user's open annotation requests,
answered in place.

Trust model of the page. The page itself holds no data, so it is served without a
token. Who the user is comes from the page's user field or the URL fragment
(``/#user=ann``; a fragment never reaches the server or its logs). When the server has
a token, the page asks for it once and keeps it in ``sessionStorage``: this tab only,
gone when the tab closes, never in the URL (a ``token=`` in the fragment is ignored and
removed). The server decides what the token may do: a user token
(``edgetune serve --print-user-token ann``) lets the page act only as that user, so
typing another user id gets 403; the server token acts for anyone and belongs to the
device owner. On loopback without a token every local process may act as any user, as
the API itself allows. The page inserts all text as text, never as HTML, and is sent
with a Content-Security-Policy that allows only its own inline script and style (by
hash) and requests to this origin, so injected markup could neither run nor send
anything elsewhere.

>>> body, headers = page()
>>> b"<title>edgetune</title>" in body, "script-src 'sha256-" in headers["Content-Security-Policy"]
(True, True)
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["PAGE", "add_page_route", "page"]

PAGE = Path(__file__).with_name("static") / "index.html"


def _hashes(html: str, tag: str) -> list[str]:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
    if not blocks:
        raise ValueError(f"{PAGE} has no inline <{tag}>")
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks]


@lru_cache(maxsize=1)
def page() -> tuple[bytes, dict[str, str]]:
    """The page's bytes and the headers it is sent with (its CSP names its inline script and style by hash)."""
    html = PAGE.read_text(encoding="utf-8")
    csp = "; ".join([
        "default-src 'none'",
        "script-src " + " ".join(_hashes(html, "script")),
        "style-src " + " ".join(_hashes(html, "style")),
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    return html.encode("utf-8"), {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
                                  "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def add_page_route(app: Any) -> None:
    """``GET /``: the chat page (no token needed: it holds no data; every API call it makes needs one)."""
    from fastapi.responses import Response

    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        body, headers = page()
        return Response(body, media_type="text/html; charset=utf-8", headers=headers)
