"""The two Lua scripts that make admission and settlement one atomic Redis round trip each.

Per scope (the key, then its tenant) nine keys, in this order:
  1 rpm   zset request id → admitted at (ms)           sliding 60 s request window
  2 tpm   zset request id → admitted at (ms)           sliding 60 s token window ...
  3 tpmh  hash request id → tokens                      ... with each request's tokens
  4 tpms  string, the window's token sum
  5 conc  zset request id → lease expiry (ms)           concurrency slots
  6 spent string, money settled in the budget period (nano-USD)
  7 res   zset request id → lease expiry (ms)           budget reservations ...
  8 resh  hash request id → reserved money (nano-USD)   ... and their amounts
  9 ress  string, the sum of reservations
and five arguments: rpm, tpm, max_concurrent, budget (nano-USD), budget period end (ms);
-1 = none. Leases make a crashed process's slots and reservations expire on their own.

A prepaid tenant's balance (the ``prepaid`` argument is 1) adds four keys after the
scopes (apps/limits/balances.py names them):
  1 bal   string, the balance (nano-USD): credits less settled debits; no expiry
  2 res   zset request id → lease expiry (ms)           balance reservations ...
  3 resh  hash request id → reserved money (nano-USD)   ... and their amounts
  4 ress  string, the sum of reservations
Admission refuses unless balance − reserved covers the request's worst-case price, so
settling (at most that price, releasing the reservation) never takes it below zero. A
missing balance is refused as ``nobalance``: the caller loads it from the journal once
and asks again.
"""

_COMMON = r"""
local WINDOW = 60000
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Drop window entries at or before cutoff, keeping the amount sum in step.
local function expire(zkey, hkey, skey, cutoff)
  while true do
    local old = redis.call('ZRANGEBYSCORE', zkey, '-inf', cutoff, 'LIMIT', 0, 500)
    if #old == 0 then return end
    if hkey then
      local amounts = redis.call('HMGET', hkey, unpack(old))
      local total = 0
      for i = 1, #amounts do total = total + (tonumber(amounts[i]) or 0) end
      redis.call('HDEL', hkey, unpack(old))
      if total ~= 0 then redis.call('DECRBY', skey, total) end
    end
    redis.call('ZREM', zkey, unpack(old))
  end
end
local function oldest(zkey, now)
  local first = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
  if #first == 0 then return 0 end
  return math.max(0, tonumber(first[2]) + WINDOW - now)
end
"""

# KEYS: 9 per scope, then 4 of the balance when prepaid. ARGV: request id, tokens, cost,
# lease ms, prepaid (0/1), then 5 per scope.
# Returns {1, per scope: rpm remaining, rpm reset ms, tpm remaining, tpm reset ms}
#      or {0, reason, scope number (0: the balance), retry after ms}.
ADMIT = (
    _COMMON
    + r"""
local rid, tokens, cost, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local prepaid = tonumber(ARGV[5])
local scopes = (#KEYS - 4 * prepaid) / 9
local b = scopes * 9
local now = now_ms()
for s = 1, scopes do
  local k, a = (s - 1) * 9, 5 + (s - 1) * 5
  local rpm, tpm, conc, budget = tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  if rpm >= 0 then
    expire(KEYS[k+1], nil, nil, now - WINDOW)
    if redis.call('ZCARD', KEYS[k+1]) + 1 > rpm then
      return {0, 'requests', s, oldest(KEYS[k+1], now)}
    end
  end
  if tpm >= 0 then
    expire(KEYS[k+2], KEYS[k+3], KEYS[k+4], now - WINDOW)
    local used = tonumber(redis.call('GET', KEYS[k+4]) or '0')
    if used + tokens > tpm then
      local wait = oldest(KEYS[k+2], now)
      if wait == 0 then wait = WINDOW end
      return {0, 'tokens', s, wait}
    end
  end
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k+5], '-inf', now)
    if redis.call('ZCARD', KEYS[k+5]) + 1 > conc then
      return {0, 'concurrency', s, 1000}
    end
  end
  if budget >= 0 then
    expire(KEYS[k+7], KEYS[k+8], KEYS[k+9], now)
    local spent = tonumber(redis.call('GET', KEYS[k+6]) or '0')
    local reserved = tonumber(redis.call('GET', KEYS[k+9]) or '0')
    if spent + reserved + cost > budget then
      local reset = tonumber(ARGV[a+5])
      return {0, 'budget', s, reset >= 0 and math.max(0, reset - now) or -1}
    end
  end
end
if prepaid == 1 then
  local balance = redis.call('GET', KEYS[b+1])
  if not balance then return {0, 'nobalance', 0, -1} end
  expire(KEYS[b+2], KEYS[b+3], KEYS[b+4], now)
  local reserved = tonumber(redis.call('GET', KEYS[b+4]) or '0')
  if tonumber(balance) - reserved < cost then return {0, 'balance', 0, -1} end
end
local out = {1}
for s = 1, scopes do
  local k, a = (s - 1) * 9, 5 + (s - 1) * 5
  local rpm, tpm, conc, budget = tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local rpm_left, rpm_reset, tpm_left, tpm_reset = -1, 0, -1, 0
  if rpm >= 0 then
    redis.call('ZADD', KEYS[k+1], now, rid)
    redis.call('PEXPIRE', KEYS[k+1], WINDOW * 2)
    rpm_left = rpm - redis.call('ZCARD', KEYS[k+1])
    rpm_reset = oldest(KEYS[k+1], now)
  end
  if tpm >= 0 then
    redis.call('ZADD', KEYS[k+2], now, rid)
    redis.call('HSET', KEYS[k+3], rid, tokens)
    local used = redis.call('INCRBY', KEYS[k+4], tokens)
    for i = 2, 4 do redis.call('PEXPIRE', KEYS[k+i], WINDOW * 2) end
    tpm_left = tpm - used
    tpm_reset = oldest(KEYS[k+2], now)
  end
  if conc >= 0 then
    redis.call('ZADD', KEYS[k+5], now + lease, rid)
    redis.call('PEXPIRE', KEYS[k+5], lease * 2)
  end
  if budget >= 0 then
    redis.call('ZADD', KEYS[k+7], now + lease, rid)
    redis.call('HSET', KEYS[k+8], rid, cost)
    redis.call('INCRBY', KEYS[k+9], cost)
    for i = 7, 9 do redis.call('PEXPIRE', KEYS[k+i], lease * 2) end
  end
  table.insert(out, rpm_left); table.insert(out, rpm_reset)
  table.insert(out, tpm_left); table.insert(out, tpm_reset)
end
if prepaid == 1 then
  redis.call('ZADD', KEYS[b+2], now + lease, rid)
  redis.call('HSET', KEYS[b+3], rid, cost)
  redis.call('INCRBY', KEYS[b+4], cost)
  for i = 2, 4 do redis.call('PEXPIRE', KEYS[b+i], lease * 2) end
end
return out
"""
)

