"""Per-client rate limits on creating things (web.intake.rate_limits): a client over RATE_LIMIT gets 429 with
Retry-After and a sentence, as JSON or as the error page like every refusal of the app; other clients, reads and the
probes are not limited; the client is web.intake.client's (a forged X-Forwarded-For does not escape the limit); the
counts are Redis's with Celery, shared by every web instance, and a Redis that cannot be reached fails nothing."""

from __future__ import annotations

import io
import re
import time

import pytest
from conftest import png_bytes
from test_batches import pictures

from web import settings
from web.intake import rate_limits

A, B = {"REMOTE_ADDR": "198.51.100.1"}, {"REMOTE_ADDR": "198.51.100.2"}
NO_ID = "0" * 32
HTML = {"Accept": "text/html,application/xhtml+xml"}  # what a browser's form post asks for
# Every route that creates something, with what its first refusal (a form without an image, or no such job) is.
CREATING = [("/api/v1/conversions", 400), ("/api/v1/batches", 400), ("/api/v1/comparisons", 400),
            (f"/api/v1/conversions/{NO_ID}/rebuild", 404), ("/convert", 400), ("/compare", 400),
            (f"/jobs/{NO_ID}/rebuild", 404)]


# The middle of a day, of its hours and of their minutes (2024-10-04 12:30:30 UTC).
STEADY_NOW = 20_000 * 86_400 + 12 * 3_600 + 30 * 60 + 30


class SteadyClock:
    """The ``time`` module with ``time()`` stopped at STEADY_NOW. The sliding-window counter's windows start at
    multiples of their period since the epoch, and a count carried over a window's start is weighted and rounded
    down: a client's N + 1st request one second after a minute's start gets through. On the real clock that is a
    test that fails when a minute starts during it (1 run in a few dozen); on this one no window starts."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def time() -> float:
        return float(STEADY_NOW)


@pytest.fixture(autouse=True)
def steady_clock(monkeypatch):
    import limits.storage.memory
    import limits.storage.redis
    import limits.strategies

    for module in (limits.storage.memory, limits.storage.redis, limits.strategies, rate_limits):
        monkeypatch.setattr(module, "time", SteadyClock())


def retry_after(response) -> int:
    """Check that ``response`` is the rate limit's refusal; its Retry-After, in whole seconds."""
    assert response.status_code == 429, response.get_data(as_text=True)[:500]
    assert re.fullmatch(r"[0-9]+", response.headers["Retry-After"]), response.headers
    seconds = int(response.headers["Retry-After"])
    assert seconds >= 1
    return seconds


