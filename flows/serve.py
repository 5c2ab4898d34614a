"""`edgetune serve`: personalized answers over HTTP, in the OpenAI chat-completions convention.

Every answered turn goes back into the selection stream as a conversation event
(``flows/turns.py``); feedback becomes an annotation. One generation worker thread runs
the model, so the event loop stays free to accept, refuse and stream.

The JSON contract (errors are ``{"error": {"message", "type", "code"}}`` with the HTTP status):

``POST /v1/chat/completions``
    Body: ``{"model": "<served model id>", "messages": [{"role": "user", "content": "..."}],
    "user": "<user id>", "stream": false, "max_tokens": 64}``. ``user`` is required: it
    selects the adapter (the user's latest promoted version, else the base model). The
    last message must be the user's; it is answered as a single user turn, with the
    chat template and greedy decoding of ``edgetune generate`` (earlier messages are not
    context: adapters are trained on single turns). ``content`` may be a string or a list
    of ``{"type": "text", "text": ...}`` parts. ``max_tokens`` (or
    ``max_completion_tokens``) is capped at ``serve.max_tokens``; sampling fields
    (``temperature``, ``top_p``, ...) are accepted and ignored. Answer: an OpenAI
    ``chat.completion`` whose ``id`` is the served turn's ``event_id``, plus
    ``"adapter_version": N | null`` (null: the base model answered); the same in
    ``system_fingerprint`` (``edgetune-base`` / ``edgetune-vN``) and, on plain answers, in the
    header ``X-Edgetune-Adapter-Version`` (``base`` or ``N``). With ``"stream": true``: server-sent events,
    ``chat.completion.chunk`` objects (each with the turn's ``id`` and ``adapter_version``; the last with
    ``finish_reason`` and ``usage``), then ``data: [DONE]``;
    the turn is emitted once the whole answer is generated (a client that disconnects
    first stops the generation, and nothing is emitted). 429 with ``Retry-After`` when
    ``serve.max_queue`` requests already wait; 503 when the turn could not be recorded, or the
    user's latest adapter is refused (integrity, ``models/adapters.py``: never silently replaced
    by another version) or the store's ``latest`` pointer is unreadable; a stream reports these
    as a last ``data: {"error": ...}`` event.

``GET /v1/models?user=<id>``
    ``{"object": "list", "data": [{"id": "<model>", "object": "model", "owned_by": "edgetune",
    "user": "<id>" | null, "adapter_version": N | null}]}``: the one served model, and which
    adapter version answers that user now.

``POST /v1/feedback``
    ``{"user": "<id>", "id": "<completion id>", "rating": "up" | "down" | null, "preferred": "<text>" | null}``
    → ``{"id", "annotation": true | false, "reason": "..."}``. The rule (``flows.turns.feedback_annotation``):
    a preferred answer becomes the turn's annotation; a thumbs-up alone makes the answer
    given the annotation (404 if the server no longer remembers that turn:
    ``serve.recent_turns``, or it was another user's); a thumbs-down alone makes none.
    The stream's join attaches an annotation only if the turn is in the user's buffer.

``GET /v1/annotation-requests?user=<id>``
    ``{"user": "<id>", "requests": [{"id": "<event id>", "prompt": "...", "ts_ms": N}]}``: that
    user's open annotation requests, i.e. buffered samples with no answer, read from the
    buffer snapshot the stream writes (``<output.dir>/buffers``, at most
    ``output.flush_seconds`` old); requests answered through this server since are left out.

``POST /v1/annotation-requests/{id}/answer``
    ``{"user": "<id>", "response": "<text>"}`` → ``{"id", "annotation": true}``; 404 unless
    ``id`` is an open request of that user.

``GET /healthz`` → ``{"status": "ok"}`` (no token needed).

``GET /`` → the chat page (``flows/page.py``; no token needed: it holds no data).

Trust model. The server binds 127.0.0.1 by default; there, without ``serve.token``, every
local process may act as any user, as it may read the output folder anyway. With a token
(required for any other address), every request but ``/healthz`` carries
``Authorization: Bearer <token>``: either the server token, which may act for any user
(the device owner's tools), or a user token, ``user_token(server token, user)``
(``edgetune serve --print-user-token USER``), which may act only as that user: a request
whose ``user`` differs is refused with 403, so with user tokens a request reads and
answers only its own user's annotation requests. Bodies larger than
``serve.max_request_bytes`` are refused with 413; a message longer than ``max_chars``
with 400. No prompt, answer or feedback text is logged at INFO or above.
"""


