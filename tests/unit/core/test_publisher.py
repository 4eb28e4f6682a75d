"""The publisher's own measurements: the event loop's lag."""
from __future__ import annotations


def test_loop_lag_histogram_is_cumulative():
    from agent.publisher import LoopLag
    lag = LoopLag()
    for sample in (0.0005, 0.003, 0.2, 7.0, -1):
        lag.observe(sample)
    view = lag.view()
    assert view["count"] == 5 and view["max"] == 7.0
    assert dict((str(b), n) for b, n in view["buckets"])["0.001"] == 2  # -1 counts as 0
    assert view["buckets"][-1] == ["+Inf", 5]
