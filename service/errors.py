"""The error every room may raise for the client to see: a status, a machine-readable code, a human detail.
``service.api.errors`` turns it into the one response shape."""

from __future__ import annotations


class ApiError(Exception):
    """An error the client should see as is (status, machine-readable code, human detail)."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
