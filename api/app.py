"""`dockyard serve`'s ASGI app: SageMaker's and CloudWatch Logs' JSON protocol on `POST /`.

Every request is signed (api/auth.py), names its operation in X-Amz-Target,
and is checked against botocore's model of that operation and against what its
principal may do (api/access.py) before a handler sees it. Handlers run in
worker threads (the store and Prefect clients are synchronous); errors answer
SageMaker's `{"__type", "message"}`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

from api import algorithms, logs, processing, search, tags, training, tuning
from api.access import authorize, visible
from api.auth import Principal, SignedRequest, verify
from api.protocol import ApiError, operation, parse_input, render_output
from api.training import Context

CONTENT_TYPE = "application/x-amz-json-1.1"
Handler = Callable[[Context, dict[str, Any]], dict[str, Any]]
HANDLERS: dict[tuple[str, str], Handler] = {
    **{
        ("sagemaker", op): h
        for op, h in {
            **training.HANDLERS,
            **processing.HANDLERS,
            **algorithms.HANDLERS,
            **tuning.HANDLERS,
            **tags.HANDLERS,
            **search.HANDLERS,
        }.items()
    },
    **{("logs", op): h for op, h in logs.HANDLERS.items()},
}

log = logging.getLogger("dockyard.api")


def _answer(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type=CONTENT_TYPE)


def create_app(ctx: Context, principals: dict[str, Principal]) -> FastAPI:
    """The app over one job store, accepting requests signed by `principals`."""
    app = FastAPI(title="dockyard SageMaker API", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/")
    async def call(request: Request) -> Response:
        body = await request.body()
        target = request.headers.get("x-amz-target")
        try:
            path = request.scope.get("raw_path", b"/").decode()
            url = f"{request.url.scheme}://{request.headers.get('host', '')}{path}"
            if request.scope.get("query_string"):
                url += "?" + request.scope["query_string"].decode()
            principal = verify(SignedRequest("POST", url, dict(request.headers), body), principals)
            service, op = operation(target)
            handler = HANDLERS.get((service, op.name))
            if handler is None:
                raise ApiError("UnknownOperationException", f"{op.name} is not served by dockyard (yet)")
            params = parse_input(op, body)
            authorize(
                principal.name,
                principal.actions,
                principal.job_name_prefixes,
                service,
                op.name,
                params,
                principal.roles,
            )
            called = dataclasses.replace(ctx, principal=principal)
            result = visible(principal.job_name_prefixes, await run_in_threadpool(handler, called, params))
            log.info("%s %s by %s", service, op.name, principal.name)
            return _answer(render_output(op, result))
        except ApiError as exc:
            log.info("%s refused: %s", target, exc.code)
            return _answer(exc.body(), exc.status)
        except Exception:
            log.exception("%s failed", target)
            return _answer(
                {"__type": "InternalFailure", "message": "the request failed inside dockyard; see its log"}, 500
            )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