def refused_count(client) -> float:
    """uploads_refused{reason="rate_limited"} as /metrics shows it (0 before the first)."""
    text = client.get("/metrics").get_data(as_text=True)
    found = re.search(r'^image_to_3d_uploads_refused_total\{reason="rate_limited"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_client_over_its_limit_gets_429_with_retry_after_and_a_sentence_and_another_client_does_not(make_app):
    from jsonschema import Draft202012Validator

    client = make_app(RATE_LIMIT="3 per minute").test_client()
    before = refused_count(client)
    for _ in range(3):  # refused for want of an image, and counted: an attempt costs the server a read
        assert client.post("/api/v1/conversions", environ_base=A).status_code == 400
    over = client.post("/api/v1/conversions", environ_base=A)
    # Half a minute in (the steady clock): the three count until the minute ends, then weigh less than three.
    assert retry_after(over) == 30
    body = over.get_json()
    assert body["code"] == "rate_limited"
    assert body["error"] == ("Too many requests from your address: at most 3 per minute (conversions, rebuilds, "
                             "batches and comparisons together). Try again in 30 seconds.")
    document = client.get("/api/v1/openapi.json").get_json()
    Draft202012Validator(document["components"]["schemas"]["Error"]).validate(body)  # like every error
    other = client.post("/api/v1/conversions", environ_base=B)
    assert other.status_code == 400 and other.get_json()["code"] == "no_image"
    assert refused_count(client) == before + 1


def test_the_limit_is_one_budget_for_every_creating_route_and_a_browser_gets_the_error_page(make_app):
    client = make_app(RATE_LIMIT="3 per minute").test_client()
    for url, status in CREATING[:3]:  # one each of conversions, batches and comparisons: the budget is spent
        assert client.post(url, environ_base=A).status_code == status
    for url, _ in CREATING:
        browser = not url.startswith("/api/")
        over = client.post(url, environ_base=A, headers=HTML if browser else {})
        retry_after(over)
        if browser:
            assert over.mimetype == "text/html"
            assert "Too many requests from your address: at most 3 per minute" in over.get_data(as_text=True)
        else:
            assert over.get_json()["code"] == "rate_limited"
    for number, (url, status) in enumerate(CREATING):  # other clients meet each route's own answer
        assert client.post(url, environ_base={"REMOTE_ADDR": f"198.51.100.{10 + number}"}).status_code == status


def test_the_probes_and_every_read_are_never_limited(make_app):
    client = make_app(RATE_LIMIT="1 per minute").test_client()
    assert client.post("/api/v1/conversions", environ_base=A).status_code == 400
    retry_after(client.post("/api/v1/conversions", environ_base=A))
    for _ in range(30):
        for url, status in (("/healthz", 200), ("/readyz", 200), ("/metrics", 200), ("/", 200),
                            (f"/api/v1/conversions/{NO_ID}", 404), (f"/jobs/{NO_ID}/status", 404),
                            ("/api/v1/openapi.json", 200)):
            assert client.get(url, environ_base=A).status_code == status, url
    retry_after(client.post("/api/v1/conversions", environ_base=A))  # still over its limit


def test_real_conversions_count_against_the_limit(make_app, photo):
    client = make_app(RATE_LIMIT="2 per minute").test_client()
    image = png_bytes(photo)
    for _ in range(2):
        created = client.post("/api/v1/conversions", environ_base=A,
                              data={"image": (io.BytesIO(image), "photo.png")})
        assert created.status_code == 202, created.get_json()
    retry_after(client.post("/api/v1/conversions", environ_base=A, data={"image": (io.BytesIO(image), "photo.png")}))
    retry_after(client.post("/api/v1/batches", environ_base=A,
                            data={"images": [(io.BytesIO(data), "a.png") for data in pictures(2)]}))


def test_the_default_limit_is_on_and_takes_20_a_minute(make_app):
    default = settings.from_env({})["RATE_LIMIT"]  # what create_app reads when RATE_LIMIT is not set
    assert default == settings.DEFAULT_RATE_LIMIT == "20 per minute;200 per hour"
    client = make_app(RATE_LIMIT=default).test_client()  # (make_app's own is out of the tests' reach)
    for _ in range(20):
        assert client.post("/api/v1/conversions", environ_base=A).status_code == 400
    over = client.post("/api/v1/conversions", environ_base=A)
    retry_after(over)
    assert "at most 20 per minute" in over.get_json()["error"]
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["info"]["x-limits"]["RATE_LIMIT"] == "20 per minute;200 per hour"
    assert "20 per minute and 200 per hour" in document["paths"]["/api/v1/batches"]["post"]["responses"]["429"][
        "description"]


def test_an_empty_setting_turns_the_limit_off(make_app):
    assert settings.from_env({"RATE_LIMIT": ""})["RATE_LIMIT"] == ""
    client = make_app(RATE_LIMIT="").test_client()
    for _ in range(30):
        assert client.post("/api/v1/conversions", environ_base=A).status_code == 400
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["info"]["x-limits"]["RATE_LIMIT"] == "none"
    assert all("429" not in operation["responses"] for item in document["paths"].values()
               for operation in item.values())


def test_a_wrong_setting_stops_the_app_from_starting_with_a_sentence(make_app):
    with pytest.raises(ValueError, match=r"RATE_LIMIT: 'lots' is not a rate limit such as '20 per minute"):
        make_app(RATE_LIMIT="lots")


def test_behind_a_trusted_proxy_clients_are_counted_apart_and_a_forged_header_escapes_nothing(make_app):
    proxied = make_app(RATE_LIMIT="2 per minute", TRUSTED_PROXIES="10.0.0.5").test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.5"}

    def through_proxy(client_address: str):
        return proxied.post("/api/v1/conversions", environ_base=proxy,
                            headers={"X-Forwarded-For": f"1.2.3.4, {client_address}"})  # 1.2.3.4: written by it

    assert [through_proxy("198.51.100.1").status_code for _ in range(2)] == [400, 400]
    retry_after(through_proxy("198.51.100.1"))
    assert through_proxy("198.51.100.2").status_code == 400  # another client behind the same proxy

    direct = make_app(RATE_LIMIT="2 per minute").test_client()
    answers = [direct.post("/api/v1/conversions", environ_base={"REMOTE_ADDR": "203.0.113.7"},
                           headers={"X-Forwarded-For": f"198.51.100.{number}"}) for number in range(4)]
    assert [answer.status_code for answer in answers] == [400, 400, 429, 429]


def test_the_counts_live_in_redis_with_celery_and_in_this_process_otherwise():
    assert rate_limits.storage({"JOB_BACKEND": "celery", "REDIS_URL": "redis://10.1.2.3:6380/2"})[0] == (
        "redis://10.1.2.3:6380/2")
    assert rate_limits.storage({"JOB_BACKEND": "embedded", "REDIS_URL": "redis://10.1.2.3:6380/2"})[0] == "memory://"


def test_a_redis_that_cannot_be_reached_limits_in_memory_and_fails_no_request(make_app):
    from ports import quiet_port  # bench/ports.py: a port nothing listens on

    client = make_app(JOB_BACKEND="celery", REDIS_URL=f"redis://127.0.0.1:{quiet_port()}/0", JOB_WATCH=False,
                      RATE_LIMIT="2 per minute").test_client()
    answers = [client.post("/api/v1/conversions", environ_base=A).status_code for _ in range(3)]
    assert answers == [400, 400, 429]
    assert client.post("/api/v1/conversions", environ_base=B).status_code == 400


@pytest.mark.slow  # a redis-server
def test_two_web_instances_on_one_redis_share_each_clients_count(make_app, tmp_path):
    from test_celery import REDIS_SERVER, Redis

    if REDIS_SERVER is None:
        pytest.skip("needs Debian's redis-server (make setup-test installs it)")
    redis_server = Redis(tmp_path / "redis")
    redis_server.start()
    try:
        tier = dict(JOB_BACKEND="celery", REDIS_URL=redis_server.url, JOB_WATCH=False, RATE_LIMIT="3 per minute",
                    OUTPUT_FOLDER=str(tmp_path / "shared-outputs"))
        first, second = make_app(**tier).test_client(), make_app(**tier).test_client()
        assert [instance.post("/api/v1/conversions", environ_base=A).status_code
                for instance in (first, second, first)] == [400, 400, 400]
        retry_after(second.post("/api/v1/conversions", environ_base=A))
        retry_after(first.post("/api/v1/conversions", environ_base=A))
        assert second.post("/api/v1/conversions", environ_base=B).status_code == 400
        with redis_server.client() as redis:
            assert any("198.51.100.1" in key for key in redis.scan_iter("LIMITS*"))
        redis_server.stop()  # an outage: each instance limits in its own memory (B's 1 in Redis forgotten)
        assert [first.post("/api/v1/conversions", environ_base=B).status_code for _ in range(4)] == [400] * 3 + [429]
    finally:
        redis_server.stop()
