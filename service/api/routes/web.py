"""The web page at ``/`` and the API docs at ``/docs``, both from files shipped in ``service/api/web/`` (no CDN).

None of these routes is in ``/openapi.json``: they are for people, not part of the API contract.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
STATIC_URL = "/static"
SWAGGER = f"{STATIC_URL}/vendor/swagger-ui"
# The page loads only its own files and talks only to this server: a stray CDN link would fail loudly.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    headers = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"}
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=headers)


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI from the vendored swagger-ui-dist (FastAPI's default page loads it from a CDN)."""
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} API",
        swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{STATIC_URL}/favicon.svg",
        # The default validator badge would send the spec to validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )


def static_files() -> StaticFiles:
    """The page's scripts, styles and icon, and the vendored Swagger UI, mounted at ``STATIC_URL``."""
    return StaticFiles(directory=WEB_DIR)
