"""``/openapi.json`` as the server enforces it: FastAPI's generated document, corrected where it says otherwise.

FastAPI writes the spec from the handlers' signatures; these differed from what the server does (found by
Schemathesis, tests/service/api/test_contract.py, which keeps them in agreement):

- An optional parameter (``quality: int | None = None``) came out as ``anyOf: [integer, null]``, so
  ``?quality=null`` or ``X-Deadline-Ms: null`` was valid by the spec but a 422. Leaving a parameter out is
  said by ``required: false``; the ``null`` branch goes.
- ``width`` (and ``min_width``) was any string, but only ``auto`` or a width of the loaded model is
  accepted, ``precision`` only the precisions of the rungs the server runs, and ``style`` only the styles of
  its models. These are known only once the weights are loaded, hence this post-processing rather than the
  signature.
- The multipart ``file`` part was any bytes: its ``encoding`` now names the image types the server
  decodes, as the raw body's ``image/*`` does (other image types are the documented 415).
- Validation errors were documented with FastAPI's ``HTTPValidationError`` (``{"detail": [...]}``); the
  server answers them with ``{"error": "invalid_option", "detail": "..."}`` (``service.errors``).
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI

from service.api.errors import ErrorBody
from service.catalog.registry import Registry

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
FASTAPI_422 = ("HTTPValidationError", "ValidationError")
# The image types the server decodes, one name each (service.inference.images.INPUT_MEDIA_TYPES also takes aliases such
# as image/x-ms-bmp), and the generic type whose bytes are sniffed.
DECODED = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff", "image/gif")
IMAGE_TYPES = (*DECODED, "application/octet-stream")
UPSCALE_QUERIES = {("/v1/upscale", "post", "query"), ("/v1/jobs", "post", "query")}  # the upscale options


def install(app: FastAPI, registry: Registry) -> None:
    """Serve the corrected document (built once, on the first request for it)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = generate()
            rungs = registry.rungs
            app.openapi_schema = correct(
                spec,
                widths=tuple(sorted({r.width for r in rungs})),
                precisions=tuple(dict.fromkeys(r.precision for r in rungs)),
                scales=registry.scales,
                noise_levels=tuple(sorted({m.key.noise for m in registry})),
                styles=tuple(sorted({m.key.style for m in registry})),
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def correct(
    spec: dict,
    widths: tuple[float, ...],
    precisions: tuple[str, ...],
    scales: tuple[int, ...] = (4,),
    noise_levels: tuple[str, ...] = ("none",),
    styles: tuple[str, ...] = ("faithful",),
) -> dict:
    """``spec`` corrected in place (and returned): parameters without ``null``, the rungs, the served
    scales, noise levels and styles, error shapes."""
    for path, method, operation in _operations(spec):
        for param in operation.get("parameters", []):
            if not param.get("required", False):
                _drop_null(param["schema"])
            if (path, method, param["in"]) not in UPSCALE_QUERIES:
                continue
            if param["name"] == "width":
                param["schema"] = _width_schema(param["schema"], widths)
            elif param["name"] == "min_width":
                param["schema"] = _min_width_schema(param["schema"], widths)
            elif param["name"] == "precision":
                param["schema"]["enum"] = ["auto", *precisions]
            elif param["name"] == "scale":
                param["schema"]["maximum"] = max(scales)
            elif param["name"] == "noise":
                param["schema"]["enum"] = ["auto", *noise_levels]
            elif param["name"] == "style":
                param["schema"]["enum"] = list(styles)
        if "content" in operation.get("requestBody", {}):
            _image_types(operation["requestBody"]["content"])
        for status, response in operation.get("responses", {}).items():
            if status.startswith(("4", "5")):
                # Every error the server sends is an ErrorBody, whatever the route declared (or FastAPI added).
                response["content"] = {"application/json": {"schema": dict(ERROR_REF)}}
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
    for name in FASTAPI_422:
        schemas.pop(name, None)
    return spec


def _operations(spec: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                yield path, method, operation


def _drop_null(schema: dict) -> None:
    branches = schema.get("anyOf")
    if not branches:
        return
    kept = [b for b in branches if b != {"type": "null"}]
    if len(kept) == len(branches):
        return
    del schema["anyOf"]
    if len(kept) == 1:
        schema.update({k: v for k, v in kept[0].items() if k not in schema})
    else:
        schema["anyOf"] = kept
    if schema.get("default", ...) is None:
        del schema["default"]


def _image_types(content: dict) -> None:
    """A multipart ``file`` part carries one of the image types the server decodes (or sniffed bytes)."""
    form = content.get("multipart/form-data", {})
    if "file" in form.get("schema", {}).get("properties", {}):
        form.setdefault("encoding", {}).setdefault("file", {"contentType": ", ".join(IMAGE_TYPES)})


def _width_schema(schema: dict, widths: tuple[float, ...]) -> dict:
    """``auto`` or a number equal to a width of the model (the server parses it as a number: ``.5`` = ``0.5``)."""
    listed = ", ".join(f"{w:g}" for w in widths)
    return {
        "anyOf": [{"type": "string", "enum": ["auto"]}, {"type": "number", "enum": [float(w) for w in widths]}],
        "default": "auto",
        "title": schema.get("title", "Width"),
        "description": f"'auto' (the server's policy picks the rung) or a width of the model: {listed}",
    }


def _min_width_schema(schema: dict, widths: tuple[float, ...]) -> dict:
    """A number equal to a width of the model; left out: no floor."""
    return {
        "type": "number",
        "enum": [float(w) for w in widths],
        "title": schema.get("title", "Min Width"),
        "description": schema.get("description", ""),
    }
