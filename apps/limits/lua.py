"""The Lua scripts that make admission and settlement one atomic Redis round trip each.

A scope (a key, its project, its tenant, a model's limits in either, an end user) has up
to nine keys; it sends only those of the limits it sets, and a flags argument saying
which: 1 rpm, 2 tpm, 4 max_concurrent, 8 budget. In this order:
  rpm (1)     rpm   zset request id → admitted at (ms)           sliding 60 s request window
  tpm (2)     tpm   zset request id → admitted at (ms)           sliding 60 s token window ...
              tpmh  hash request id → tokens                      ... with each request's tokens
              tpms  string, the window's token sum
  conc (4)    conc  zset request id → lease expiry (ms)           concurrency slots
  budget (8)  spent string, money settled in the budget period (nano-USD)
              res   zset request id → lease expiry (ms)           budget reservations ...
              resh  hash request id → reserved money (nano-USD)   ... and their amounts
              ress  string, the sum of reservations
(apps/limits/limiter.py: ``scope_keys`` names all nine, ``scope_layout`` picks the set
ones.) Settlement needs no rpm key and no tpm window, so it is sent the rest only: tpmh
and tpms, conc, then the four of the budget. Leases make a crashed process's slots and
reservations expire on their own.

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
-- Whether a scope's flags set a limit (1 rpm, 2 tpm, 4 max_concurrent, 8 budget).
local function has(flags, bit) return math.floor(flags / bit) % 2 == 1 end
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

# KEYS: per scope the keys of its set limits, then 4 of the balance when prepaid. ARGV:
# request id, tokens, cost, lease ms, prepaid (0/1), number of scopes, then per scope its
# flags and the set limits' arguments in the flags' order: rpm, tpm, max_concurrent,
# budget (nano-USD) and the budget period's end (ms, -1 never).
# Returns {1, rpm remaining, rpm reset ms, tpm remaining, tpm reset ms} of the first scope
# with an rpm and the first with a tpm (-1, 0 when none has), or {0, reason, scope number
# (0: the balance), retry after ms}.
ADMIT = (
    _COMMON
    + r"""
local rid, tokens, cost, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local prepaid, count = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
-- Each scope's set limits, and its keys' offset in KEYS for each of them.
local scopes = {}
local k, a = 0, 6
for s = 1, count do
  local flags, scope = tonumber(ARGV[a + 1]), {}
  a = a + 1
  if has(flags, 1) then scope.rpm, scope.rk = tonumber(ARGV[a + 1]), k; a, k = a + 1, k + 1 end
  if has(flags, 2) then scope.tpm, scope.tk = tonumber(ARGV[a + 1]), k; a, k = a + 1, k + 3 end
  if has(flags, 4) then scope.conc, scope.ck = tonumber(ARGV[a + 1]), k; a, k = a + 1, k + 1 end
  if has(flags, 8) then
    scope.budget, scope.reset, scope.bk = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), k
    a, k = a + 2, k + 4
  end
  scopes[s] = scope
end
local b = k
for s = 1, count do
  local scope = scopes[s]
  if scope.rpm then
    local window = KEYS[scope.rk + 1]
    expire(window, nil, nil, now - WINDOW)
    if redis.call('ZCARD', window) + 1 > scope.rpm then
      return {0, 'requests', s, oldest(window, now)}
    end
  end
  if scope.tpm then
    local t = scope.tk
    expire(KEYS[t+1], KEYS[t+2], KEYS[t+3], now - WINDOW)
    local used = tonumber(redis.call('GET', KEYS[t+3]) or '0')
    if used + tokens > scope.tpm then
      local wait = oldest(KEYS[t+1], now)
      if wait == 0 then wait = WINDOW end
      return {0, 'tokens', s, wait}
    end
  end
  if scope.conc then
    local slots = KEYS[scope.ck + 1]
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    if redis.call('ZCARD', slots) + 1 > scope.conc then
      return {0, 'concurrency', s, 1000}
    end
  end
  if scope.budget then
    local m = scope.bk
    expire(KEYS[m+2], KEYS[m+3], KEYS[m+4], now)
    local spent = tonumber(redis.call('GET', KEYS[m+1]) or '0')
    local reserved = tonumber(redis.call('GET', KEYS[m+4]) or '0')
    if spent + reserved + cost > scope.budget then
      return {0, 'budget', s, scope.reset >= 0 and math.max(0, scope.reset - now) or -1}
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
local out = {1, -1, 0, -1, 0}
local rpm_told, tpm_told = false, false
for s = 1, count do
  local scope = scopes[s]
  if scope.rpm then
    local window = KEYS[scope.rk + 1]
    redis.call('ZADD', window, now, rid)
    redis.call('PEXPIRE', window, WINDOW * 2)
    if not rpm_told then
      out[2], out[3] = scope.rpm - redis.call('ZCARD', window), oldest(window, now)
      rpm_told = true
    end
  end
  if scope.tpm then
    local t = scope.tk
    redis.call('ZADD', KEYS[t+1], now, rid)
    redis.call('HSET', KEYS[t+2], rid, tokens)
    local used = redis.call('INCRBY', KEYS[t+3], tokens)
    for i = 1, 3 do redis.call('PEXPIRE', KEYS[t+i], WINDOW * 2) end
    if not tpm_told then
      out[4], out[5] = scope.tpm - used, oldest(KEYS[t+1], now)
      tpm_told = true
    end
  end
  if scope.conc then
    redis.call('ZADD', KEYS[scope.ck + 1], now + lease, rid)
    redis.call('PEXPIRE', KEYS[scope.ck + 1], lease * 2)
  end
  if scope.budget then
    local m = scope.bk
    redis.call('ZADD', KEYS[m+2], now + lease, rid)
    redis.call('HSET', KEYS[m+3], rid, cost)
    redis.call('INCRBY', KEYS[m+4], cost)
    for i = 2, 4 do redis.call('PEXPIRE', KEYS[m+i], lease * 2) end
  end
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

