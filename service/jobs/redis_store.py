"""Job state in Redis, shared by several replicas (``CSD_SR_REDIS_URL``); the files stay in the jobs folder
(``service.jobs.base.JobFiles``), which the replicas must share too (a shared volume).

Implements ``service.jobs.base.JobStore`` with the SQLite store's semantics. Layout, every key under ``prefix``:
``{p}:job:{id}`` a hash of the record's fields, each JSON-encoded; ``{p}:key:{idempotency key}`` the job's id;
``{p}:{state}`` a sorted set of the ids in that state, scored by ``created_at`` (queued: the claim order),
``heartbeat_at`` (running: the lease ``recover`` reads) or ``finished_at`` (finished: the TTL);
``{p}:disk_bytes`` the disk budget's counter (the sum of ``JobRecord.disk_bytes``). Every change that touches
more than one key, or reads before it writes, is one Lua script: atomic across replicas.

Each script declares every key it touches in ``KEYS`` (Redis Cluster and proxies route by them); on a
cluster, give a prefix in braces (``CSD_SR_REDIS_PREFIX={csd-sr}``) so that all the keys are in one slot.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import redis

from service.jobs.base import (
    CRASHED_DETAIL,
    FAILED,
    FINISHED,
    MAX_ATTEMPTS,
    QUEUED,
    RUNNING,
    STATES,
    JobFiles,
    JobRecord,
)

_FIELDS = {f.name for f in dataclasses.fields(JobRecord)}

# Shared by every script. Every script's KEYS begin with the state sets (in ``STATES`` order) and the disk
# counter, which ``settle`` keeps; its own keys follow, the job's hash first (KEYS[#STATES + 2]). States are
# compared decoded; timestamps come from the caller already JSON-encoded (cjson would write 14 significant
# digits), so a record keeps the caller's clock as the SQLite store does.
_PRELUDE = f"""
local STATES = cjson.decode('{json.dumps(STATES)}')
local QUEUED, RUNNING, FAILED = '{QUEUED}', '{RUNNING}', '{FAILED}'
local SET = {{}}
for i, s in ipairs(STATES) do SET[s] = KEYS[i] end
local DISK = KEYS[#STATES + 1]
local OWN = #STATES + 2
local function state_of(job)
  local state = redis.call('HGET', job, 'state')
  return state and cjson.decode(state)
end
local function held(job)  -- JobRecord.disk_bytes; 0 for a job not on record
  local v = redis.call('HMGET', job, 'state', 'input_bytes', 'reserved_bytes', 'result_bytes')
  if not v[1] then return 0 end
  local state = cjson.decode(v[1])
  if state == QUEUED or state == RUNNING then return (tonumber(v[2]) or 0) + (tonumber(v[3]) or 0) end
  return tonumber(v[4]) or 0
end
local function settle(job, id, before)  -- after a change: the id in its state's set only, the bytes counted
  for _, s in ipairs(STATES) do redis.call('ZREM', SET[s], id) end
  local state = state_of(job)
  if state then
    local field = 'finished_at'
    if state == QUEUED then field = 'created_at' elseif state == RUNNING then field = 'heartbeat_at' end
    redis.call('ZADD', SET[state], tonumber(redis.call('HGET', job, field)) or 0, id)
  end
  local change = held(job) - before
  if change ~= 0 then redis.call('INCRBY', DISK, change) end
end
"""

# KEYS[OWN + 1], when the job has one: its idempotency key's mapping. A key taken returns the job's id.
_ADD = """
local job, id, mapping = KEYS[OWN], ARGV[1], KEYS[OWN + 1]
if mapping then
  local existing = redis.call('GET', mapping)
  if existing then return existing end
  redis.call('SET', mapping, id)
end
local before = held(job)
redis.call('HSET', job, unpack(ARGV, 2))
settle(job, id, before)
return false
"""

# ARGV[2]: the states (JSON) the job must be in; not on record, or in another, it is left as it is.
_SET_IF = """
local job, id, allowed = KEYS[OWN], ARGV[1], cjson.decode(ARGV[2])
local state = state_of(job)
local ok = false
for _, s in ipairs(allowed) do ok = ok or s == state end
if not ok then return 0 end
local before = held(job)
redis.call('HSET', job, unpack(ARGV, 3))
settle(job, id, before)
return 1
"""

_CLAIM = """
local job, id = KEYS[OWN], ARGV[1]
if state_of(job) ~= QUEUED then return false end  -- another claimant took it first, or it was cancelled
local before = held(job)
redis.call('HSET', job, 'state', cjson.encode(RUNNING), 'started_at', ARGV[2], 'heartbeat_at', ARGV[2])
redis.call('HINCRBY', job, 'attempts', 1)
settle(job, id, before)
return redis.call('HGETALL', job)
"""

# KEYS[OWN..]: the candidates' hashes, ARGV[4..] their ids; taken only while still running on a lease older
# than ARGV[1] (empty: any lease).
_RECOVER = f"""
local requeued, failed = {{}}, {{}}
local bound = tonumber(ARGV[1]) or math.huge
for i = OWN, #KEYS do
  local job, id = KEYS[i], ARGV[i - OWN + 4]
  local lease = tonumber(redis.call('ZSCORE', SET[RUNNING], id))
  if lease and lease < bound then
    local before = held(job)
    if (tonumber(redis.call('HGET', job, 'attempts')) or 0) >= {MAX_ATTEMPTS} then
      redis.call('HSET', job, 'state', cjson.encode(FAILED), 'finished_at', ARGV[2],
        'error', cjson.encode('crashed'), 'detail', ARGV[3])
      table.insert(failed, id)
    else
      redis.call('HSET', job, 'state', cjson.encode(QUEUED), 'started_at', 'null', 'tiles_done', '0')
      table.insert(requeued, id)
    end
    settle(job, id, before)
  end
end
return {{requeued, failed}}
"""

# KEYS[OWN + 1], when the job has an idempotency key: its mapping, freed as with the SQLite store's index.
_REMOVE = """
local job, id, mapping = KEYS[OWN], ARGV[1], KEYS[OWN + 1]
if mapping and redis.call('GET', mapping) == id then redis.call('DEL', mapping) end
local before = held(job)
redis.call('DEL', job)
settle(job, id, before)
return 1
"""


class RedisJobStore:
    """The jobs' state in Redis (implements ``service.jobs.base.JobStore``); safe from several threads
    (redis-py's pool).

    Shared by replicas (``shared`` True): a job left running is another's only once its lease is stale.
    """

    shared = True

    def __init__(self, url: str, folder: Path, prefix: str = "csd-sr") -> None:
        self.files = JobFiles(folder)
        self._prefix = prefix
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._disk = self._key("disk_bytes")
        self._common_keys = [*(self._key(state) for state in STATES), self._disk]  # every script's first KEYS
        self._scripts = {
            name: self._redis.register_script(_PRELUDE + lua)
            for name, lua in dict(add=_ADD, set_if=_SET_IF, claim=_CLAIM, recover=_RECOVER, remove=_REMOVE).items()
        }
        self._count_disk_once()

    def add(self, job: JobRecord) -> JobRecord:
        key = job.idempotency_key
        mapping = [] if key is None else [self._key("key", key)]
        while True:
            existing = self._run("add", [self._job(job.id), *mapping], job.id, *_pairs(dataclasses.asdict(job)))
            if existing is None:
                return job
            # The key's job is read after the script (a script reads only the keys it was given); removed
            # in between, the key is free again: add once more.
            if (record := self.get(existing)) is not None:
                return record

    def get_by_key(self, idempotency_key: str) -> JobRecord | None:
        job_id = self._redis.get(self._key("key", idempotency_key))
        return None if job_id is None else self.get(job_id)

    def get(self, job_id: str) -> JobRecord | None:
        return _record(self._redis.hgetall(self._job(job_id)))

    def update(self, job_id: str, **fields: object) -> None:
        if fields:
            self._set_if(job_id, STATES, fields)

    def finish(self, job_id: str, state: str, **fields: object) -> bool:
        return self._set_if(job_id, (QUEUED, RUNNING), {"state": state, "finished_at": time.time(), **fields})

    def claim(self) -> JobRecord | None:
        # The oldest queued id is read first, so that the script is given its job's key; it takes the job only
        # if it is still queued, and otherwise the next oldest is tried.
        while head := self._redis.zrange(self._key(QUEUED), 0, 0):
            claimed = self._run("claim", [self._job(head[0])], head[0], json.dumps(time.time()))
            if claimed:
                return _record(claimed)
        return None

    def beat(self, job_id: str) -> bool:
        return self._set_if(job_id, (RUNNING,), {"heartbeat_at": time.time()})

    def recover(self, stale_before: float | None = None) -> tuple[list[str], list[str]]:
        # The candidates are read first, so that the script is given their keys; it takes again only those
        # still running on a stale lease (a replica may have renewed one in between).
        below = "+inf" if stale_before is None else f"({stale_before!r}"
        ids = self._redis.zrangebyscore(self._key(RUNNING), "-inf", below)
        if not ids:
            return [], []
        bound = "" if stale_before is None else repr(stale_before)
        now, detail = json.dumps(time.time()), json.dumps(CRASHED_DETAIL)
        requeued, failed = self._run("recover", [self._job(i) for i in ids], bound, now, detail, *ids)
        return requeued, failed

    def position(self, job: JobRecord) -> int:
        return self._redis.zcount(self._key(QUEUED), "-inf", f"({job.created_at!r}")

    def ahead(self, job: JobRecord) -> list[JobRecord]:
        with self._redis.pipeline() as ids:  # MULTI: both sets as of one moment
            ids.zrange(self._key(RUNNING), 0, -1)
            ids.zrangebyscore(self._key(QUEUED), "-inf", f"({job.created_at!r}")
            running, queued = ids.execute()
        with self._redis.pipeline(transaction=False) as records:
            for job_id in (*running, *queued):
                records.hgetall(self._job(job_id))
            return [r for r in map(_record, records.execute()) if r is not None]  # None: removed meanwhile

    def counts(self) -> dict[str, int]:
        pipe = self._redis.pipeline()
        for state in STATES:
            pipe.zcard(self._key(state))
        return dict(zip(STATES, pipe.execute(), strict=True))

    def disk_bytes(self) -> int:
        return int(self._redis.get(self._disk) or 0)

    def expired(self, before: float) -> list[str]:
        pipe = self._redis.pipeline()
        for state in FINISHED:
            pipe.zrangebyscore(self._key(state), "-inf", f"({before!r}")
        return [job_id for ids in pipe.execute() for job_id in ids]

    def next_expiry(self, ttl_s: float) -> float | None:
        pipe = self._redis.pipeline()
        for state in FINISHED:
            pipe.zrange(self._key(state), 0, 0, withscores=True)
        oldest = [score for first in pipe.execute() for _, score in first]
        return min(oldest) + ttl_s if oldest else None

    def remove(self, job_id: str) -> None:
        # The idempotency key's mapping is named by the record, so it is read first to be given to the script;
        # a job's key never changes, so what was read is still true when the script runs.
        key = self._redis.hget(self._job(job_id), "idempotency_key")
        mapping = [] if key is None or json.loads(key) is None else [self._key("key", json.loads(key))]
        self._run("remove", [self._job(job_id), *mapping], job_id)
        self.files.delete(job_id)

    def close(self) -> None:
        self._redis.close()

    def _count_disk_once(self) -> None:
        """Without a counter (a new store, or one from before it): count the jobs' bytes once. Optimistic:
        should a replica change a state set meanwhile (WATCH), count again."""
        while True:
            with self._redis.pipeline() as pipe:
                try:
                    pipe.watch(*self._common_keys)
                    if pipe.exists(self._disk):
                        return
                    ids = [job_id for state in STATES for job_id in pipe.zrange(self._key(state), 0, -1)]
                    total = sum(r.disk_bytes for r in map(self.get, ids) if r is not None)
                    pipe.multi()
                    pipe.set(self._disk, total, nx=True)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def _set_if(self, job_id: str, states: tuple[str, ...], fields: dict) -> bool:
        """Set ``fields`` of the job if it is in one of ``states``; False if not (or not on record)."""
        return self._run("set_if", [self._job(job_id)], job_id, json.dumps(states), *_pairs(fields)) == 1

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def _job(self, job_id: str) -> str:
        return self._key("job", job_id)

    def _run(self, script: str, keys: list[str], *args: object) -> Any:  # each script's own reply
        return self._scripts[script](keys=[*self._common_keys, *keys], args=args)


def _pairs(fields: dict) -> list[str]:
    """HSET's field, value arguments, each value JSON-encoded."""
    return [item for k, v in fields.items() for item in (k, json.dumps(v))]


def _record(flat: list | dict) -> JobRecord | None:
    """A record from HGETALL (a dict, or a script's flat list); None for a job that is not there."""
    if not flat:
        return None
    pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
    return JobRecord(**{k: json.loads(v) for k, v in pairs if k in _FIELDS})  # not those only a newer version has