import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from operators import metrics
from operators.config import Settings
from operators.files import user_file_name

log = logging.getLogger(__name__)

__all__ = ["Server", "build_app", "user_token"]


def user_token(server_token: str, user: str) -> str:
    """The bearer token that lets a client act as ``user`` only (HMAC-SHA256 of the id under the server token).

    >>> user_token("s" * 32, "ann") == user_token("s" * 32, "ann") != user_token("s" * 32, "bob")
    True
    """
    return "u-" + hmac.new(server_token.encode(), user.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


@dataclass
class _Turn:
    user: str
    answer: str


class _Cancelled(Exception):
    """The client went away: stop generating."""


class Server:
    """What the HTTP routes call: the adapter pool on one worker thread, the queue bound, the turn emitter.

    ``pool`` is a :class:`models.serving.AdapterPool`; ``emitter`` a ``flows.turns`` emitter.
    """

    def __init__(self, settings: Settings, pool: Any, emitter: Any):
        from models.configure import generate_config

        self.settings = settings
        self.pool = pool
        self.emitter = emitter
        self.model_id = settings.model.lm
        self.gen = generate_config(settings)
        self.max_tokens = settings.serve.max_tokens or settings.generate.max_new_tokens
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgetune-generate")
        self._slots = settings.serve.max_queue + 1  # the one running plus those waiting
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._turns: OrderedDict[str, _Turn] = OrderedDict()  # event_id -> turn, for feedback (bounded)
        self._answered: OrderedDict[tuple[str, str], None] = OrderedDict()  # (user, event_id) answered here
        self._memory_lock = threading.Lock()

    # --- the queue bound ------------------------------------------------------------

    def admit(self) -> None:
        with self._busy_lock:
            if self._busy >= self._slots:
                raise ApiError(429, f"the server is busy: {self._slots - 1} requests already wait for the "
                               "generation worker (serve.max_queue); retry shortly", "overloaded",
                               {"Retry-After": "1"})
            self._busy += 1
            metrics.SERVE_QUEUE.set(self._busy)

    def release(self) -> None:
        with self._busy_lock:
            self._busy -= 1
            metrics.SERVE_QUEUE.set(self._busy)

    # --- generation (runs on the worker thread) ----------------------------------------

    def _answer(self, event_id: str, user: str, prompt: str, max_tokens: int, on_text: Any, started: float,
                first: list[float], on_version: Any = None) -> tuple[Any, dict[str, Any]]:
        """Generate, then emit the turn; returns (Answer, event). Errors come out as ``ApiError``."""
        try:
            return self._answer_raw(event_id, user, prompt, max_tokens, on_text, started, first, on_version)
        except (ApiError, _Cancelled):
            raise
        except Exception as exc:
            raise _as_api_error(exc) from exc

    def _answer_raw(self, event_id: str, user: str, prompt: str, max_tokens: int, on_text: Any, started: float,
                    first: list[float], on_version: Any) -> tuple[Any, dict[str, Any]]:
        from dataclasses import replace

        def timed(text: str) -> None:
            if not first:
                first.append(time.perf_counter() - started)
            if on_text is not None:
                on_text(text)

        config = replace(self.gen, max_new_tokens=max_tokens)
        try:
            version = self.pool.latest(user)  # read once: the version named to the client is the one that answers
        except ValueError as exc:  # a corrupt latest pointer
            log.error("the adapter store cannot say which adapter answers a user: %s", exc)
            raise ApiError(503, f"the adapter store cannot say which adapter answers this user: {exc}",
                           "adapter_store_error") from exc
        if on_version is not None:
            on_version(version)
        answer = self.pool.answer(user, prompt, config, on_text=timed, version=version)
        metrics.record_served(answer, self.pool.resident())
        if first:
            metrics.SERVE_TTFT_SECONDS.observe(first[0])
        from flows.turns import served_event

        event = served_event(event_id, user, prompt, answer.text, answer.version, self.model_id)
        try:
            self.emitter.emit_event(event)
        except Exception as exc:  # the broker or the disk: the answer exists but is not recorded
            metrics.SERVE_TURNS.labels(outcome="failed").inc()
            log.error("could not record a served turn (%s): %s", type(exc).__name__, exc)
            raise ApiError(503, f"the answer could not be recorded as a conversation event ({type(exc).__name__}); "
                           "retry", "turn_not_recorded") from exc
        metrics.SERVE_TURNS.labels(outcome="emitted").inc()
        self._remember(event_id, user, answer.text)
        return answer, event

    async def complete(self, event_id: str, user: str, prompt: str,
                       max_tokens: int) -> tuple[Any, dict[str, Any], float | None]:
        """Answer in full; returns (Answer, event, seconds to first token)."""
        loop = asyncio.get_running_loop()
        started, first = time.perf_counter(), []

        def run() -> tuple[Any, dict[str, Any]]:
            try:
                return self._answer(event_id, user, prompt, max_tokens, None, started, first)
            finally:
                self.release()  # here, not in the handler: a client that leaves does not free the worker

        answer, event = await loop.run_in_executor(self._worker, run)
        return answer, event, first[0] if first else None

    def stream(self, event_id: str, user: str, prompt: str,
               max_tokens: int) -> tuple[asyncio.Queue, threading.Event]:
        """Start generating on the worker; text pieces arrive on the queue, then ``("done", (answer, event))``
        or ``("error", exc)``. Set the event to stop early."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        started, first = time.perf_counter(), []

        def on_text(text: str) -> None:
            if cancel.is_set():
                raise _Cancelled()
            loop.call_soon_threadsafe(queue.put_nowait, ("text", text))

        def run() -> None:
            try:
                if cancel.is_set():  # gone while waiting for the worker
                    raise _Cancelled()
                result = self._answer(event_id, user, prompt, max_tokens, on_text, started, first,
                                      lambda v: loop.call_soon_threadsafe(queue.put_nowait, ("version", v)))
                loop.call_soon_threadsafe(queue.put_nowait, ("done", result))
            except _Cancelled:
                metrics.SERVE_TURNS.labels(outcome="cancelled").inc()
                loop.call_soon_threadsafe(queue.put_nowait, ("error", ApiError(499, "client went away", "cancelled")))
            except BaseException as exc:  # noqa: BLE001 - handed to the response
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            finally:
                self.release()

        self._worker.submit(run)
        return queue, cancel

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        self.emitter.close()

    # --- feedback and annotation requests --------------------------------------------

    def _remember(self, event_id: str, user: str, answer: str) -> None:
        with self._memory_lock:
            self._turns[event_id] = _Turn(user, answer)
            while len(self._turns) > self.settings.serve.recent_turns:
                self._turns.popitem(last=False)

    def served_answer(self, event_id: str, user: str) -> str | None:
        with self._memory_lock:
            turn = self._turns.get(event_id)
        return turn.answer if turn is not None and turn.user == user else None

    def annotate(self, annotation: dict[str, Any]) -> None:
        try:
            self.emitter.emit_annotation(annotation)
        except Exception as exc:
            log.error("could not record an annotation (%s): %s", type(exc).__name__, exc)
            raise ApiError(503, f"the answer could not be recorded ({type(exc).__name__}); retry",
                           "annotation_not_recorded") from exc
        with self._memory_lock:
            self._answered[(annotation["user_id"], annotation["event_id"])] = None
            while len(self._answered) > self.settings.serve.recent_turns:
                self._answered.popitem(last=False)

    def open_requests(self, user: str) -> list[dict[str, Any]]:
        """The user's buffered samples without an answer, from the stream's last buffer snapshot."""
        path = self.settings.output.dir / "buffers" / f"{user_file_name(user)}.json"
        try:
            view = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ApiError(500, f"the buffer snapshot of this user cannot be read ({type(exc).__name__})",
                           "snapshot_unreadable") from exc
        if view.get("user_id") != user:
            return []
        with self._memory_lock:
            answered = {e for (u, e) in self._answered if u == user}
        return [{"id": s["event_id"], "prompt": s["prompt"], "ts_ms": s.get("ts_ms")}
                for s in view.get("samples", []) if s.get("response") is None and s["event_id"] not in answered]


# --- the HTTP layer -------------------------------------------------------------------------


def build_app(server: Server) -> Any:
    """The FastAPI application over ``server``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field
    from sse_starlette.sse import EventSourceResponse

    settings = server.settings
    token = settings.serve.token.get_secret_value() if settings.serve.token is not None else None

    class Message(BaseModel):
        model_config = ConfigDict(extra="allow")
        role: str
        content: str | list[dict[str, Any]] | None = None

    class ChatRequest(BaseModel):
        model_config = ConfigDict(extra="allow")  # sampling knobs and the like: accepted, ignored
        model: str
        messages: list[Message] = Field(min_length=1)
        user: str = Field(min_length=1, max_length=256)
        stream: bool = False
        max_tokens: int | None = Field(None, ge=1)
        max_completion_tokens: int | None = Field(None, ge=1)

    class Feedback(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user: str = Field(min_length=1, max_length=256)
        id: str = Field(min_length=1, max_length=256)
        rating: Literal["up", "down"] | None = None
        preferred: str | None = Field(None, min_length=1)

    class AnswerBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user: str = Field(min_length=1, max_length=256)
        response: str = Field(min_length=1)

    app = FastAPI(title="edgetune", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_BodyLimit, max_bytes=settings.serve.max_request_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"invalid request: {where}: {first.get('msg', 'bad value')}", "invalid_request_error")

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        start = time.perf_counter()
        route = _route(request.url.path)
        try:
            response = await call_next(request)
        except Exception:
            metrics.SERVE_REQUESTS.labels(route=route, status="500").inc()
            raise
        metrics.SERVE_REQUESTS.labels(route=route, status=str(response.status_code)).inc()
        if route == "/v1/chat/completions" and response.status_code == 200 and not _is_stream(response):
            metrics.SERVE_SECONDS.labels(mode="plain").observe(time.perf_counter() - start)
        return response

    def authorize(request: Request, user: str | None) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise ApiError(401, "missing bearer token (Authorization: Bearer ...)", "unauthorized",
                           {"WWW-Authenticate": "Bearer"})
        if secrets.compare_digest(value.encode(), token.encode()):
            return
        if user is not None and secrets.compare_digest(value.encode(), user_token(token, user).encode()):
            return
        raise ApiError(403 if value.startswith("u-") else 401,
                       "this token may not act for this user" if value.startswith("u-") else "invalid bearer token",
                       "forbidden" if value.startswith("u-") else "unauthorized")

    from flows.page import add_page_route

    add_page_route(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request, user: str | None = None) -> dict[str, Any]:
        authorize(request, user)
        version = server.pool.latest(user) if user else None
        return {"object": "list", "data": [{"id": server.model_id, "object": "model", "created": 0,
                                            "owned_by": "edgetune", "user": user, "adapter_version": version}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request, body: ChatRequest) -> Any:
        authorize(request, body.user)
        if body.model != server.model_id:
            raise ApiError(404, f"model {body.model!r} is not served here; this server serves {server.model_id!r} "
                           "(GET /v1/models)", "model_not_found")
        prompt = _prompt(body.messages, settings.max_chars)
        asked = body.max_completion_tokens or body.max_tokens or server.max_tokens
        max_tokens = min(asked, server.max_tokens)
        server.admit()
        event_id = f"chatcmpl-{uuid.uuid4().hex}"  # the completion id is the served turn's event_id
        if not body.stream:
            answer, event, _ = await server.complete(event_id, body.user, prompt, max_tokens)
            payload = _completion(event, answer, server.model_id, max_tokens)
            return JSONResponse(payload, headers=_adapter_header(answer.version))
        queue, cancel = server.stream(event_id, body.user, prompt, max_tokens)
        return EventSourceResponse(_chunks(event_id, queue, cancel, server, max_tokens), ping=15)

    @app.post("/v1/feedback")
    async def feedback(request: Request, body: Feedback) -> dict[str, Any]:
        from flows.turns import feedback_annotation

        authorize(request, body.user)
        if body.rating is None and body.preferred is None:
            raise ApiError(400, "feedback needs a rating (up or down) or a preferred answer", "invalid_request_error")
        if body.preferred is not None and len(body.preferred) > settings.max_chars:
            raise ApiError(400, f"preferred is longer than max_chars={settings.max_chars}", "invalid_request_error")
        kind = "preferred" if body.preferred is not None else body.rating
        served = server.served_answer(body.id, body.user)
        if body.preferred is None and body.rating == "up" and served is None:
            raise ApiError(404, f"no served turn {body.id!r} of this user is remembered (the server keeps the last "
                           f"serve.recent_turns={settings.serve.recent_turns}); send a preferred answer instead",
                           "turn_not_found")
        if body.preferred is None and body.rating == "up" and not served.strip():
            raise ApiError(409, "the answer given was empty, so it cannot be the reference; send a preferred answer",
                           "empty_answer")
        annotation = feedback_annotation(body.id, body.user, body.rating, body.preferred, served)
        if annotation is None:
            metrics.SERVE_FEEDBACK.labels(kind=kind, outcome="no_annotation").inc()
            return {"id": body.id, "annotation": False,
                    "reason": "a thumbs-down without a preferred answer makes no annotation; the request stays open"}
        await asyncio.get_running_loop().run_in_executor(None, server.annotate, annotation)
        metrics.SERVE_FEEDBACK.labels(kind=kind, outcome="annotation").inc()
        return {"id": body.id, "annotation": True,
                "reason": "the preferred answer" if body.preferred is not None else "the answer given (thumbs-up)"}

    @app.get("/v1/annotation-requests")
    async def requests_of(request: Request, user: str) -> dict[str, Any]:
        authorize(request, user)
        return {"user": user, "requests": server.open_requests(user)}

    @app.post("/v1/annotation-requests/{event_id}/answer")
    async def answer_request(request: Request, event_id: str, body: AnswerBody) -> dict[str, Any]:
        from flows.turns import feedback_annotation

        authorize(request, body.user)
        if len(body.response) > settings.max_chars:
            raise ApiError(400, f"response is longer than max_chars={settings.max_chars}", "invalid_request_error")
        if event_id not in {r["id"] for r in server.open_requests(body.user)}:
            raise ApiError(404, f"{event_id!r} is not an open annotation request of this user", "request_not_found")
        annotation = feedback_annotation(event_id, body.user, None, body.response, None)
        await asyncio.get_running_loop().run_in_executor(None, server.annotate, annotation)
        metrics.SERVE_FEEDBACK.labels(kind="request_answer", outcome="annotation").inc()
        return {"id": event_id, "annotation": True}

    return app


_ROUTES = ("/", "/healthz", "/v1/models", "/v1/chat/completions", "/v1/feedback", "/v1/annotation-requests")


def _route(path: str) -> str:
    """The metrics label of a path: one of the routes, never an id (bounded cardinality).

    >>> _route("/v1/chat/completions"), _route("/v1/annotation-requests/e1/answer"), _route("/etc/passwd")
    ('/v1/chat/completions', '/v1/annotation-requests/{id}/answer', 'other')
    """
    if path in _ROUTES:
        return path
    if path.startswith("/v1/annotation-requests/") and path.endswith("/answer"):
        return "/v1/annotation-requests/{id}/answer"
    return "other"


def _is_stream(response: Any) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                        headers=headers)


def _prompt(messages: list[Any], max_chars: int) -> str:
    last = messages[-1]
    if last.role != "user":
        raise ApiError(400, f"the last message must be the user's (role 'user'), not {last.role!r}",
                       "invalid_request_error")
    content = last.content
    if isinstance(content, list):
        if any(part.get("type") != "text" for part in content):
            raise ApiError(400, "only text content parts are supported", "invalid_request_error")
        content = "".join(str(part.get("text", "")) for part in content)
    if not content or not content.strip():
        raise ApiError(400, "the user's message is empty", "invalid_request_error")
    if len(content) > max_chars:
        raise ApiError(400, f"the user's message has {len(content)} characters; at most max_chars={max_chars}",
                       "invalid_request_error")
    return content


def _as_api_error(exc: Exception) -> ApiError:
    """What the client is told when answering failed; the log gets the detail (no conversation text in it)."""
    from models.adapters import AdapterIntegrityError, AdapterNotAppliedError

    if isinstance(exc, (AdapterIntegrityError, AdapterNotAppliedError)):
        log.error("the user's latest adapter was refused: %s", exc)
        return ApiError(503, f"this user's latest adapter is refused ({exc}); it is not replaced by another version "
                        "silently: `edgetune adapters rollback --user USER` withdraws it", "adapter_refused")
    log.exception("answering failed")
    return ApiError(500, f"answering failed ({type(exc).__name__}); see the server log", "server_error")


def _adapter_header(version: int | None) -> dict[str, str]:
    return {"X-Edgetune-Adapter-Version": "base" if version is None else str(version)}


def _fingerprint(version: int | None) -> str:
    return "edgetune-base" if version is None else f"edgetune-v{version}"


def _finish(answer: Any, max_tokens: int) -> str:
    return "length" if answer.n_tokens >= max_tokens else "stop"


def _completion(event: dict[str, Any], answer: Any, model_id: str, max_tokens: int) -> dict[str, Any]:
    return {
        "id": event["event_id"], "object": "chat.completion", "created": event["ts"] // 1000, "model": model_id,
        "system_fingerprint": _fingerprint(answer.version), "adapter_version": answer.version,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                     "finish_reason": _finish(answer, max_tokens)}],
        "usage": {"prompt_tokens": answer.n_prompt_tokens, "completion_tokens": answer.n_tokens,
                  "total_tokens": answer.n_prompt_tokens + answer.n_tokens},
    }


