"""Per-client limits on creating things (conversions, rebuilds, batches, comparisons), kept by Flask-Limiter.

One budget, ``RATE_LIMIT``, shared by every view marked with :func:`creates`: a script cannot get a second budget by
switching from conversions to batches, or from the form's address to the API's. The client is
web.intake.client's. Every attempt counts, accepted or refused by a later check (reading an upload costs the server
either way); a request refused by the limit does not. The limit is checked before the body is read, so a refusal
costs one look-up in the counts: with the embedded back-end this process's memory (each gunicorn worker counts on
its own), with Celery Redis at ``REDIS_URL``, shared by every web instance. If Redis cannot be reached, the counts
fall back to this process's memory until it answers again: requests are still limited, never failed for it.
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from limits import parse_many
from limits.errors import StorageError

from ..user_error import UserError
from .client import current_client

EXTENSION = "rate_limits"
# Sliding window counter: this period's count plus the last period's, weighted by how much of it the span still
# covers; so about N in any span of the period, not N per clock minute (a fixed window lets 2N through across its
# boundary). Two counters a client, where a moving window keeps a time per request: limits' in-memory store walks
# every entry on a timer, and with thousands of clients that walk (4.2 ms a pass at 5,000) pushed the embedded 429s'
# p99 over 10 ms (bench/RESULTS.md). Retry-After is when the weighted count falls under the limit, to the second.
STRATEGY = "sliding-window-counter"
# A Redis that does not answer costs a request at most this long before the counts fall back to memory.
REDIS_OPTIONS = {"socket_timeout": 1, "socket_connect_timeout": 1}


def creates(view):
    """Mark a view that creates something: its requests count against the client's ``RATE_LIMIT``."""
    view.creates_resources = True
    return view


def parse(text: str):
    """``RATE_LIMIT`` ("20 per minute;200 per hour") as limits; a ValueError says what was wrong."""
    try:
        return parse_many(text)
    except ValueError:
        raise ValueError(f"RATE_LIMIT: {text!r} is not a rate limit such as '20 per minute;200 per hour' "
                         "(empty: no limit)") from None


def storage(config) -> tuple[str, dict]:
    """Where the counts live, and the options of that store: Redis with the Celery back-end (shared by every web
    instance), else this process's memory. Its errors come as limits' StorageError."""
    if config.get("JOB_BACKEND") == "celery":
        return config["REDIS_URL"], {"wrap_exceptions": True, **REDIS_OPTIONS}
    return "memory://", {"wrap_exceptions": True}


def _not_creating() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return not getattr(view, "creates_resources", False)


def init_app(app: Flask) -> Limiter | None:
    """Limit the app's creating views to ``RATE_LIMIT`` per client (none when it is empty).

    Call it before any other ``before_request`` is registered: the limit is checked first, before a form is read.
    """
    text = (app.config.get("RATE_LIMIT") or "").strip()
    if not text:
        return None
    parse(text)
    uri, options = storage(app.config)
    limiter = Limiter(
        current_client, app=app, storage_uri=uri, storage_options=options, strategy=STRATEGY, key_prefix="image-to-3d",
        # An application limit is checked in before_request, for every route; this one is skipped unless the view
        # creates. One scope: one budget for all of them.
        application_limits=[ApplicationLimit(limit_provider=text, scope="create", exempt_when=_not_creating)],
        # A store that fails: the same limits in this process's memory (rechecking the store now and then), and
        # any other error of the limiter logged, not answered 500.
        in_memory_fallback_enabled=True, swallow_errors=True)
    app.extensions[EXTENSION] = limiter
    return limiter


def refusal(error: RateLimitExceeded) -> UserError:
    """The 429 for a client over its limit: which limit, and in whole seconds when the oldest counted request
    leaves its span (``Retry-After``)."""
    item = error.limit.limit
    breached = current_app.extensions[EXTENSION].current_limit
    try:
        seconds = math.ceil(breached.window.reset_time - time.time())
    except StorageError:  # the counts' store went away since the check: the whole span is a safe answer
        seconds = item.get_expiry()
    seconds = max(1, seconds)
    period = item.GRANULARITY.name if item.multiples == 1 else f"{item.multiples} {item.GRANULARITY.name}s"
    wait = "1 second" if seconds == 1 else f"{seconds} seconds"
    return UserError(429, "rate_limited", f"Too many requests from your address: at most {item.amount} per {period} "
                                          f"(conversions, rebuilds, batches and comparisons together). Try again in "
                                          f"{wait}.", retry_after=seconds)
