"""The Redis keys that web instances and Celery workers share (``JOB_BACKEND=celery``): the broker's queue, the
pending and active jobs, heartbeats, once-only guards and the workers' published model states.

Fair share: each job's task is published with a broker priority, the number of its client's jobs already waiting
or running (0 for a client with none, up to ``LAST_PRIORITY``); Redis keeps one list per priority and a worker takes
from the lowest non-empty one, so a client's first job goes ahead of another client's second and later ones. A
client's job never gets a lower priority than its own jobs still waiting (first come, first served within a
client), and the pending set is ordered by (priority, enqueue time): the broker's order, which ``position`` reads.

Liveness: a worker running a job refreshes a heartbeat key (``HEARTBEAT_TTL``) from a thread. A job whose heartbeat
is gone is run once more (attempt 2; a SET NX guard lets one reader re-enqueue it) and is failed with
``WORKER_DIED`` when that run dies too. A second delivery of an attempt, or a late one of an old attempt, is
ignored. Heartbeats vanish when Redis restarts, so nothing is judged dead until Redis has been up for a TTL.

Chunks of a long clip (web.jobs.celery.chunks): each is claimed once per attempt by a key naming the job, the
attempt and the chunk, kept alive like a heartbeat while it is predicted (CHUNK_CLAIM_TTL) and deleted when done; a
claim whose worker died expires and the chunk is predicted again. Every such key names the job: ``forget_job`` takes
them with the rest.
"""

from __future__ import annotations

import json
import time

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from redis.backoff import ConstantBackoff
from redis.retry import Retry

QUEUE = "image-to-3d"  # the Celery queue: a Redis list of that name, its length the real backlog
TASK_NAME = "image_to_3d.convert"
EXPORT_TASK = "image_to_3d.export"  # a later download (web.jobs.exports), on the same queue
CHUNK_TASK = "image_to_3d.video_chunk"  # one chunk of a long clip's depth (web.jobs.celery.chunks), on the same queue
MAX_ATTEMPTS = 2  # a job whose worker died runs once more, then fails
HEARTBEAT_TTL, HEARTBEAT_EVERY = 10, 2.0  # seconds
HEARTBEAT_GRACE = HEARTBEAT_TTL * 1.5  # after a Redis restart, nothing is judged before every live worker beat again
PRESENCE_TTL, PRESENCE_EVERY = 15, 3.0  # a worker's published model state, seconds
CLAIM_TTL = 2 * 24 * 3600  # remembers that an attempt started, well past the broker's redelivery of it

CHUNK_CLAIM_TTL = HEARTBEAT_TTL  # a chunk's claim lapses this long (seconds) after its worker's last refresh

BROKER_ERRORS = (redis.RedisError, OperationalError)  # Redis away, as our client and as kombu's publisher say it
_PREFIX = "image-to-3d:"
PENDING, ACTIVE = _PREFIX + "pending", _PREFIX + "active"  # sorted sets: job id → place in line / claim time
# Fair share: job id → its client (while pending or active); client → its jobs pending or active; client → the
# priority of its last job (while it has any).
CLIENT_OF, JOBS_OF, LAST_PRIORITY_OF = _PREFIX + "client-of", _PREFIX + "jobs-of", _PREFIX + "last-priority-of"
LAST_PRIORITY = 9  # kombu's Redis transport: priorities 0 (taken first) to 9
PRIORITY_SPAN = 1e10  # a pending job's score: priority × this + its enqueue time (seconds: about 1.8e9 today)

# Admission as one step in Redis, so that web instances accepting at the same moment cannot overshoot the cap: the
# jobs waiting are the pending set (queued, not yet claimed by a worker); a batch goes in whole when there is room
# for one more (a negative cap: always). Each job's priority is its client's count of jobs pending or active, but
# never below the client's last job's (its own order kept), at most LAST_PRIORITY. KEYS: PENDING, CLIENT_OF,
# JOBS_OF, LAST_PRIORITY_OF; ARGV: cap, enqueue time, client, job ids. Returns the jobs' priorities ({} when full).
_ADMIT = """
local cap = tonumber(ARGV[1])
if cap >= 0 and redis.call('ZCARD', KEYS[1]) >= cap then return {} end
local client = ARGV[3]
local count = tonumber(redis.call('HGET', KEYS[3], client) or '0')
local priority = tonumber(redis.call('HGET', KEYS[4], client) or '0')
local given = {}
for i = 4, #ARGV do
  priority = math.min(%(last)d, math.max(priority, count))
  redis.call('ZADD', KEYS[1], priority * %(span)d + tonumber(ARGV[2]), ARGV[i])
  if redis.call('HSET', KEYS[2], ARGV[i], client) == 1 then count = count + 1 end
  given[#given + 1] = priority
end
redis.call('HSET', KEYS[3], client, count)
redis.call('HSET', KEYS[4], client, priority)
return given
""" % {"last": LAST_PRIORITY, "span": PRIORITY_SPAN}

