"""A job's states (web.jobs.record): every legal transition does what it says, every other one is refused, and
nothing outside that module writes a job's status."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from web.jobs.record import CANCELLED, DONE, FAILED, QUEUED, RUNNING, STATUSES, TRANSITIONS, IllegalTransition, Job

ROOT = Path(__file__).resolve().parent.parent
CALLS = {
    "start": lambda job: job.start(),
    "advance": lambda job: job.advance("estimating depth"),
    "succeed": lambda job: job.succeed({"points": 3}),
    "fail": lambda job: job.fail("The image is damaged.", "damaged_image"),
    "cancel": lambda job: job.cancel("The server stopped."),
    "retry": lambda job: job.retry(),
    "resend": lambda job: job.resend(),
}


def job_in(status: str) -> Job:
    return Job(id="0" * 32, status=status, files=["cloud.ply"], attempt=1)


def test_the_table_names_every_transition_and_only_known_statuses():
    assert {name for name, _ in TRANSITIONS} == set(CALLS)
    assert all(source in STATUSES and target in STATUSES for (_, source), target in TRANSITIONS.items())
    assert not any(source in (DONE, FAILED, CANCELLED) for _, source in TRANSITIONS)  # final states are final


@pytest.mark.parametrize(("name", "source"), sorted(TRANSITIONS))
def test_every_legal_transition_moves_the_job(name, source):
    job = job_in(source)
    CALLS[name](job)
    assert job.status == TRANSITIONS[(name, source)]
    assert job.finished == (job.status in (DONE, FAILED, CANCELLED))


@pytest.mark.parametrize(("name", "source"), sorted(set(itertools.product(CALLS, STATUSES)) - set(TRANSITIONS)))
def test_every_other_transition_is_refused_and_changes_nothing(name, source):
    job = job_in(source)
    before = dict(vars(job))
    with pytest.raises(IllegalTransition, match=f"cannot {name} a {source} job"):
        CALLS[name](job)
    assert vars(job) == before


def test_what_each_transition_records():
    job = job_in(QUEUED)
    job.start()
    assert (job.stage, 0 < job.progress < 1) == (RUNNING, True)
    job.advance("estimating depth")
    assert job.stage == "estimating depth"
    job.retry()  # the worker died: a new attempt, queued again with nothing offered
    assert (job.status, job.stage, job.progress, job.attempt, job.files) == (QUEUED, QUEUED, 0.0, 2, [])
    job.resend()  # the queue lost the message: the same attempt again
    assert job.attempt == 2
    job.start()
    job.succeed({"points": 3})
    assert (job.status, job.stage, job.progress, job.info) == (DONE, DONE, 1.0, {"points": 3})
    failed = job_in(RUNNING)
    failed.fail("The image is damaged.", "damaged_image")
    assert (failed.stage, failed.error, failed.error_code, failed.files) == (
        FAILED, "The image is damaged.", "damaged_image", [])
    cancelled = job_in(QUEUED)
    cancelled.cancel("The server stopped.")
    assert (cancelled.status, cancelled.error_code, cancelled.files) == (CANCELLED, CANCELLED, [])


def test_only_the_record_module_writes_a_jobs_status():
    """No ``job.status = ...`` (nor a tuple assignment naming it) anywhere in web/ but web/jobs/record.py; an
    object's own status (``self.status``: an HTTP status) and export states (web/jobs/exports.py, a record with a
    status of its own) are other things."""
    writers = []
    for path in sorted((ROOT / "web").rglob("*.py")):
        if path.name == "record.py" or path.name == "exports.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                if any(isinstance(name, ast.Attribute) and name.attr == "status"
                       and not (isinstance(name.value, ast.Name) and name.value.id == "self") for name in names):
                    writers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert writers == [], "a job's status is written only by web/jobs/record.py: " + ", ".join(writers)
