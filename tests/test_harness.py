"""The suite's own helpers keep their promises: a wait that outlasts a page being replaced, and the apps' shared URL
builders (tests/url_builders.py) building what werkzeug's own would."""

from __future__ import annotations

import pytest
from conftest import wait_until


def test_a_page_being_replaced_is_waited_out_and_a_deadline_names_the_last_error():
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    answers = iter([StaleElementReferenceException("stale"), NoSuchElementException("not yet"), "", "found"])

    def condition():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until(condition, timeout=10, interval=0.001) == "found"

    def never():
        raise StaleElementReferenceException("the page went away")

    with pytest.raises(AssertionError, match="the page went away"):
        wait_until(never, timeout=0.01, interval=0.001)
    with pytest.raises(ZeroDivisionError):  # any other error is the test's own failure, at once
        wait_until(lambda: 1 / 0, timeout=10)


def test_every_route_builds_the_urls_werkzeug_would_build_and_the_apps_share_its_builders(make_app, tmp_path):
    """The tests' apps share URL builders (tests/url_builders.py): every route's, with and without unknown arguments,
    must build what a builder werkzeug compiles afresh for that rule builds, and two apps must hold the same ones."""
    from url_builders import COMPILE_BUILDER
    from werkzeug.routing.converters import IntegerConverter, PathConverter

    first, second = (make_app(OUTPUT_FOLDER=str(tmp_path / tag / "outputs"), UPLOAD_FOLDER=str(tmp_path / tag / "up"))
                     for tag in "ab")
    rules = {rule.endpoint: rule for rule in first.url_map.iter_rules()}
    assert len(rules) >= 30
    for rule in second.url_map.iter_rules():
        assert rule._build.__func__ is rules[rule.endpoint]._build.__func__, rule.rule
    for rule in rules.values():
        values = {}
        for name, converter in rule._converters.items():
            values[name] = (7 if isinstance(converter, IntegerConverter) else "a b/c ü"
                            if isinstance(converter, PathConverter) else "0123456789abcdef0123456789abcdef"
                            if name.endswith("id") else "x y+ü")
        own = COMPILE_BUILDER(rule, False).__get__(rule, None), COMPILE_BUILDER(rule, True).__get__(rule, None)
        assert rule._build(**values) == own[0](**values), rule.rule
        assert rule._build_unknown(**values, page="2 3") == own[1](**values, page="2 3"), rule.rule