# A job leaves the line for good (released: done, failed, given up, or queued again later): its client counts one
# job fewer, and is forgotten at none. KEYS: CLIENT_OF, JOBS_OF, LAST_PRIORITY_OF; ARGV: job id.
_LEAVE = """
local client = redis.call('HGET', KEYS[1], ARGV[1])
if not client then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[2], client, -1) <= 0 then
  redis.call('HDEL', KEYS[2], client)
  redis.call('HDEL', KEYS[3], client)
end
return 1
"""


# A claim refreshed, or let go, only by its owner: a key that lapsed and was taken by another worker stays theirs,
# and one deleted (the job ended, or was deleted) never comes back. KEYS: the claim; ARGV: owner, TTL (ms).
_KEEP_CHUNK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_LET_GO_CHUNK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def make_celery(redis_url: str) -> Celery:
    """A Celery app on ``redis_url``: JSON only, one unacknowledged job per worker process, reconnecting forever."""
    app = Celery("image_to_3d", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json", accept_content=["json"], task_ignore_result=True, result_backend=None,
        task_default_queue=QUEUE, task_acks_late=True, task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1, worker_hijack_root_logger=False, worker_send_task_events=False,
        # A worker waits for Redis as long as it takes; a web request gives up after a few seconds (503).
        broker_connection_retry=True, broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
        # priority_steps: one Redis list per priority 0..9 (kombu's default has four), which workers read in that
        # order: the fair share's turns (Board). Web and workers must agree, hence here.
        broker_transport_options={"visibility_timeout": 3600, "socket_timeout": 5, "socket_connect_timeout": 3,
                                  "health_check_interval": 10, "priority_steps": list(range(LAST_PRIORITY + 1))},
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 4, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
    )
    return app


def redis_client(redis_url: str) -> redis.Redis:
    """A client that gives up in seconds (callers treat Redis being away as "cannot tell") and reconnects once."""
    return redis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=2, decode_responses=True,
                                retry=Retry(ConstantBackoff(0.2), 2), health_check_interval=10)


