"""The console's pure parts: sessions, redirects, dates, chart geometry; and the KV tier history. No server."""

from __future__ import annotations

import pytest

from sidecar.console import charts
from sidecar.console.api import ConsoleAPIError
from sidecar.console.routes import _back, _integer
from sidecar.console.sessions import MAX_PLAYGROUND_TURNS, PlaygroundTurn, SessionStore
from sidecar.console.views import date_to_epoch
from sidecar.scheduler.history import TierHistory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_expire_when_idle_and_end_on_sign_out():
    clock = Clock()
    store = SessionStore(ttl_s=60, clock=clock)
    session = store.create("secret-key", "acme")
    assert "secret-key" not in repr(session) and session.csrf not in repr(session)
    clock.now += 59
    assert store.get(session.id) is session  # an access restarts the idle clock
    clock.now += 59
    assert store.get(session.id) is session
    clock.now += 61
    assert store.get(session.id) is None
    other = store.create("k", "acme")
    store.end(other.id)
    assert store.get(other.id) is None and store.get(None) is None and store.get("") is None


def test_the_least_recently_used_session_goes_first_over_the_limit():
    store = SessionStore(max_sessions=2, clock=Clock())
    first, second = store.create("a", "t"), store.create("b", "t")
    store.get(first.id)
    store.create("c", "t")
    assert store.get(second.id) is None and store.get(first.id) is first and len(store) == 2


def test_playground_history_is_bounded():
    session = SessionStore(clock=Clock()).create("k", "t")
    for i in range(MAX_PLAYGROUND_TURNS + 5):
        session.add_turn(PlaygroundTurn("u", f"m{i}", "r", [], 0, 0, None))
    assert len(session.turns) == MAX_PLAYGROUND_TURNS and session.turns[-1].message == f"m{MAX_PLAYGROUND_TURNS + 4}"


@pytest.mark.parametrize("target, expected", [
    ("/console/memories?user_id=a", "/console/memories?user_id=a"),
    ("https://evil.example/console/", "/console/x"),
    ("//evil.example/console/", "/console/x"),
    ("/console\\..\\x", "/console/x"),
    ("/v1/memories", "/console/x"),
    ("", "/console/x"),
])
def test_forms_return_only_to_console_pages(target, expected):
    assert _back({"next": target}, "/console/x") == expected


def test_form_numbers_are_parsed_or_passed_on_for_the_api_to_refuse():
    assert _integer("20") == 20 and _integer("2.5") == "2.5" and _integer("many") == "many"


def test_form_dates_are_utc_days():
    assert date_to_epoch("1970-01-02") == 86_400.0
    assert date_to_epoch("1970-01-02", end_of_day=True) == pytest.approx(2 * 86_400.0, abs=0.01)
    assert date_to_epoch("") is None
    with pytest.raises(ConsoleAPIError, match="YYYY-MM-DD"):
        date_to_epoch("02/01/1970")


def test_bar_chart_scales_to_the_largest_value():
    chart = charts.bar_chart([("a", 10), ("b", 5), ("c", 0)])
    widths = [bar.width for bar in chart.bars]
    assert widths[0] == pytest.approx(2 * widths[1]) and widths[2] == 0
    assert charts.bar_chart([]).empty


def test_line_chart_skips_gaps_and_stays_inside_the_view():
    chart = charts.line_chart([("ram", [(0.0, 1.0), (10.0, None), (20.0, 3.0)])], rules=[(2.0, "hot")],
                              markers=[10.0])
    points = [tuple(map(float, p.split(","))) for p in chart.lines[0].points.split()]
    assert len(points) == 2
    assert all(0 <= x <= chart.width and 0 <= y <= chart.height for x, y in points)
    assert points[0][1] > points[1][1]  # larger values are higher up
    assert chart.lines[0].last == "3"
    assert charts.line_chart([("ram", [(0.0, None)])]).empty


def test_human_bytes():
    assert charts.human_bytes(512) == "512 B" and charts.human_bytes(3 * 2**20) == "3.0 MiB"
    assert charts.human_bytes(None) == "n/a"


def test_tier_history_reports_per_interval_hit_rate_and_bandwidth():
    history = TierHistory(max_samples=2)
    history.record(0.0, {"ram": {"entries": 1, "bytes": 10, "hits": 4, "misses": 4, "bytes_read": 400,
                                 "read_bytes_per_s": 100}}, "engine_worker")
    second = history.record(5.0, {"ram": {"entries": 2, "bytes": 20, "hits": 10, "misses": 6, "bytes_read": 1000,
                                          "read_bytes_per_s": 200}}, "engine_worker")
    ram = second["tiers"]["ram"]
    assert ram["hits"] == 6 and ram["misses"] == 2 and ram["hit_rate"] == 0.75
    assert ram["load_bytes_per_s"] == 600  # 600 bytes in 5 - 4 = 1 second of reading
    restarted = history.record(9.0, {"ram": {"hits": 1, "misses": 0, "bytes_read": 0, "read_bytes_per_s": 0}},
                               "engine_worker")
    assert restarted["tiers"]["ram"]["hits"] == 1 and restarted["tiers"]["ram"]["hit_rate"] == 1.0
    assert [s["time"] for s in history.samples()] == [5.0, 9.0]
