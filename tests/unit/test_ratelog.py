"""Rate-limited logging (plumbing/ratelog.py): pure, time as an argument."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plumbing.ratelog import (
    CLIENT_DRIVEN_LOGGERS,
    LogLimiter,
    RateLimitedLog,
    RateLimitFilter,
    limit_client_driven_logs,
)


def test_n_lines_per_key_per_interval_then_the_count_of_suppressed() -> None:
    lim = LogLimiter(lines=3, interval=10.0)
    admitted = [lim.admit("k", t * 0.1) for t in range(20)]
    assert admitted[:3] == [0, 0, 0] and admitted[3:] == [None] * 17
    assert lim.admit("other", 1.0) == 0  # keys have budgets of their own
    # After the interval, the first line says how many were held back.
    assert lim.admit("k", 10.0) == 17
    assert lim.admit("k", 10.1) == 0


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 1.0)), max_size=200),
       st.integers(1, 5), st.floats(0.01, 10.0))
def test_never_more_than_n_per_window_and_nothing_uncounted(
        events: list[tuple[str, float]], lines: int, interval: float) -> None:
    lim = LogLimiter(lines=lines, interval=interval)
    now = 0.0
    logged: dict[str, list[float]] = {}
    reported = 0
    for key, dt in events:
        now += dt
        out = lim.admit(key, now)
        if out is not None:
            logged.setdefault(key, []).append(now)
            reported += out
    for times in logged.values():
        # Windows of ``interval`` hold ``lines`` each, so no span of one
        # interval, wherever it starts, holds more than 2 * lines.
        for i, t in enumerate(times):
            if i >= 2 * lines:
                assert t - times[i - 2 * lines] > interval
    held = sum(w.suppressed for w in lim._windows.values())
    assert sum(map(len, logged.values())) + reported + held == len(events)


def test_the_key_table_is_bounded() -> None:
    lim = LogLimiter(lines=1, interval=10.0, max_keys=4)
    assert [lim.admit(f"k{i}", 0.0) for i in range(4)] == [0, 0, 0, 0]
    # Full and nothing expired: new keys share one overflow budget.
    assert lim.admit("k4", 1.0) == 0
    assert lim.admit("k5", 1.0) is None
    assert len(lim._windows) == 5
    # Expired keys make room again.
    assert lim.admit("k6", 20.0) == 0
    assert len(lim._windows) <= 5


def test_rate_limited_log_writes_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("test.ratelog"), LogLimiter(2, 5.0), lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.ratelog"):
        for _ in range(10):
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("frame:ValueError", "failed for %s", "x")
        now[0] = 6.0
        log.warning("frame:ValueError", "again")
    records = caplog.records
    assert len(records) == 3
    assert records[0].exc_info is not None and records[0].getMessage() == "failed for x"
    assert records[2].getMessage() == "again (8 similar suppressed)"


def test_the_filter_bounds_a_library_logger_per_template() -> None:
    """aiohttp's server logs a traceback per malformed request: behind the
    filter, 1,000 of them are 5 lines, and the first line after the interval
    says how many were held back; another template has its own budget."""
    now = [0.0]
    flt = RateLimitFilter(LogLimiter(lines=5, interval=60.0), clock=lambda: now[0])

    def record(msg: str, arg: str) -> logging.LogRecord:
        return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, msg, (arg,),
                                 None)

    passed = [r for i in range(1000)
              if flt.filter(r := record("Error handling request from %s", f"10.0.0.{i}"))]
    assert len(passed) == 5
    assert flt.filter(record("Unhandled exception %s", "x"))
    now[0] = 61.0
    late = record("Error handling request from %s", "10.0.0.1")
    assert flt.filter(late)
    assert late.getMessage() == "Error handling request from 10.0.0.1 (995 similar suppressed)"


def test_the_client_driven_loggers_get_the_filter() -> None:
    flt = limit_client_driven_logs()
    try:
        for name in CLIENT_DRIVEN_LOGGERS:
            assert flt in logging.getLogger(name).filters
    finally:
        for name in CLIENT_DRIVEN_LOGGERS:
            logging.getLogger(name).removeFilter(flt)


def test_a_characters_refused_writes_are_rate_limited() -> None:
    """A host can make a room refuse every stage write of a character (a
    section cap): those lines go through the same budget as the libraries'."""
    import logging

    from plumbing.ratelog import CLIENT_DRIVEN_LOGGERS

    assert "liveroom.agents.refused" in CLIENT_DRIVEN_LOGGERS
    from llm_agents import runtime, staging

    assert runtime.refused_log.name == staging.refused_log.name == "liveroom.agents.refused"
    assert logging.getLogger("liveroom.agents.refused") is runtime.refused_log
