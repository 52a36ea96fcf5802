"""HTTP for :class:`~manyicl.serve.service.Service`: FastAPI routes, the request guard, error bodies.

Every error is JSON ``{"error": {"code", "message", "field"?, "problems"?}}`` with a status that says
what to do (401 key, 403 folder outside the allowed roots, 404 unknown task, 409 name taken, 413 too
large, 422 invalid, 429 queue full, 503 unavailable, 504 timeout); no traceback ever reaches a client.
The OpenAPI schema is at ``/openapi.json`` and browsable at ``/docs``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
import typing
from dataclasses import fields
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..configio import field_docs
from ..errors import ManyICLError, ProblemsError
from .config import ServeConfig, TaskSettings
from .errors import ServeError
from .service import Service, load_for_serving

log = logging.getLogger(__name__)

OPEN_PATHS = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
"""Answered without the API key: load-balancer probes and the (secret-free) API description."""


# --------------------------------------------------------------------------------------------
# Request bodies (the OpenAPI schema is generated from these)
# --------------------------------------------------------------------------------------------
# Strict types: ``true`` or ``"1"`` is not taken for the integer 1, nor ``1`` for ``true`` (a request
# with ``shots: true`` was served a one-shot prompt); config files refuse them the same way.


def _settings_model() -> type[BaseModel]:
    """Every :class:`TaskSettings` field, optional, documented with the field's docstring."""
    hints = typing.get_type_hints(TaskSettings)
    docs = field_docs(TaskSettings)
    spec: dict[str, Any] = {
        f.name: (hints[f.name] | None, Field(None, description=docs.get(f.name)))
        for f in fields(TaskSettings)
    }
    return create_model("TaskSettings", __config__=ConfigDict(extra="forbid", strict=True), **spec)


SettingsIn = _settings_model()


class ExampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    input: str
    output: str
    options: list[str] | None = Field(
        None, description="answer options of this example (default: the labels)"
    )


