"""The refusal every layer may raise: a request the user can fix (or retry), with its HTTP status and a sentence.

It sits below the routes, the intake and the service so that each can raise it without importing the others;
web.routes.errors turns it into the response.
"""

from __future__ import annotations

EXPIRED = "This result has expired and was deleted. Convert the image again."
BUSY = "The server is busy with other conversions. Please try again in a minute."
BUSY_RETRY_SECONDS = 30


class UserError(Exception):
    """A request the user can fix (or retry), with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after
