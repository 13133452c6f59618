"""One error shape for every failure: ``{"error": code, "detail": text}`` with the right status."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from service.errors import ApiError

log = logging.getLogger("csd_sr.errors")


class ErrorBody(BaseModel):
    """The body of every error response (``error_response``); documented for each error status in the spec."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(
        description="machine-readable code: bad_image, bad_request, unauthorized, body_too_large, "
        "too_many_pixels, unsupported_media_type, invalid_option, overloaded, timeout, not_ready, ...",
        examples=["invalid_option"],
    )
    detail: str = Field(
        description="what was wrong, for people (for invalid_option from parameter validation: "
        "'<location>.<name>: <message>' per problem, joined by '; ')",
        examples=["query.quality: Input should be less than or equal to 100"],
    )


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _code(status: int) -> str:
    """``404`` -> ``not_found``: the standard reason phrase as a code."""
    return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Route our errors, Starlette's HTTP errors and FastAPI's validation errors into the one shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        request.state.log["error"] = exc.code
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:  # Starlette's Allow names the first route of the path only (GET and DELETE are two)
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return error_response(exc.status_code, _code(exc.status_code), str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        request.state.log["error"] = "invalid_option"
        return error_response(422, "invalid_option", detail)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return error_response(500, "internal_error", "internal server error")
