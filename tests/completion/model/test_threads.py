"""The thread governor: every allowed core while the other processes leave them idle, fewer when they do not
(completion/model/threads.py)."""

from __future__ import annotations

from superpie.completion.model.threads import MIN_WINDOW_S, CpuSample, ThreadGovernor, read_sample


class Clock:
    """A fake machine: the other processes' and this process's CPU seconds, and the time."""

    def __init__(self) -> None:
        self.others, self.own, self.at = 0.0, 0.0, 0.0

    def run(self, seconds: float, others_cores: float, own_cores: float = 1.0) -> None:
        self.others += seconds * others_cores
        self.own += seconds * own_cores
        self.at += seconds

    def sample(self) -> CpuSample:
        return CpuSample(self.others + self.own, self.own, self.at)


def governor(clock: Clock, most: int = 2) -> tuple[ThreadGovernor, list[int]]:
    applied: list[int] = []
    return ThreadGovernor(most, sample=clock.sample, apply=applied.append), applied


def test_an_idle_machine_gets_every_core_and_a_busy_one_leaves_the_others_theirs() -> None:
    clock = Clock()
    gov, applied = governor(clock)
    assert applied == [1]  # starts at the least until the load is known
    clock.run(1.0, others_cores=0.05, own_cores=1.9)  # our own threads do not count as load
    assert gov.adapt() == 2
    clock.run(1.0, others_cores=1.0)  # another process took a core
    assert gov.adapt() == 1
    clock.run(1.0, others_cores=0.4)  # it still uses part of one: the barrier would wait on it
    assert gov.adapt() == 1
    clock.run(1.0, others_cores=0.1)
    assert gov.adapt() == 2
    assert applied == [1, 2, 1, 2] and gov.changes == 3


def test_a_look_soon_after_the_last_keeps_the_count() -> None:
    clock = Clock()
    gov, applied = governor(clock, most=4)
    clock.run(1.0, others_cores=1.0)
    assert gov.adapt() == 3
    clock.run(MIN_WINDOW_S / 4, others_cores=4.0)  # too short a span to read the load from
    assert gov.adapt() == 3
    clock.run(MIN_WINDOW_S, others_cores=4.0)  # now long enough: the whole span since the last look counts
    assert gov.adapt() == 1
    assert applied == [1, 3, 1]


def test_no_load_reading_keeps_the_least() -> None:
    applied: list[int] = []
    gov = ThreadGovernor(2, sample=lambda: None, apply=applied.append)
    assert gov.adapt() == 1 and applied == [1]


def test_this_machine_s_reading() -> None:
    sample = read_sample()
    assert sample is None or (sample.machine_busy >= sample.own >= 0 and sample.at > 0)
