"""Fair share: the queue serves clients in turn (web.jobs.embedded.FairQueue), so one client's many queued jobs
do not keep another's one job waiting behind them all. Through HTTP on the real app, one conversion at a time, each
held at its start until the test lets it through: the order jobs reach that hold is the order they started."""

from __future__ import annotations

import io
import threading

import pytest
from conftest import png_bytes, wait_until

from web.jobs.embedded import FairQueue

A, B, C = "198.51.100.1", "198.51.100.2", "203.0.113.7"


class Gate:
    """Holds every conversion of ``runner`` at its start until ``let_through``; ``started``: job ids in the order
    they reached it (one conversion thread: the order they started)."""

    def __init__(self, runner):
        self.started: list[str] = []
        self._passes = threading.Semaphore(0)
        convert = runner.convert

        def held(job, upload, report):
            self.started.append(job.id)
            assert self._passes.acquire(timeout=120)  # a hang guard only: the test lets it through
            return convert(job, upload, report)

        runner.convert = held

    def let_through(self) -> str:
        """Let the running job go on and wait for the next one to reach the gate: its id."""
        count = len(self.started)
        self._passes.release()
        wait_until(lambda: len(self.started) > count, timeout=120, interval=0.02)
        return self.started[count]

    def open(self) -> None:
        """Let everything through (the app's shutdown cancels what still waits)."""
        self._passes.release(1000)


@pytest.fixture
def held_app(make_app):
    """(app, test client, gate): the real app, one conversion at a time, room for 40 waiting jobs."""
    app = make_app(MAX_QUEUED_JOBS=40, CONVERSION_WORKERS=1)
    gate = Gate(app.extensions["image_to_3d"].runner)
    try:
        yield app, app.test_client(), gate
    finally:
        gate.open()