# KEYS: per scope the keys its set limits settle (tpm: tpmh, tpms; max_concurrent: conc;
# budget: spent, res, resh, ress), 4 of the balance when prepaid, then the usage stream.
# ARGV: request id, real tokens, real cost, the usage event, prepaid (0/1), number of
# scopes, then per scope its flags and, with a budget, the period's expiry in ms (-1 never).
SETTLE = (
    _COMMON
    + r"""
local rid, tokens, cost = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local prepaid, count = tonumber(ARGV[5]), tonumber(ARGV[6])
local k, a = 0, 6
for s = 1, count do
  local flags = tonumber(ARGV[a + 1])
  a = a + 1
  if has(flags, 2) then
    local old = redis.call('HGET', KEYS[k+1], rid)
    if old then
      redis.call('HSET', KEYS[k+1], rid, tokens)
      redis.call('INCRBY', KEYS[k+2], tokens - tonumber(old))
    end
    k = k + 2
  end
  if has(flags, 4) then
    redis.call('ZREM', KEYS[k+1], rid)
    k = k + 1
  end
  if has(flags, 8) then
    local reserved = redis.call('HGET', KEYS[k+3], rid)
    if reserved then
      redis.call('HDEL', KEYS[k+3], rid)
      redis.call('ZREM', KEYS[k+2], rid)
      redis.call('DECRBY', KEYS[k+4], tonumber(reserved))
    end
    redis.call('INCRBY', KEYS[k+1], cost)
    local expiry = tonumber(ARGV[a + 1])
    a = a + 1
    if expiry >= 0 then redis.call('PEXPIREAT', KEYS[k+1], expiry) end
    k = k + 4
  end
end
if prepaid == 1 then
  local reserved = redis.call('HGET', KEYS[k+3], rid)
  if reserved then
    redis.call('HDEL', KEYS[k+3], rid)
    redis.call('ZREM', KEYS[k+2], rid)
    redis.call('DECRBY', KEYS[k+4], tonumber(reserved))
  end
  -- A balance lost meanwhile is loaded from the journal again, this debit included once
  -- the event is in the ledger: never a new key holding only the debit.
  if redis.call('EXISTS', KEYS[k+1]) == 1 then redis.call('DECRBY', KEYS[k+1], cost) end
end
redis.call('XADD', KEYS[#KEYS], '*', 'e', ARGV[4])
return 1
"""
)

# KEYS: per scope the keys of its set limits (as ADMIT), then 4 of the balance when
# ARGV[1] (prepaid) is 1; ARGV: prepaid, then per scope its flags. Read-only: nothing
# expires or changes, so a key looking at its own standing never moves a window. Returns
# per scope: requests in the window, tokens in the window, concurrency slots held, money
# settled in the period, money reserved (0 for a limit the scope does not set); then,
# when prepaid, the balance ('' when it is not loaded) and the money reserved against it.
STANDING = r"""
local WINDOW = 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function has(flags, bit) return math.floor(flags / bit) % 2 == 1 end
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
local k = 0
local out = {}
for s = 2, #ARGV do
  local flags = tonumber(ARGV[s])
  local requests, tokens, slots, spent, reserved = 0, 0, 0, '0', 0
  if has(flags, 1) then
    requests = redis.call('ZCOUNT', KEYS[k+1], '(' .. (now - WINDOW), '+inf')
    k = k + 1
  end
  if has(flags, 2) then
    tokens = sum(KEYS[k+1], KEYS[k+2], now - WINDOW)
    k = k + 3
  end
  if has(flags, 4) then
    slots = redis.call('ZCOUNT', KEYS[k+1], '(' .. now, '+inf')
    k = k + 1
  end
  if has(flags, 8) then
    spent = redis.call('GET', KEYS[k+1]) or '0'
    reserved = sum(KEYS[k+2], KEYS[k+3], now)
    k = k + 4
  end
  table.insert(out, requests); table.insert(out, tostring(tokens)); table.insert(out, slots)
  table.insert(out, spent); table.insert(out, tostring(reserved))
end
if prepaid == 1 then
  table.insert(out, redis.call('GET', KEYS[k+1]) or '')
  table.insert(out, tostring(sum(KEYS[k+2], KEYS[k+3], now)))
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
