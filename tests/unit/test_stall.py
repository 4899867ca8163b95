from streams.decider.stall import Lagging, StallDetector, lagging_partitions, repaired_acks


def test_lagging_partitions_are_those_with_events_past_the_committed_offset() -> None:
    committed = {"a": 10, "b": 5, "c": None}
    highwater = {"a": 10, "b": 9, "c": 3, "d": None}
    assert lagging_partitions(committed, highwater) == [Lagging("b", 5, 9), Lagging("c", 0, 3)]


def test_no_action_while_events_are_processed() -> None:
    detector: StallDetector[str] = StallDetector(after_s=10)
    lag = [Lagging("a", 0, 5)]
    for t in range(0, 100, 5):
        assert detector.observe(float(t), processed=t, busy=False, lagging=lag) == []


def test_no_action_while_busy_or_caught_up() -> None:
    detector: StallDetector[str] = StallDetector(after_s=10)
    lag = [Lagging("a", 0, 5)]
    for t in range(0, 100, 5):
        assert detector.observe(float(t), processed=1, busy=True, lagging=lag) == []
    for t in range(100, 200, 5):
        assert detector.observe(float(t), processed=1, busy=False, lagging=[]) == []


def test_a_stall_is_reported_after_the_timeout_then_again_only_after_another() -> None:
    detector: StallDetector[str] = StallDetector(after_s=10, max_seeks=1)
    lag = [Lagging("a", 3, 5)]
    assert detector.observe(5.0, 7, False, lag) == []  # the last progress: the stall clock starts
    assert detector.observe(14.0, 7, False, lag) == []
    assert detector.observe(15.0, 7, False, lag) == lag
    assert not detector.escalate
    assert detector.observe(20.0, 7, False, lag) == []
    assert detector.observe(25.0, 7, False, lag) == lag
    assert detector.escalate  # seeking twice did not help


def test_progress_after_a_seek_resets_the_escalation() -> None:
    detector: StallDetector[str] = StallDetector(after_s=1, max_seeks=1)
    lag = [Lagging("a", 3, 5)]
    detector.observe(0.0, 1, False, lag)
    assert detector.observe(1.0, 1, False, lag) == lag
    assert detector.observe(2.0, 1, False, lag) == lag
    assert detector.escalate
    detector.observe(2.5, 2, False, lag)  # the seek helped
    assert not detector.escalate
    assert detector.observe(3.5, 2, False, lag) == lag
    assert not detector.escalate
    assert not detector.escalate


def test_acks_are_repaired_only_when_duplicates_or_stale_entries_block_commits() -> None:
    # as seen in the crash test: a stale offset below the committed one, then every offset twice
    assert repaired_acks([1782, 1783, 1783, 1784, 1784, 1786], committed=1783) == [1783, 1784, 1786]
    assert repaired_acks([1783, 1784, 1786], committed=1783) is None  # a hole is not ours to fill
    assert repaired_acks([5, 3, 4], committed=None) == [3, 4, 5]
    assert repaired_acks([], committed=7) is None


def test_a_missing_event_at_the_committed_offset_blocks_the_commit() -> None:
    from streams.decider.faust_guards import head_is_missing

    assert head_is_missing([11, 12], committed=10, covered_by_gap=False)  # Faust itself would commit 13
    assert not head_is_missing([10, 11], committed=10, covered_by_gap=False)
    assert not head_is_missing([11, 12], committed=10, covered_by_gap=True)  # a compacted or marker offset
    assert not head_is_missing([11, 12], committed=None, covered_by_gap=False)  # nothing committed yet
    assert not head_is_missing([], committed=10, covered_by_gap=False)


def test_a_recovery_that_never_ends_with_events_waiting_is_a_hang() -> None:
    detector: StallDetector[str] = StallDetector(after_s=10, max_busy_s=100)
    lag = [Lagging("a", 0, 5)]
    assert detector.observe(0.0, 1, True, lag, settling=True) == []  # the last progress
    for t in range(5, 100, 5):
        assert detector.observe(float(t), 1, True, lag, settling=True) == []
    assert not detector.wedged
    assert detector.observe(105.0, 1, True, lag, settling=True) == lag
    assert detector.wedged


def test_a_long_recovery_that_makes_progress_or_has_nothing_waiting_is_no_hang() -> None:
    detector: StallDetector[str] = StallDetector(after_s=10, max_busy_s=100)
    lag = [Lagging("a", 0, 5)]
    for t in range(0, 300, 5):  # progress every 50 s
        assert detector.observe(float(t), t // 50, True, lag, settling=True) == []
    for t in range(300, 600, 5):  # caught up
        assert detector.observe(float(t), 99, True, [], settling=True) == []
    for t in range(600, 900, 5):  # a long batch is busy but not settling: the old rule waits
        assert detector.observe(float(t), 100, True, lag, settling=False) == []
    assert not detector.wedged


def test_without_a_limit_a_recovery_may_last_for_ever() -> None:
    detector: StallDetector[str] = StallDetector(after_s=10)
    lag = [Lagging("a", 0, 5)]
    for t in range(0, 10_000, 50):
        assert detector.observe(float(t), 1, True, lag, settling=True) == []
    assert not detector.wedged