# KEYS: 9 per scope, 4 of the balance when prepaid, then the usage stream. ARGV: request
# id, real tokens, real cost, the usage event, prepaid (0/1), then per scope the budget
# period's expiry in ms (-1 = never).
SETTLE = (
    _COMMON
    + r"""
local prepaid = tonumber(ARGV[5])
local n = #KEYS - 1 - 4 * prepaid
local rid, tokens, cost = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for s = 1, n / 9 do
  local k = (s - 1) * 9
  local old = redis.call('HGET', KEYS[k+3], rid)
  if old then
    redis.call('HSET', KEYS[k+3], rid, tokens)
    redis.call('INCRBY', KEYS[k+4], tokens - tonumber(old))
  end
  redis.call('ZREM', KEYS[k+5], rid)
  local reserved = redis.call('HGET', KEYS[k+8], rid)
  if reserved then
    redis.call('HDEL', KEYS[k+8], rid)
    redis.call('ZREM', KEYS[k+7], rid)
    redis.call('DECRBY', KEYS[k+9], tonumber(reserved))
  end
  local budget_expiry = tonumber(ARGV[5 + s])
  if budget_expiry ~= nil and budget_expiry ~= -2 then
    redis.call('INCRBY', KEYS[k+6], cost)
    if budget_expiry >= 0 then redis.call('PEXPIREAT', KEYS[k+6], budget_expiry) end
  end
end
if prepaid == 1 then
  local reserved = redis.call('HGET', KEYS[n+3], rid)
  if reserved then
    redis.call('HDEL', KEYS[n+3], rid)
    redis.call('ZREM', KEYS[n+2], rid)
    redis.call('DECRBY', KEYS[n+4], tonumber(reserved))
  end
  -- A balance lost meanwhile is loaded from the journal again, this debit included once
  -- the event is in the ledger: never a new key holding only the debit.
  if redis.call('EXISTS', KEYS[n+1]) == 1 then redis.call('DECRBY', KEYS[n+1], cost) end
end
redis.call('XADD', KEYS[#KEYS], '*', 'e', ARGV[4])
return 1
"""
)

# KEYS: 9 per scope, then 4 of the balance when ARGV[1] (prepaid) is 1. Read-only: nothing
# expires or changes, so a key looking at its own standing never moves a window. Returns
# per scope: requests in the window, tokens in the window, concurrency slots held, money
# settled in the period, money reserved; then, when prepaid, the balance ('' when it is
# not loaded) and the money reserved against it.
STANDING = r"""
local WINDOW = 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The amounts of the entries scored after cutoff, in batches (unpack has a stack limit).
local function sum(zkey, hkey, cutoff)
  local total, offset = 0, 0
  while true do
    local ids = redis.call('ZRANGEBYSCORE', zkey, '(' .. cutoff, '+inf', 'LIMIT', offset, 500)
    if #ids == 0 then return total end
    local amounts = redis.call('HMGET', hkey, unpack(ids))
    for i = 1, #amounts do total = total + (tonumber(amounts[i]) or 0) end
    offset = offset + #ids
  end
end
local prepaid = tonumber(ARGV[1] or '0')
local n = #KEYS - 4 * prepaid
local out = {}
for s = 1, n / 9 do
  local k = (s - 1) * 9
  local requests = redis.call('ZCOUNT', KEYS[k+1], '(' .. (now - WINDOW), '+inf')
  local tokens = sum(KEYS[k+2], KEYS[k+3], now - WINDOW)
  local slots = redis.call('ZCOUNT', KEYS[k+5], '(' .. now, '+inf')
  local reserved = sum(KEYS[k+7], KEYS[k+8], now)
  table.insert(out, requests); table.insert(out, tostring(tokens)); table.insert(out, slots)
  table.insert(out, redis.call('GET', KEYS[k+6]) or '0'); table.insert(out, tostring(reserved))
end
if prepaid == 1 then
  table.insert(out, redis.call('GET', KEYS[n+1]) or '')
  table.insert(out, tostring(sum(KEYS[n+2], KEYS[n+3], now)))
end
return out
"""

# KEYS: the balance. ARGV: nano-USD to add. A credit moves a loaded balance only: a
# missing one is loaded from the journal (which holds the credit) when next needed.
CREDIT = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return false
"""

# KEYS: the balance. ARGV: nano-USD from the journal. Loads a missing balance only.
LOAD = r"""
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""