async def _chunks(event_id: str, queue: asyncio.Queue, cancel: threading.Event, server: Server,
                  max_tokens: int) -> Any:
    """The SSE events of one streamed answer; every chunk's id is the served turn's event_id.

    The first chunk waits for the worker to say which adapter version answers (it may wait in the queue)."""
    created = int(time.time())
    version = None
    started = time.perf_counter()

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return json.dumps({"id": event_id, "object": "chat.completion.chunk", "created": created,
                           "model": server.model_id, "system_fingerprint": _fingerprint(version),
                           "adapter_version": version, **extra,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}, ensure_ascii=False)

    try:
        leading = True
        while True:
            kind, value = await queue.get()
            if kind == "version":
                version = value
                yield {"data": chunk({"role": "assistant", "content": ""})}
            elif kind == "text":
                text = value.lstrip() if leading else value  # generate() strips the answer; so does the stream
                if text:
                    leading = False
                    yield {"data": chunk({"content": text})}
            elif kind == "done":
                answer, event = value
                version = answer.version
                metrics.SERVE_SECONDS.labels(mode="stream").observe(time.perf_counter() - started)
                yield {"data": chunk({}, _finish(answer, max_tokens),
                                     usage={"prompt_tokens": answer.n_prompt_tokens,
                                            "completion_tokens": answer.n_tokens,
                                            "total_tokens": answer.n_prompt_tokens + answer.n_tokens})}
                yield {"data": "[DONE]"}
                return
            else:
                exc = value
                message = exc.message if isinstance(exc, ApiError) else f"generation failed ({type(exc).__name__})"
                if not isinstance(exc, ApiError):
                    log.error("streamed generation failed: %s: %s", type(exc).__name__, exc)
                yield {"data": json.dumps({"error": {"message": message, "type": getattr(exc, "kind", "server_error"),
                                                     "code": getattr(exc, "status", 500)}})}
                return
    finally:
        cancel.set()  # a client that went away stops the generation at its next token


