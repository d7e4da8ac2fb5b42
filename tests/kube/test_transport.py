"""The transport's client-side rate limit: QPS with a burst, as client-go's token bucket."""

from __future__ import annotations

from pdscaler.actuator.transport import TokenBucket


class Time:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_burst_passes_at_once_then_requests_wait_their_turn() -> None:
    time = Time()
    bucket = TokenBucket(rate=10, burst=3, monotonic=time.monotonic, sleep=time.sleep)

    waits = [bucket.take() for _ in range(5)]

    assert waits[:3] == [0.0, 0.0, 0.0]
    assert [round(w, 3) for w in waits[3:]] == [0.1, 0.1]
    assert round(time.now, 3) == 0.2


def test_unused_time_saves_up_no_more_than_the_burst() -> None:
    time = Time()
    bucket = TokenBucket(rate=10, burst=2, monotonic=time.monotonic, sleep=time.sleep)
    bucket.take()
    time.now += 60  # a quiet minute

    waits = [bucket.take() for _ in range(3)]

    assert waits[:2] == [0.0, 0.0]
    assert round(waits[2], 3) == 0.1
