"""Job state in Redis, shared by several replicas (``CSD_SR_REDIS_URL``); the files stay in the jobs folder,
which the replicas must share too (a shared volume).

The same interface and semantics as ``service.jobs.store.JobStore``. Layout, every key under ``prefix``:
``{p}:job:{id}`` a hash of the record's fields, each JSON-encoded; ``{p}:key:{idempotency key}`` the job's id;
``{p}:{state}`` a sorted set of the ids in that state, scored by ``created_at`` (queued: the claim order),
``heartbeat_at`` (running: the lease ``recover`` reads) or ``finished_at`` (finished: the TTL). Every change
that touches more than one key, or reads before it writes, is one Lua script: atomic across replicas.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import redis

from service.jobs.store import FAILED, FINISHED, MAX_ATTEMPTS, QUEUED, RUNNING, STATES, JobRecord

_FIELDS = {f.name for f in dataclasses.fields(JobRecord)}

# Shared by every script. States are compared decoded; timestamps come from the caller already JSON-encoded
# (cjson would write 14 significant digits), so a record keeps the caller's clock as the SQLite store does.
_PRELUDE = f"""
local P = ARGV[1]
local STATES = cjson.decode('{json.dumps(STATES)}')
local QUEUED, RUNNING, FAILED = '{QUEUED}', '{RUNNING}', '{FAILED}'
local function job_key(id) return P .. ':job:' .. id end
local function state_of(id)
  local state = redis.call('HGET', job_key(id), 'state')
  return state and cjson.decode(state)
end
local function reindex(id)  -- the id in its state's sorted set only, scored by that state's time
  for _, s in ipairs(STATES) do redis.call('ZREM', P .. ':' .. s, id) end
  local state = state_of(id)
  local field = 'finished_at'
  if state == QUEUED then field = 'created_at' elseif state == RUNNING then field = 'heartbeat_at' end
  redis.call('ZADD', P .. ':' .. state, tonumber(redis.call('HGET', job_key(id), field)) or 0, id)
end
"""

_ADD = """
local id, has_key, key = ARGV[2], ARGV[3], ARGV[4]
if has_key == '1' then
  local existing = redis.call('GET', P .. ':key:' .. key)
  if existing then return redis.call('HGETALL', job_key(existing)) end
  redis.call('SET', P .. ':key:' .. key, id)
end
redis.call('HSET', job_key(id), unpack(ARGV, 5))
reindex(id)
return false
"""

_UPDATE = """
if redis.call('EXISTS', job_key(ARGV[2])) == 0 then return 0 end  -- no partial record for a removed job
redis.call('HSET', job_key(ARGV[2]), unpack(ARGV, 3))
reindex(ARGV[2])
return 1
"""

_FINISH = """
local state = state_of(ARGV[2])
if state ~= QUEUED and state ~= RUNNING then return 0 end
redis.call('HSET', job_key(ARGV[2]), unpack(ARGV, 3))
reindex(ARGV[2])
return 1
"""

_CLAIM = """
local id = redis.call('ZRANGE', P .. ':' .. QUEUED, 0, 0)[1]
if not id then return false end
local attempts = tonumber(redis.call('HGET', job_key(id), 'attempts')) or 0
redis.call('HSET', job_key(id), 'state', cjson.encode(RUNNING), 'started_at', ARGV[2], 'heartbeat_at', ARGV[2],
  'attempts', tostring(attempts + 1))
reindex(id)
return redis.call('HGETALL', job_key(id))
"""

_BEAT = """
if state_of(ARGV[2]) ~= RUNNING then return 0 end
redis.call('HSET', job_key(ARGV[2]), 'heartbeat_at', ARGV[3])
reindex(ARGV[2])
return 1
"""

_RECOVER = f"""
local requeued, failed = {{}}, {{}}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':' .. RUNNING, '-inf', ARGV[2])) do
  if (tonumber(redis.call('HGET', job_key(id), 'attempts')) or 0) >= {MAX_ATTEMPTS} then
    redis.call('HSET', job_key(id), 'state', cjson.encode(FAILED), 'finished_at', ARGV[3],
      'error', cjson.encode('crashed'), 'detail', ARGV[4])
    table.insert(failed, id)
  else
    redis.call('HSET', job_key(id), 'state', cjson.encode(QUEUED), 'started_at', 'null', 'tiles_done', '0')
    table.insert(requeued, id)
  end
  reindex(id)
end
return {{requeued, failed}}
"""

_AHEAD = """
local jobs = {}
for _, id in ipairs(redis.call('ZRANGE', P .. ':' .. RUNNING, 0, -1)) do
  table.insert(jobs, redis.call('HGETALL', job_key(id)))
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':' .. QUEUED, '-inf', ARGV[2])) do
  table.insert(jobs, redis.call('HGETALL', job_key(id)))