class _BodyLimit:
    """Pure ASGI middleware: refuse a body over ``max_bytes`` with 413, by its Content-Length or as it arrives.

    The body is read here (at most ``max_bytes`` of it are ever held) and handed on whole, so a chunked
    upload without a Content-Length is cut off at the limit too.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_big = length is not None and (not length.isdigit() or int(length) > self.max_bytes)
        chunks, seen, more = [], 0, not too_big
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                too_big = True
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        if too_big:
            metrics.SERVE_REQUESTS.labels(route="other", status="413").inc()
            await _error(413, f"request body over serve.max_request_bytes={self.max_bytes}", "request_too_large")(
                scope, receive, send)
            return
        body = b"".join(chunks)
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as the server would

        await self.app(scope, replay, send)


# --- running it -----------------------------------------------------------------------------


def make_server(settings: Settings) -> Server:
    """Load the model (the server's own copy) and the adapter store; open the turn emitter."""
    from flows.turns import emitter_for
    from models.adapters import AdapterStore
    from models.configure import load_model
    from models.serving import AdapterPool

    model, tokenizer = load_model(settings)
    pool = AdapterPool(model, tokenizer, AdapterStore(settings.adapters_dir), settings.serve.max_resident)
    return Server(settings, pool, emitter_for(settings))


def uvicorn_server(app: Any, settings: Settings) -> Any:
    import uvicorn

    config = uvicorn.Config(app, host=settings.serve.host, port=settings.serve.port, access_log=False,
                            log_level="warning", timeout_graceful_shutdown=5, limit_concurrency=256)
    return uvicorn.Server(config)


def bound_port(server: Any) -> int:
    """The port a started uvicorn server listens on (``serve.port`` 0 picks one)."""
    return server.servers[0].sockets[0].getsockname()[1]


def wait_started(server: Any, thread: threading.Thread, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise ValueError("the HTTP server did not start (port in use? see the log above)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the HTTP server did not start within {timeout:.0f} s")
        time.sleep(0.05)


def run(settings: Settings, args: Any = None) -> int:
    """`edgetune serve`: the server alone, or (``serve.with_stream``) with the spool or Kafka stream in-process."""
    from flows import stop
    from flows.turns import emit_target
    from operators.files import private_mkdir

    private_mkdir(settings.output.dir)
    metrics.serve(settings.metrics.port, settings.metrics.addr)
    log.info("loading model %s for serving", settings.model.lm)
    server = make_server(settings)
    http = uvicorn_server(build_app(server), settings)
    thread = threading.Thread(target=http.run, name="edgetune-http", daemon=True)
    thread.start()
    try:
        wait_started(http, thread)
        where = emit_target(settings)
        print(f"edgetune serve: http://{settings.serve.host}:{bound_port(http)}/v1 (model {server.model_id}; served "
              f"turns to the {where}{'' if where == 'kafka' else ' ' + str(settings.spool_dir)})", flush=True)
        if settings.serve.with_stream:
            _run_stream(settings, args, where)
        else:
            stop.install_handlers()
            while not stop.stopping() and thread.is_alive():
                time.sleep(0.2)
    finally:
        http.should_exit = True
        thread.join(timeout=15)
        server.close()
    return stop.EXIT_STOPPED if stop.stopping() else 0


def _run_stream(settings: Settings, args: Any, where: str) -> None:
    """The selection stream and training in this process's main thread, reading what the server emits."""
    from flows import stop
    from flows.cli import _execute
    from flows.selection import build_components
    from flows.trainer import finish as finish_training
    from flows.trainer import trainer_for

    stop.install_handlers()
    components = build_components(settings)
    if where == "kafka":
        from flows.kafka_flow import build_flow
    else:
        from flows.spool import build_flow
    trainer = trainer_for(settings, components)
    flow = build_flow(settings, components, None, trainer)
    try:
        _execute(flow, settings, args)
    finally:
        if trainer is not None:  # a stop leaves the queue journaled, as in `edgetune run`
            finish_training(trainer.service)
