"""One URL builder per distinct route for every app the tests build, where werkzeug compiles one per app.

The suite builds about 200 apps in its fast tier. For each of an app's 38 routes werkzeug writes two URL builders as
Python syntax trees and compiles them: 30 of ``create_app``'s 37 ms here. A builder is a function of the route's
parsed parts and ``append_unknown`` alone (the rule is its first argument, bound per rule), so a route met again gets
the function werkzeug compiled the first time: the same code, not a stand-in. A rule with defaults (ours have none)
is compiled as usual. tests/test_harness.py checks every route's URLs against builders compiled afresh.
"""

from __future__ import annotations

from werkzeug.routing.rules import Rule

COMPILE_BUILDER = Rule._compile_builder  # werkzeug's own
_BUILDERS: dict[tuple, object] = {}  # (rule text, parsed parts, append_unknown) → the function compiled first


def _shared_builder(rule: Rule, append_unknown: bool = True):
    trace = getattr(rule, "_trace", None)
    if rule.defaults or trace is None:
        return COMPILE_BUILDER(rule, append_unknown)
    key = (rule.rule, tuple(trace), append_unknown)
    builder = _BUILDERS.get(key)
    if builder is None:
        builder = _BUILDERS[key] = COMPILE_BUILDER(rule, append_unknown)
    return builder


def share() -> None:
    Rule._compile_builder = _shared_builder