end
return jobs
"""

_DISK_BYTES = """
local total = 0
for _, s in ipairs(STATES) do
  for _, id in ipairs(redis.call('ZRANGE', P .. ':' .. s, 0, -1)) do
    if s == QUEUED or s == RUNNING then
      local v = redis.call('HMGET', job_key(id), 'input_bytes', 'reserved_bytes')
      total = total + (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
    else
      total = total + (tonumber(redis.call('HGET', job_key(id), 'result_bytes')) or 0)
    end
  end
end
return total
"""

_REMOVE = """
local key = redis.call('HGET', job_key(ARGV[2]), 'idempotency_key')
if key and key ~= 'null' then  -- the key is free again, as with the SQLite store's unique index
  local mapping = P .. ':key:' .. cjson.decode(key)
  if redis.call('GET', mapping) == ARGV[2] then redis.call('DEL', mapping) end
end
for _, s in ipairs(STATES) do redis.call('ZREM', P .. ':' .. s, ARGV[2]) end
redis.call('DEL', job_key(ARGV[2]))
return 1
"""


class RedisJobStore:
    """The jobs' state in Redis; safe to call from the event loop and the job thread (redis-py's pool).

    Shared by replicas (``shared`` True): a job left running is another's only once its lease is stale.
    """

    shared = True

    def __init__(self, url: str, folder: Path, prefix: str = "csd-sr") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._prefix = prefix
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._scripts = {
            name: self._redis.register_script(_PRELUDE + lua)
            for name, lua in dict(
                add=_ADD,
                update=_UPDATE,
                finish=_FINISH,
                claim=_CLAIM,
                beat=_BEAT,
                recover=_RECOVER,
                ahead=_AHEAD,
                disk_bytes=_DISK_BYTES,
                remove=_REMOVE,
            ).items()
        }

    def input_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.in"

    def result_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.out"

    def partial_path(self, job_id: str) -> Path:
        """The result while it is written (renamed to ``result_path`` once complete)."""
        return self.folder / f"{job_id}.part"

    def add(self, job: JobRecord) -> JobRecord:
        """Insert ``job``; with an ``idempotency_key`` already used, the existing job instead (not inserted)."""
        key = job.idempotency_key
        existing = self._run("add", job.id, "0" if key is None else "1", key or "", *_pairs(dataclasses.asdict(job)))
        return job if existing is None else _record(existing)

    def get_by_key(self, idempotency_key: str) -> JobRecord | None:
        job_id = self._redis.get(self._key("key", idempotency_key))
        return None if job_id is None else self.get(job_id)

    def get(self, job_id: str) -> JobRecord | None:
        return _record(self._redis.hgetall(self._key("job", job_id)))

    def update(self, job_id: str, **fields: object) -> None:
        if fields:
            self._run("update", job_id, *_pairs(fields))

    def finish(self, job_id: str, state: str, **fields: object) -> bool:
        """Move a queued or running job to a final ``state``; False if it had finished already."""
        return self._run("finish", job_id, *_pairs({"state": state, "finished_at": time.time(), **fields})) == 1

    def claim(self) -> JobRecord | None:
        """The oldest queued job, now running (atomic: one claimant gets it)."""
        return _record(self._run("claim", json.dumps(time.time())))

    def beat(self, job_id: str) -> bool:
        """Renew a running job's lease; False when it is no longer running (cancelled, removed)."""
        return self._run("beat", job_id, json.dumps(time.time())) == 1

    def recover(self, stale_before: float | None = None) -> tuple[list[str], list[str]]:
        """Jobs left running by a server that stopped (every running one, or those whose lease is older
        than ``stale_before``) run again from the start, unless they were running through
        ``MAX_ATTEMPTS`` starts, which fail. Returns (requeued ids, failed ids)."""
        below = "+inf" if stale_before is None else f"({stale_before!r}"
        detail = f"the server stopped during each of {MAX_ATTEMPTS} runs"
        requeued, failed = self._run("recover", below, json.dumps(time.time()), json.dumps(detail))
        return requeued, failed

    def position(self, job: JobRecord) -> int:
        """Jobs queued ahead of ``job`` (0: it runs next)."""
        return self._redis.zcount(self._key(QUEUED), "-inf", f"({job.created_at!r}")

    def ahead(self, job: JobRecord) -> list[JobRecord]:
        """The running jobs and the queued ones ahead of ``job``."""
        return [r for r in map(_record, self._run("ahead", f"({job.created_at!r}")) if r is not None]

    def counts(self) -> dict[str, int]:
        pipe = self._redis.pipeline()
        for state in STATES:
            pipe.zcard(self._key(state))
        return dict(zip(STATES, pipe.execute(), strict=True))

    def disk_bytes(self) -> int:
        """Bytes the jobs hold or will hold: inputs of unfinished jobs, results (or their reservation)."""
        return self._run("disk_bytes")

    def expired(self, before: float) -> list[str]:
        """Finished jobs older than ``before`` (their time to live is over)."""
        pipe = self._redis.pipeline()
        for state in FINISHED:
            pipe.zrangebyscore(self._key(state), "-inf", f"({before!r}")
        return [job_id for ids in pipe.execute() for job_id in ids]

    def next_expiry(self, ttl_s: float) -> float | None:
        """When the oldest finished job expires (``time.time()`` seconds), None with none finished."""
        pipe = self._redis.pipeline()
        for state in FINISHED:
            pipe.zrange(self._key(state), 0, 0, withscores=True)
        oldest = [score for first in pipe.execute() for _, score in first]
        return min(oldest) + ttl_s if oldest else None

    def remove(self, job_id: str) -> None:
        """Forget the job and delete its files."""
        self._run("remove", job_id)
        for path in (self.input_path(job_id), self.partial_path(job_id), self.result_path(job_id)):
            path.unlink(missing_ok=True)  # a running job's partial result too: it stops at its next beat

    def close(self) -> None:
        self._redis.close()

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def _run(self, script: str, *args: object) -> Any:  # each script's own reply
        return self._scripts[script](args=[self._prefix, *args])


def _pairs(fields: dict) -> list[str]:
    """HSET's field, value arguments, each value JSON-encoded."""
    return [item for k, v in fields.items() for item in (k, json.dumps(v))]


def _record(flat: list | dict) -> JobRecord | None:
    """A record from HGETALL (a dict, or a script's flat list); None for a job that is not there."""
    if not flat:
        return None
    pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
    return JobRecord(**{k: json.loads(v) for k, v in pairs if k in _FIELDS})  # not those only a newer version has
