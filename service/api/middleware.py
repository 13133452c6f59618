"""Per-request context: request id (taken or generated, echoed), HTTP metrics, one JSON access-log line."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.upscaling.prometheus import Metrics

access_log = logging.getLogger("csd_sr.access")
# A client's id is echoed into headers and logs: accept only short, plain tokens.
_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestContextMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware) so responses are not buffered or re-wrapped."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = Headers(scope=scope).get("x-request-id", "")
        request_id = sent if _VALID_ID.fullmatch(sent) else uuid.uuid4().hex
        fields: dict = {}  # routes add width, sizes, timings through request.state.log
        state = scope.setdefault("state", {})
        state.update(request_id=request_id, log=fields, started=time.perf_counter())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.labels(template, scope["method"], str(status)).inc()
            access_log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(1000 * (time.perf_counter() - state["started"]), 1),
                        **fields,
                    }
                },
            )
