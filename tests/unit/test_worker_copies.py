"""The worker's record of the tries it runs, against which redelivered copies are checked."""

from __future__ import annotations

from hareflow.common.broker import Delivery
from hareflow.worker.copies import RECENT, Copies


class Settled(Delivery):
    """A delivery that remembers how it was settled."""

    def __init__(self, name: str) -> None:
        self.body = name.encode()
        self.delivery_count = 1
        self.redelivered = False
        self.how: list[str] = []

    def ack(self) -> None:
        self.how.append("ack")

    def requeue(self) -> None:
        self.how.append("requeue")

    def hand_back(self) -> None:
        self.how.append("hand_back")


def test_a_copy_of_a_running_try_is_acked_with_its_final_result() -> None:
    copies = Copies()
    first, copy = Settled("first"), Settled("copy")
    run = copies.start((1, 1, 0), first)
    assert run is not None
    assert copies.absorb((1, 1, 0), copy) and copy.how == []  # held: not run, not acked yet
    run.final = True
    run.ack()  # the final result is confirmed
    assert (first.how, copy.how) == (["ack"], ["ack"])
    late = Settled("late")
    assert copies.absorb((1, 1, 0), late) and late.how == ["ack"]  # finished here: acked at once


def test_after_an_early_ack_a_copy_is_acked_on_arrival_and_the_run_stays_open() -> None:
    copies = Copies()
    run = copies.start((2, 1, 0), Settled("first"))
    assert run is not None
    run.ack()  # long_task_ack_after: acked while still running
    copy = Settled("copy")
    assert copies.absorb((2, 1, 0), copy) and copy.how == ["ack"]
    assert copies.start((2, 1, 0), Settled("again")) is None


def test_other_tries_and_abandoned_runs_are_not_copies() -> None:
    copies = Copies()
    run = copies.start((3, 1, 0), Settled("first"))
    assert run is not None
    assert not copies.absorb((3, 2, 0), Settled("retry"))  # a new try is new work
    assert not copies.absorb((4, 1, 0), Settled("other"))
    held = Settled("held")
    copies.absorb((3, 1, 0), held)
    run.requeue()  # the run ends without a result: every delivery goes back
    assert held.how == ["requeue"]
    assert copies.start((3, 1, 0), Settled("redelivered")) is not None


def test_only_the_latest_finished_tries_are_remembered() -> None:
    copies = Copies()
    for n in range(RECENT + 1):
        run = copies.start((n, 1, 0), Settled(str(n)))
        assert run is not None
        run.final = True
        run.ack()
    assert not copies.absorb((0, 1, 0), Settled("oldest"))
    assert copies.absorb((RECENT, 1, 0), Settled("newest"))


def test_a_rescheduled_sensors_next_poke_is_new_work_and_its_redelivered_copy_is_not() -> None:
    copies = Copies()
    run = copies.start((5, 1, 0), Settled("first poke"))
    assert run is not None
    run.final = True
    run.ack()  # up_for_reschedule confirmed
    assert not copies.absorb((5, 1, 1), Settled("second poke"))  # same try, next delivery: runs
    assert copies.absorb((5, 1, 0), Settled("late copy of the first"))  # acked, not run


def test_each_delivery_of_a_try_numbers_its_log_chunks_from_its_own_base() -> None:
    from hareflow.worker.runtime import LOG_SEQ_PER_DELIVERY, LOG_SEQ_PER_RESCHEDULE, first_log_seq

    assert first_log_seq(1, 0) == 0  # a first delivery numbers from 1, as before
    assert first_log_seq(2, 0) == LOG_SEQ_PER_DELIVERY
    assert first_log_seq(3, 2) == 2 * LOG_SEQ_PER_DELIVERY + 2 * LOG_SEQ_PER_RESCHEDULE
    assert first_log_seq(2, 200_000) < 2 * LOG_SEQ_PER_DELIVERY  # pokes never reach the next delivery
