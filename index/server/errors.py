"""Clear JSON 4xx answers: ``{"error": "..."}`` with a status code."""
from __future__ import annotations


class RequestError(Exception):
    """A request the server cannot answer as asked; ``status`` is its HTTP code."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status