def post(client, address: str, picture: bytes) -> str:
    """POST one conversion from ``address``; its job id."""
    response = client.post("/api/v1/conversions", content_type="multipart/form-data",
                           data={"image": (io.BytesIO(picture), "p.png"), "detail": "low"},
                           environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["id"]


def post_batch(client, address: str, picture: bytes, count: int) -> list[str]:
    response = client.post("/api/v1/batches", content_type="multipart/form-data",
                           data={"images": [(io.BytesIO(picture), f"{n}.png") for n in range(count)],
                                 "detail": "low"},
                           environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["job_ids"]


def positions(client, job_ids: list[str]) -> dict[str, int | None]:
    return {job_id: client.get(f"/api/v1/conversions/{job_id}").get_json()["queue_position"] for job_id in job_ids}


def started_before(gate: Gate, job_id: str) -> int:
    """Let jobs through one at a time until ``job_id`` starts: how many others started first."""
    others = 0
    while gate.let_through() != job_id:
        others += 1
    return others


def test_one_clients_job_starts_next_after_another_clients_twenty(held_app, photo):
    """The issue's goal: A posts 20 jobs, then B posts 1; B's job starts within 2 job durations of its POST (it
    waited behind all of A's 19 still queued before fair share)."""
    app, client, gate = held_app
    picture = png_bytes(photo)
    a_jobs = [post(client, A, picture) for _ in range(20)]
    wait_until(lambda: gate.started == a_jobs[:1], timeout=120, interval=0.02)  # A's first runs, 19 wait
    b_job = post(client, B, picture)
    assert positions(client, [b_job]) == {b_job: 1}
    others = started_before(gate, b_job)
    print(f"fair share: {others} job(s) started between B's POST and B's job (A had 19 queued)")
    assert others == 0
    view = client.get(f"/api/v1/conversions/{b_job}").get_json()
    assert view["status"] == "running" and view["queue_position"] is None
    assert gate.let_through() == a_jobs[1]  # then A's next, in A's order


def test_a_batch_counts_by_its_jobs_against_its_client(held_app, photo):
    app, client, gate = held_app
    picture = png_bytes(photo)
    batch = post_batch(client, A, picture, 20)
    wait_until(lambda: gate.started == batch[:1], timeout=120, interval=0.02)
    b_job = post(client, B, picture)
    assert started_before(gate, b_job) == 0
    assert [gate.let_through() for _ in range(3)] == batch[1:4]  # the batch goes on in its order


def test_three_clients_take_turns_and_queue_positions_tell_the_truth(held_app, photo):
    """Positions are the order jobs will start, and change as clients arrive: A's second job was next until B and
    C, who had had no turn, came. At every step the job at position 1 is the next to start."""
    app, client, gate = held_app
    picture = png_bytes(photo)
    a1, a2, a3 = (post(client, A, picture) for _ in range(3))
    wait_until(lambda: gate.started == [a1], timeout=120, interval=0.02)
    assert positions(client, [a2, a3]) == {a2: 1, a3: 2}
    b1, b2 = post(client, B, picture), post(client, B, picture)
    c1 = post(client, C, picture)
    a4 = post(client, A, picture)
    expected = [b1, c1, a2, b2, a3, a4]
    assert positions(client, expected) == {job_id: place for place, job_id in enumerate(expected, 1)}
    waiting = list(expected)
    while waiting:
        seen = positions(client, waiting)
        assert sorted(seen.values()) == list(range(1, len(waiting) + 1)), seen
        first = min(seen, key=seen.get)
        assert gate.let_through() == first
        waiting.remove(first)
    assert gate.started == [a1, *expected]


def test_one_client_alone_is_served_first_come_first_served(held_app, photo):
    app, client, gate = held_app
    picture = png_bytes(photo)
    first = post(client, A, picture)
    wait_until(lambda: gate.started == [first], timeout=120, interval=0.02)
    posted = [post(client, A, picture), *post_batch(client, A, picture, 3), post(client, A, picture)]
    assert positions(client, posted) == {job_id: place for place, job_id in enumerate(posted, 1)}
    assert [gate.let_through() for _ in posted] == posted


def test_the_job_whose_turn_came_waits_first_in_line_for_memory(make_app, photo):
    """Memory admission holds under turns: the job whose turn came waits for room at position 1, and no job of
    another client overtakes it (as none did in arrival order)."""
    app = make_app(MAX_QUEUED_JOBS=40, CONVERSION_WORKERS=1, JOB_MEMORY_MB=400)
    service, client = app.extensions["image_to_3d"], app.test_client()
    gate = Gate(service.runner)
    picture = png_bytes(photo)
    service.memory.budget.reserve(400)  # as if a large conversion were running: nothing fits
    held = True
    try:
        a1, a2 = post(client, A, picture), post(client, A, picture)
        wait_until(lambda: service.memory.budget.waiting == 1)  # A's first is in line for memory
        b1 = post(client, B, picture)
        assert positions(client, [a1, b1, a2]) == {a1: 1, b1: 2, a2: 3}
        assert client.get(f"/api/v1/conversions/{a1}").get_json()["status"] == "queued"
        service.memory.budget.release(400)
        held = False
        wait_until(lambda: gate.started == [a1], timeout=120, interval=0.02)
        assert [gate.let_through(), gate.let_through()] == [b1, a2]
    finally:
        if held:
            service.memory.budget.release(400)
        gate.open()


# ------------------------------------------------------------------------------------------- the rule, alone


def play(queue: FairQueue) -> list[str]:
    """Take and start every waiting job, one at a time, finishing each before the next: their order."""
    order = []
    while (taken := queue.take()) is not None:
        job_id, _ = taken
        assert queue.start(job_id)
        queue.finish(job_id)
        order.append(job_id)
    return order


def test_the_client_served_least_recently_goes_first_each_in_its_own_order():
    queue = FairQueue()
    for job_id in ("a1", "a2", "a3"):
        queue.add(job_id, "A")
    job_id, _ = queue.take()
    assert job_id == "a1" and queue.start("a1")
    for job_id, client in (("b1", "B"), ("b2", "B"), ("c1", "C")):
        queue.add(job_id, client)
    assert queue.order() == ["b1", "c1", "a2", "b2", "a3"]
    assert [queue.position(job_id) for job_id in queue.order()] == [1, 2, 3, 4, 5]
    queue.finish("a1")
    assert play(queue) == ["b1", "c1", "a2", "b2", "a3"]


def test_a_client_still_running_a_job_keeps_its_last_turn_and_one_gone_is_forgotten():
    queue = FairQueue()
    queue.add("a1", "A")
    queue.add("a2", "A")
    assert queue.take()[0] == "a1" and queue.start("a1")
    queue.add("b1", "B")
    assert queue.take()[0] == "b1" and queue.start("b1")
    queue.add("b2", "B")  # B's job runs: B had the latest turn, so A's waiting job goes first
    assert queue.order() == ["a2", "b2"]
    queue.finish("b1")
    queue.remove("b2")  # B has nothing left: forgotten
    queue.add("b3", "B")  # B is back, never served as far as the queue knows
    assert queue.order() == ["b3", "a2"]


def test_a_taken_job_keeps_position_one_until_it_starts_or_leaves():
    queue = FairQueue()
    queue.add("a1", "A", item="upload")
    assert queue.take() == ("a1", "upload")
    queue.add("b1", "B")
    assert queue.position("a1") == 1 and queue.position("b1") == 2 and "a1" in queue
    assert queue.take()[0] == "b1"
    assert queue.remove("a1") and not queue.start("a1")  # cancelled while it waited for memory
    assert queue.order() == ["b1"] and len(queue) == 1 and queue.take() is None