class Board:
    """The Redis keys web instances and workers share: the broker's queue length, pending and active jobs,
    heartbeats, once-only guards, and the workers' model states. Every method may raise redis.RedisError."""

    def __init__(self, redis_url: str):
        self.redis = redis_client(redis_url)
        self._admit = self.redis.register_script(_ADMIT)
        self._leave = self.redis.register_script(_LEAVE)
        self._keep_chunk = self.redis.register_script(_KEEP_CHUNK)
        self._let_go_chunk = self.redis.register_script(_LET_GO_CHUNK)

    def admit(self, job_ids: list[str], since: float, cap: int, client: str = "") -> list[int] | None:
        """Reserve places for ``client``'s ``job_ids`` in the pending set while it holds fewer than ``cap``
        (atomically): each job's broker priority, or None when full."""
        priorities = self._admit(keys=[PENDING, CLIENT_OF, JOBS_OF, LAST_PRIORITY_OF],
                                 args=[cap, since, client, *job_ids])
        return [int(priority) for priority in priorities] or None

    def pending_count(self) -> int:
        return int(self.redis.zcard(PENDING))

    def started(self, job_id: str, attempt: int) -> bool:
        """Whether a worker claimed ``attempt`` (the claim outlives the worker; a Redis restart forgets it)."""
        return bool(self.redis.exists(f"{_PREFIX}claim:{job_id}:{attempt}"))

    def add_pending(self, job_id: str, since: float, client: str = "") -> int:
        """Put a job queued again back in line (whatever the cap): its broker priority."""
        return self.admit([job_id], since, -1, client)[0]

    def position(self, job_id: str) -> int | None:
        rank = self.redis.zrank(PENDING, job_id)
        return None if rank is None else rank + 1

    def claim(self, job_id: str, attempt: int, owner: str) -> bool:
        """Start ``attempt`` once: False when it was started before (a duplicate or late delivery)."""
        if not self.redis.set(f"{_PREFIX}claim:{job_id}:{attempt}", owner, nx=True, ex=CLAIM_TTL):
            return False
        with self.redis.pipeline() as pipe:  # one transaction: a reader sees it pending or beating, never neither
            pipe.set(_heartbeat(job_id), f"{attempt} {owner}", ex=HEARTBEAT_TTL)
            pipe.zrem(PENDING, job_id)
            pipe.zadd(ACTIVE, {job_id: time.time()})
            pipe.execute()
        return True

    def beat(self, job_id: str, attempt: int, owner: str) -> None:
        with self.redis.pipeline() as pipe:  # SET, not EXPIRE: the key comes back after a Redis restart
            pipe.set(_heartbeat(job_id), f"{attempt} {owner}", ex=HEARTBEAT_TTL)
            pipe.zadd(ACTIVE, {job_id: time.time()}, nx=True)
            pipe.execute()

    def forget_claim(self, job_id: str, attempt: int) -> None:
        """Drop an attempt's claim once its job's record is finished (or names a later attempt): a later delivery is
        then ignored by the record itself, and a claim kept for CLAIM_TTL made Redis grow by a key per job."""
        self.redis.delete(f"{_PREFIX}claim:{job_id}:{attempt}")

    def release(self, job_id: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.delete(_heartbeat(job_id))
            pipe.zrem(ACTIVE, job_id)
            pipe.zrem(PENDING, job_id)
            self._leave(keys=[CLIENT_OF, JOBS_OF, LAST_PRIORITY_OF], args=[job_id], client=pipe)
            pipe.execute()

    def forget_job(self, job_id: str) -> None:
        """Release the job (its place in line, its client's share) and delete every key that names it (claims,
        once-only guards): a deleted job leaves nothing in Redis."""
        self.release(job_id)
        named = list(self.redis.scan_iter(f"{_PREFIX}*{job_id}*", count=500))
        if named:
            self.redis.delete(*named)

    # ------------------------------------------------------------------------------- a long clip's chunks

    def claim_chunk(self, job_id: str, attempt: int, index: int, owner: str) -> bool:
        """Take chunk ``index`` of ``attempt`` for ``owner`` unless someone holds it (it lapses after
        CHUNK_CLAIM_TTL without ``keep_chunk``)."""
        return bool(self.redis.set(_chunk(job_id, attempt, index), owner, nx=True, ex=CHUNK_CLAIM_TTL))

    def keep_chunk(self, job_id: str, attempt: int, index: int, owner: str) -> bool:
        """Refresh ``owner``'s claim; False when it is no longer theirs (lapsed, taken, or deleted)."""
        return bool(self._keep_chunk(keys=[_chunk(job_id, attempt, index)], args=[owner, CHUNK_CLAIM_TTL * 1000]))

    def let_go_chunk(self, job_id: str, attempt: int, index: int, owner: str) -> None:
        self._let_go_chunk(keys=[_chunk(job_id, attempt, index)], args=[owner])

    def chunk_owner(self, job_id: str, attempt: int, index: int) -> str | None:
        return self.redis.get(_chunk(job_id, attempt, index))

    def forget_chunks(self, job_id: str, attempt: int) -> None:
        """Every chunk claim of ``attempt`` goes (its chunks are done, or the attempt ended)."""
        named = list(self.redis.scan_iter(_chunk(job_id, attempt, "*"), count=500))
        if named:
            self.redis.delete(*named)

    def presence(self, job_id: str) -> tuple[bool, bool]:
        """(waiting in the pending set, a worker's heartbeat present)."""
        with self.redis.pipeline() as pipe:
            pipe.zscore(PENDING, job_id)
            pipe.exists(_heartbeat(job_id))
            pending, beating = pipe.execute()
        return pending is not None, bool(beating)

    def uptime(self) -> float:
        return float(self.redis.info("server").get("uptime_in_seconds", 0))

    def once(self, name: str, ttl: int = 3600) -> bool:
        """True for the first caller only (SET NX), across every web instance."""
        return bool(self.redis.set(f"{_PREFIX}once:{name}", "1", nx=True, ex=ttl))

    def tracked(self) -> list[str]:
        """Job ids pending or active: what the web tier's watch re-reads."""
        return list(dict.fromkeys(self.redis.zrange(ACTIVE, 0, -1) + self.redis.zrange(PENDING, 0, -1)))

    def publish_worker(self, name: str, state: dict) -> None:
        self.redis.set(f"{_PREFIX}worker:{name}", json.dumps(state), ex=PRESENCE_TTL)

    def workers(self) -> list[dict]:
        keys = list(self.redis.scan_iter(f"{_PREFIX}worker:*", count=200))
        return [json.loads(value) for value in self.redis.mget(keys) if value] if keys else []


def _heartbeat(job_id: str) -> str:
    return f"{_PREFIX}heartbeat:{job_id}"


def _chunk(job_id: str, attempt: int, index) -> str:
    return f"{_PREFIX}chunk:{job_id}:{attempt}:{index}"


