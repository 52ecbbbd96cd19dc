"""The admission count's Redis scripts, shared by the API (api/admission.py, which takes slots)
and the shard workers (workers/outbox.py, which give them back).

A slot has two **holds**: the API's, until it has answered the POST, and the shard's, until the
order is out of transit (``domain.admission``). It is free when both are let go, whichever
comes last. Before holds, the shard's release at the fill's commit freed the slot of a market
order while its accept was still finishing and being answered, so more orders were in their
accept than the limit said (measured: about 15 accepts at once under a limit of 12).

Per shard: the sorted set ``RedisKeys.admission`` (order id -> when the slot lapses, ms of
Redis's clock) and the hash ``RedisKeys.admission_holds`` (order id -> holds left).

- :data:`TAKE` drops lapsed slots, refuses at the limit or adds the order with 2 holds.
- :data:`LET_GO` lets one hold of each id go (the API once it has answered an order still in
  transit, the shard when the order leaves transit); at 0 the slot is freed. ``drop`` frees the
  slot whatever its holds: the API's answer that leaves nothing in transit (the shard never lets
  go of those). A hold let go of a slot that is gone (lapsed, dropped) changes nothing.
  Freed slots are announced on the shard's ``admission_freed`` channel (how many), in the
  script.

Both run on Redis's clock and each is one atomic round trip. What they do not do: decide what is
in transit (``domain.admission``), or retry; a lost call leaves the slot to lapse.
"""

from __future__ import annotations

from sherwood.contracts import RedisKeys

# KEYS: the set, the holds, ARGV: limit, hold (ms), order id. Returns 1 admitted (added), 2
# admitted (already counted: the same order again; its slot is renewed), 0 refused.
TAKE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold = tonumber(ARGV[2])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
if #lapsed > 0 then
  redis.call('ZREM', KEYS[1], unpack(lapsed))
  redis.call('HDEL', KEYS[2], unpack(lapsed))
end
local again = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not again and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + hold, ARGV[3])
redis.call('PEXPIRE', KEYS[1], hold + 1000)
if again then return 2 end
redis.call('HSET', KEYS[2], ARGV[3], '2')
redis.call('PEXPIRE', KEYS[2], hold + 1000)
return 1
"""

# KEYS: the set, the holds, the freed channel; ARGV: 'hold' (let one hold go) or 'drop', then
# the order ids. Returns how many slots it freed (announced on the channel when any).
LET_GO = """
local freed = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local left = 0
  if ARGV[1] == 'hold' then
    left = redis.call('HINCRBY', KEYS[2], id, -1)
  end
  if left <= 0 then
    redis.call('HDEL', KEYS[2], id)
    freed = freed + redis.call('ZREM', KEYS[1], id)
  end
end
if freed > 0 then redis.call('PUBLISH', KEYS[3], tostring(freed)) end
return freed
"""


def let_go_keys(keys: RedisKeys, shard: int) -> list[str]:
    """The KEYS of :data:`LET_GO` for ``shard``."""
    return [keys.admission(shard), keys.admission_holds(shard), keys.admission_freed(shard)]
