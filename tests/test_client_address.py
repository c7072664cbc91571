"""Who a request comes from (web.intake.client): the connecting address, or behind a trusted proxy the first
address from the right of X-Forwarded-For that is not a trusted proxy. A client cannot pick its own key."""

from __future__ import annotations

import pytest
from flask import jsonify

from web.intake.client import client_address, current_client, parse_proxies

PROXIES = parse_proxies("10.0.0.5, 172.16.0.0/12, ::1")


@pytest.mark.parametrize("remote, forwarded, expected", [
    ("203.0.113.7", None, "203.0.113.7"),  # no proxy
    ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # a header from a client that is not a proxy: ignored
    ("10.0.0.5", "198.51.100.1", "198.51.100.1"),  # the trusted proxy says who connected to it
    ("10.0.0.5", "1.2.3.4, 198.51.100.1", "198.51.100.1"),  # what the client wrote itself is to the left: ignored
    ("10.0.0.5", "198.51.100.1, 172.16.9.9", "198.51.100.1"),  # two trusted proxies (one by its network)
    ("10.0.0.5", "not-an-address", "10.0.0.5"),  # nothing believable: the proxy itself is the key
    ("10.0.0.5", "198.51.100.1, garbage", "10.0.0.5"),
    ("10.0.0.5", "", "10.0.0.5"),
    ("10.0.0.6", "198.51.100.1", "10.0.0.6"),  # the address next to the trusted one is not trusted
    ("::1", "2001:db8::1", "2001:db8::1"),
    (None, None, "unknown"),
])
def test_the_client_is_the_connecting_address_unless_a_trusted_proxy_names_it(remote, forwarded, expected):
    assert client_address(remote, forwarded, PROXIES) == expected


def test_a_wrong_trusted_proxies_entry_is_named():
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        parse_proxies("10.0.0.5,10.0.0.300")
    assert parse_proxies(" , ") == ()


def test_the_app_reads_trusted_proxies_from_its_settings(make_app):
    app = make_app(TRUSTED_PROXIES="127.0.0.1")
    app.add_url_rule("/_client", "client_probe", lambda: jsonify(client=current_client()))
    with app.test_client() as client:
        assert client.get("/_client", headers={"X-Forwarded-For": "198.51.100.1"}).json == {"client": "198.51.100.1"}
    plain = make_app()
    plain.add_url_rule("/_client", "client_probe", lambda: jsonify(client=current_client()))
    with plain.test_client() as client:
        assert client.get("/_client", headers={"X-Forwarded-For": "198.51.100.1"}).json == {"client": "127.0.0.1"}
