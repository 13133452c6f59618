"""Optional API key for ``/v1/*``: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.api.deps import SettingsDep
from service.errors import ApiError


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    """No-op without a configured key; 401 when it is missing or wrong (constant-time compare)."""
    key = settings.api_key
    if key is None:
        return
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    sent = bearer.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
    if not hmac.compare_digest(sent.encode(), key.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "missing or wrong API key", {"WWW-Authenticate": 'Bearer realm="csd-sr"'})