class RegisterIn(BaseModel):
    """A task folder on the server (``path``) or the task itself (``examples`` + template)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = Field(None, description="task name (folder tasks: default from task.yaml)")
    path: str | None = Field(None, description="a task folder under one of the server's allowed roots")
    category: str | None = Field(None, description="inline: cls, nli, qa, mlcls, sum, math or other")
    metric: str | None = Field(None, description="inline: default from the category")
    labels: list[str] | None = Field(None, description="inline: the label set (option scoring)")
    template: dict[str, str] | None = Field(
        None, description="inline: Template fields (instruction, input_prefix, output_prefix, ...)"
    )
    description: str | None = None
    examples: list[ExampleIn] | None = Field(None, description="inline: the demonstration pool")
    settings: SettingsIn | None = Field(None, description="prompt settings (server defaults otherwise)")  # type: ignore[valid-type]
    replace: bool = Field(False, description="rebuild a task that is already registered under this name")


class PredictIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    inputs: list[str] | None = Field(None, description="inputs to answer (or input: one)")
    input: str | None = None
    options: list[str] | None = Field(
        None, description="answer options for every input (default: the task's labels)"
    )
    timeout_s: float | None = Field(
        None, gt=0, description="answer within this time or 504 (capped by the server)"
    )
    top_k: int | None = Field(
        None,
        ge=1,
        description="option tasks: score only the k best options exactly (same label, far less work on "
        "many options); logprobs then holds those options only and pruned counts the others",
    )


# --------------------------------------------------------------------------------------------
# The guard: API key, body size, request metrics
# --------------------------------------------------------------------------------------------


def _error_body(status: int, code: str, message: str, **extra) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message, **extra}}).encode()


async def _send_json(send, status: int, body: bytes, headers: list | None = None) -> None:
    h = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": h + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware in front of every route: key check, body limits (413), request metrics."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service
        key = service.cfg.api_key
        self.key = key.encode() if key else None

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        if self.key is None:
            return True
        given = headers.get(b"x-api-key", b"")
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return hmac.compare_digest(given, self.key)

    def _limit(self, scope) -> int:
        path = scope["path"].rstrip("/")
        cfg = self.service.cfg
        return cfg.max_register_bytes if path == "/v1/tasks" else cfg.max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_status(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            headers = dict(scope.get("headers") or [])
            if scope["path"] not in OPEN_PATHS and not self._authorized(headers):
                status[0], body = _error_body(
                    401,
                    "unauthorized",
                    "missing or wrong API key: send Authorization: Bearer KEY (or X-API-Key)",
                )
                return await _send_json(send, status[0], body, [(b"www-authenticate", b"Bearer")])
            limit = self._limit(scope)
            declared = headers.get(b"content-length")
            too_large = _error_body(
                413, "too_large", f"the request body exceeds {limit} bytes; send less per request"
            )
            if declared is not None and declared.isdigit() and int(declared) > limit:
                status[0] = 413
                return await _send_json(send, 413, too_large[1], [(b"connection", b"close")])
            if scope["method"] in ("POST", "PUT", "PATCH"):
                chunks, size = [], 0
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return
                    chunks.append(msg.get("body", b""))
                    size += len(chunks[-1])
                    if size > limit:
                        status[0] = 413
                        return await _send_json(send, 413, too_large[1], [(b"connection", b"close")])
                    if not msg.get("more_body"):
                        break
                replayed = [False]

                async def replay():
                    if not replayed[0]:
                        replayed[0] = True
                        return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                    return await receive()

                return await self.app(scope, replay, send_status)
            return await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or ("unauthorized" if status[0] == 401 else "unmatched")
            self.service.metrics.requests.inc(route=label, status=str(status[0]))
            self.service.metrics.latency.observe(time.perf_counter() - t0, route=label)


# --------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------


def create_app(service: Service) -> FastAPI:
    """The FastAPI app over a started :class:`Service`."""
    from .. import __version__

    app = FastAPI(
        title="manyicl serve",
        version=__version__,
        description="One fine-tuned model answering many tasks from their cached many-shot prompts.",
    )

    @app.exception_handler(ServeError)
    async def _serve_error(_, e: ServeError):
        return JSONResponse({"error": e.payload()}, status_code=e.status)

    @app.exception_handler(ProblemsError)
    async def _problems(_, e: ProblemsError):
        problems = [
            {"where": p.where, "field": p.field, "message": p.message, "level": p.level} for p in e.problems
        ]
        return JSONResponse(
            {"error": {"code": "invalid", "message": str(e).splitlines()[0], "problems": problems[:100]}},
            status_code=422,
        )

    @app.exception_handler(ManyICLError)
    async def _manyicl(_, e: ManyICLError):
        return JSONResponse({"error": {"code": "bad_request", "message": str(e)}}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, e: RequestValidationError):
        problems = [
            {"where": ".".join(str(x) for x in err.get("loc", ())), "message": err.get("msg", "")}
            for err in e.errors()[:100]
        ]
        msg = "the request does not match the schema (GET /openapi.json): " + "; ".join(
            f"{p['where']}: {p['message']}" for p in problems[:5]
        )
        return JSONResponse(
            {"error": {"code": "invalid", "message": msg, "problems": problems}}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return JSONResponse({"error": {"code": code, "message": str(e.detail)}}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _internal(_, e: Exception):
        log.exception("internal error")
        return JSONResponse(
            {"error": {"code": "internal", "message": "internal error; the server log has the details"}},
            status_code=500,
        )

    @app.get("/healthz", summary="liveness and readiness")
    async def healthz():
        h = service.health()
        return JSONResponse(h, status_code=200 if h["status"] == "ok" else 503)

    @app.get("/metrics", summary="Prometheus text metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/tasks", status_code=201, summary="register a task: build its max-shot prompt and cache")
    def register(body: RegisterIn):
        """A task folder under an allowed root (``path``) or inline ``examples`` with a template. Builds the
        balanced, shuffled max-shot prompt (as ``manyicl eval`` does) and its KV cache, saved on disk."""
        req = body.model_dump(exclude_none=True)
        if body.settings is not None:
            req["settings"] = body.settings.model_dump(exclude_none=True)
        return service.register(req)

    @app.get("/v1/tasks", summary="list registered tasks")
    def list_tasks():
        return {"tasks": service.list()}

    @app.get("/v1/tasks/{name}", summary="describe a task: prompt, shots, cache")
    def describe(name: str):
        return service.describe(name)

    @app.delete("/v1/tasks/{name}", summary="delete a task and its cache")
    def delete(name: str):
        return service.delete(name)

    @app.post("/v1/tasks/{name}/predict", summary="answer inputs of a task")
    async def predict(name: str, body: PredictIn):
        """Option tasks: each input's ``label`` and every option's summed log-prob (``logprobs``; with
        ``top_k``, the k best only); generation tasks: ``text``. Concurrent requests of a task are scored
        in one batch."""
        if (body.input is None) == (body.inputs is None):
            raise ServeError(
                "give either input (one string) or inputs (a list), not both or neither", "inputs"
            )
        inputs = [body.input] if body.input is not None else list(body.inputs or [])
        return await service.predict(name, inputs, body.options, body.timeout_s, body.top_k)

    app.add_middleware(Guard, service=service)
    return app


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def run(cfg: ServeConfig) -> int:
    """Load the model, restore the registered tasks and serve until interrupted (Ctrl-C, SIGTERM)."""
    import uvicorn

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not _loopback(cfg.host) and not cfg.api_key:
        log.warning(
            "binding %s without an API key: anyone who can reach this port can register tasks; set --api-key "
            "(or $MANYICL_API_KEY)",
            cfg.host,
        )
    model, tokenizer = load_for_serving(cfg)
    service = Service(cfg, model, tokenizer)
    service.start()
    try:
        uvicorn.run(
            create_app(service),
            host=cfg.host,
            port=cfg.port,
            log_config=None,
            access_log=False,
            limit_concurrency=cfg.max_connections,
            timeout_graceful_shutdown=5,
        )
    finally:
        service.close()
    return 0


__all__ = ["create_app", "run"]
