"""The Lua scripts of the Redis presence backend, and the layout of the keys they keep.

Every write, and every read that must see one consistent state, is one script: Redis runs a
script alone, so two workers racing (reciprocal pipe requests, two sockets claiming one peer id)
are served one after the other, and a Join costs one round trip. ``RedisPresence`` in ``redis``
sends them; this module only holds their text.

Keys (``P`` is ``RELAY_REDIS_PREFIX`` followed by ``presence:``, so ``P peers`` is the key
``relay:presence:peers``; a name's variable part always comes last):

=========================  =====  ===========================================================
``P peers``                hash   peer id -> its control socket's connection id
``P accounts``             hash   peer id -> the account holding it (``""``: anonymous)
``P nicknames``            hash   peer id -> its nickname
``P account:<account>``    set    the peer ids online under a (non-anonymous) account
``P joined:<peer>``        set    the document ids a peer is in
``P members:<doc>``        zset   peer id -> when it joined (µs, Redis's clock), in join order
``P lobbies``              set    document ids with at least one member
``P hosts``                hash   host lobby -> its host's peer id (``""``: none present)
``P held``                 hash   held pipe request (``held_field``) -> its connection id
``P pipes``                zset   pipe id -> when it was paired (µs); ``pipes:<doc>`` and
                                  ``pair:<[doc, peer, peer]>`` index the same ids
``P seats:<doc>``          zset   peer id -> when the seat quick join holds for it expires (µs)
``P lease:<name>``         str    the token of whoever holds a lease (expires by itself)
``P workers``              zset   worker -> when its announcement expires (µs, Redis's clock)
``P wpeers:<worker>``      set    what each worker holds (peer ids, held fields, pipe ids),
``P wheld:<worker>``              so that forgetting a worker touches exactly its records
``P wpipes:<worker>``
=========================  =====  ===========================================================

A pipe id is the JSON ``[doc, first peer, second peer, held connection, pairing connection,
paired at]``: unique, and all that is needed to remove the pipe from every index.

Counts are sizes of these records (HLEN, SCARD, ZCARD), never counters, so a crash between
two calls or a retried call cannot make them drift. Each write is also idempotent for a repeated
call with the same arguments (redis-py retries a command after a timeout or a dropped
connection): a retried ``connect_peer`` does not replace itself, a retried ``hold_or_pair``
finds the pipe it made. The one exception is ``pipe_closed`` for two pipes open at once between
the same two peers on the same document: the interface names a pipe only by its key.

Scripts build key names from ``P`` (ARGV[1]) instead of declaring them in KEYS: fine for
one Redis (or a primary with replicas), not for Redis Cluster.
"""

from __future__ import annotations

# Helpers every script starts with. Liveness: a worker is alive until its announcement
# expires; one that never announced counts as alive (the shared suite's bare connection ids
# such as "c1"): real workers announce before they accept a socket (lobbies.engine.workers).
_PRELUDE = r"""
local P = ARGV[1]

local now_us
local function now()
  if not now_us then
    local t = redis.call('TIME')
    now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return now_us
end

-- Scores are microseconds (about 1.7e15): formatted by hand, since Lua's own number format
-- keeps 14 digits only.
local function us(value)
  return string.format('%.0f', value)
end

-- lobbies.engine.connections.worker_of: the part of a connection id before its first dot.
local function worker_of(connection)
  local dot = string.find(connection, '.', 1, true)
  if dot then
    return string.sub(connection, 1, dot - 1)
  end
  return connection
end

local alive_cache = {}
local function alive(connection)
  local worker = worker_of(connection)
  local known = alive_cache[worker]
  if known == nil then
    local expiry = redis.call('ZSCORE', P .. 'workers', worker)
    known = (not expiry) or tonumber(expiry) > now()
    alive_cache[worker] = known
  end
  return known
end

-- The peer's control connection while its worker is alive, else false.
local function online(peer)
  local connection = redis.call('HGET', P .. 'peers', peer)
  if connection and alive(connection) then
    return connection
  end
  return false
end

-- Now, or just after the newest entry of the sorted set: entries keep their order of arrival
-- even if two arrive within one microsecond or the clock steps back.
local function next_score(key)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local score = now()
  if newest[2] and tonumber(newest[2]) >= score then
    score = tonumber(newest[2]) + 1
  end
  return score
end

-- As MemoryPresence._remove: a host that leaves leaves its lobby without a host; an empty
-- lobby is forgotten with its host record.
local function leave_lobby(peer, doc)
  local members = P .. 'members:' .. doc
  redis.call('ZREM', members, peer)
  if redis.call('HGET', P .. 'hosts', doc) == peer then
    redis.call('HSET', P .. 'hosts', doc, '')
  end
  if redis.call('ZCARD', members) == 0 then
    redis.call('SREM', P .. 'lobbies', doc)
    redis.call('HDEL', P .. 'hosts', doc)
  end
end

local function forget_lobbies(peer)
  local joined = P .. 'joined:' .. peer
  for _, doc in ipairs(redis.call('SMEMBERS', joined)) do
    leave_lobby(peer, doc)
  end
  redis.call('DEL', joined)
end

-- Everything about a peer whose control socket is ``connection``.
local function forget_peer(peer, connection)
  local account = redis.call('HGET', P .. 'accounts', peer)
  redis.call('HDEL', P .. 'peers', peer)
  redis.call('HDEL', P .. 'accounts', peer)
  redis.call('HDEL', P .. 'nicknames', peer)
  if account and account ~= '' then
    redis.call('SREM', P .. 'account:' .. account, peer)
  end
  redis.call('SREM', P .. 'wpeers:' .. worker_of(connection), peer)
  forget_lobbies(peer)
end

-- HMGET of the fields ARGV[first], ARGV[first + 1]...: in slices, since unpack() takes a few
-- thousand values at most. Missing fields read as false.
local function hmget_args(key, first)
  local values = {}
  for start = first, #ARGV, 1000 do
    local part = redis.call('HMGET', key, unpack(ARGV, start, math.min(start + 999, #ARGV)))
    for _, value in ipairs(part) do
      values[#values + 1] = value
    end
  end
  return values
end

-- Places in a lobby that others than ``peer`` take: members (ghosts of a stopped worker
-- too, until it is reaped) and live seats; 0 when ``peer`` is a member already. The seats are
-- never more than the capacity (``reserve``), so the loop is short.
local function taken(doc, peer)
  local members = P .. 'members:' .. doc
  if redis.call('ZSCORE', members, peer) then
    return 0
  end
  local seats = P .. 'seats:' .. doc
  redis.call('ZREMRANGEBYSCORE', seats, '-inf', us(now()))
  local count = redis.call('ZCARD', members)
  for _, other in ipairs(redis.call('ZRANGE', seats, 0, -1)) do
    if other ~= peer and not redis.call('ZSCORE', members, other) then
      count = count + 1
    end
  end
  return count
end

local function pair_key(doc, first, second)
  return P .. 'pair:' .. cjson.encode({doc, first, second})
end

local function drop_held(field, connection)
  redis.call('HDEL', P .. 'held', field)
  redis.call('SREM', P .. 'wheld:' .. worker_of(connection), field)
end

local function open_pipe(doc, first, second, held, pairing)
  local score = next_score(P .. 'pipes')
  local id = cjson.encode({doc, first, second, held, pairing, us(score)})
  redis.call('ZADD', P .. 'pipes', us(score), id)
  redis.call('ZADD', P .. 'pipes:' .. doc, us(score), id)
  redis.call('ZADD', pair_key(doc, first, second), us(score), id)
  redis.call('SADD', P .. 'wpipes:' .. worker_of(held), id)
  redis.call('SADD', P .. 'wpipes:' .. worker_of(pairing), id)
end

local function close_pipe(id)
  local pipe = cjson.decode(id)
  redis.call('ZREM', P .. 'pipes', id)
  redis.call('ZREM', P .. 'pipes:' .. pipe[1], id)
  redis.call('ZREM', pair_key(pipe[1], pipe[2], pipe[3]), id)
  redis.call('SREM', P .. 'wpipes:' .. worker_of(pipe[4]), id)
  redis.call('SREM', P .. 'wpipes:' .. worker_of(pipe[5]), id)
end

-- Everything a worker held: its peers (with their lobbies), held requests and pipes. The work
-- grows with what the worker held; one call does it all (not bounded per call).
local function forget_worker(worker)
  local peers = P .. 'wpeers:' .. worker
  for _, peer in ipairs(redis.call('SMEMBERS', peers)) do
    local connection = redis.call('HGET', P .. 'peers', peer)
    if connection and worker_of(connection) == worker then
      forget_peer(peer, connection)
    end
  end
  local held = P .. 'wheld:' .. worker
  for _, field in ipairs(redis.call('SMEMBERS', held)) do
    local connection = redis.call('HGET', P .. 'held', field)
    if connection and worker_of(connection) == worker then
      redis.call('HDEL', P .. 'held', field)
    end
  end
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'wpipes:' .. worker)) do
    close_pipe(id)
  end
  redis.call('DEL', peers, held, P .. 'wpipes:' .. worker)
  redis.call('ZREM', P .. 'workers', worker)
end
"""

# Each script's own part: the arguments after P, then what it does.
_BODIES: dict[str, str] = {
    # peer, connection, account -> {'taken'} | {'ok', replaced connection or ''}
    "connect_peer": r"""
local peer, connection, account = ARGV[2], ARGV[3], ARGV[4]
local previous = redis.call('HGET', P .. 'peers', peer)
if previous == connection then
  return {'ok', ''}  -- a retried call: done already
end
local holder = false
if previous and alive(previous) then
  holder = redis.call('HGET', P .. 'accounts', peer)
end
-- lobbies.policy.may_take_peer_id, mirrored here so that the check and the take are one step:
-- an id held by a user stays that user's while it is online; an anonymous one ('') is taken
-- over. A peer of a worker that stopped announcing is not online.
if holder and holder ~= '' and holder ~= account then
  return {'taken'}
end
if previous then
  forget_peer(peer, previous)
end
redis.call('HSET', P .. 'peers', peer, connection)
redis.call('HSET', P .. 'accounts', peer, account)
if account ~= '' then
  redis.call('SADD', P .. 'account:' .. account, peer)
end
redis.call('SADD', P .. 'wpeers:' .. worker_of(connection), peer)
return {'ok', previous or ''}
""",
    # peer, connection
    "disconnect_peer": r"""
local peer, connection = ARGV[2], ARGV[3]
if redis.call('HGET', P .. 'peers', peer) == connection then
  forget_peer(peer, connection)
end
return 0
""",
    # peer, connection, has nickname ('1'/'0'), nickname, (doc, capacity or '')...
    #   -> false | {others of each doc, or 0 for a doc without room}
    "join": r"""
local peer, connection = ARGV[2], ARGV[3]
if redis.call('HGET', P .. 'peers', peer) ~= connection then
  return false
end
if ARGV[4] == '1' then
  redis.call('HSET', P .. 'nicknames', peer, ARGV[5])
end
local joined = P .. 'joined:' .. peer
local result = {}
for i = 6, #ARGV, 2 do
  local doc = ARGV[i]
  local capacity = tonumber(ARGV[i + 1])
  if capacity and taken(doc, peer) >= capacity then
    result[#result + 1] = 0
  else
    if capacity then
      redis.call('ZREM', P .. 'seats:' .. doc, peer)
    end
    local members = P .. 'members:' .. doc
    local others = {}
    for _, member in ipairs(redis.call('ZRANGE', members, 0, -1)) do
      if member ~= peer and online(member) then
        others[#others + 1] = member
      end
    end
    result[#result + 1] = others
    if not redis.call('ZSCORE', members, peer) then
      redis.call('ZADD', members, us(next_score(members)), peer)
    end
    redis.call('SADD', joined, doc)
    redis.call('SADD', P .. 'lobbies', doc)
  end
end
return result
""",
    # doc, peer, capacity, ttl (ms) -> 1 (a seat, or in already) | 0 (no room)
    "reserve": r"""
local doc, peer, capacity, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('ZSCORE', P .. 'members:' .. doc, peer) then
  return 1
end
local seats = P .. 'seats:' .. doc
local seated = redis.call('ZSCORE', seats, peer)
if not seated and taken(doc, peer) >= capacity then
  return 0
end
redis.call('ZADD', seats, us(now() + ttl * 1000), peer)
-- The key goes with its last seat; only ever made to last longer (workers may differ in TTL).
if redis.call('PTTL', seats) < ttl then
  redis.call('PEXPIRE', seats, ttl)
end
return 1
""",
    # name, token
    "unlease": r"""
local key = P .. 'lease:' .. ARGV[2]
if redis.call('GET', key) == ARGV[3] then
  redis.call('DEL', key)
end
return 0
""",
    # peer, connection, doc...
    "leave": r"""
local peer, connection = ARGV[2], ARGV[3]
if redis.call('HGET', P .. 'peers', peer) ~= connection then
  return 0
end
for i = 4, #ARGV do
  if redis.call('SREM', P .. 'joined:' .. peer, ARGV[i]) == 1 then
    leave_lobby(peer, ARGV[i])
  end
end
return 0
""",
    # peer... -> {peer, connection, ...} of those online
    "connections": r"""
local found = hmget_args(P .. 'peers', 2)
local result = {}
for i, connection in ipairs(found) do
  if connection and alive(connection) then
    result[#result + 1] = ARGV[i + 1]
    result[#result + 1] = connection
  end
end
return result
""",
    # seeker, target, doc -> {seeker's account or false, both in (1/0), host or false}
    "pipe_facts": r"""
local seeker, target, doc = ARGV[2], ARGV[3], ARGV[4]
local account = false
if online(seeker) then
  account = redis.call('HGET', P .. 'accounts', seeker)
end
local members = P .. 'members:' .. doc
local both_in = 0
if account and online(target) and redis.call('ZSCORE', members, seeker)
    and redis.call('ZSCORE', members, target) then
  both_in = 1
end
local host = redis.call('HGET', P .. 'hosts', doc)  -- false: not a host lobby
if host and host ~= '' and not online(host) then
  host = ''
end
return {account, both_in, host}
""",
    # doc, peer ('' for none) -> host or false
    "claim_host": r"""
local doc, peer = ARGV[2], ARGV[3]
local host = redis.call('HGET', P .. 'hosts', doc)
if host == '' or (host and not online(host)) then
  host = false
end
if not host and peer ~= '' and redis.call('ZSCORE', P .. 'members:' .. doc, peer) then
  host = peer
end
if redis.call('SISMEMBER', P .. 'lobbies', doc) == 1 then
  redis.call('HSET', P .. 'hosts', doc, host or '')
end
return host
""",
    # doc... -> {doc, host or '', ...} of the host lobbies
    "hosts": r"""
local found = hmget_args(P .. 'hosts', 2)
local result = {}
for i, host in ipairs(found) do
  if host then
    if host ~= '' and not online(host) then
      host = ''
    end
    result[#result + 1] = ARGV[i + 1]
    result[#result + 1] = host
  end
end
return result
""",
    # doc, peer, successor ('1'/'0') -> the host now, or false
    "drop_host": r"""
local doc, peer, successor = ARGV[2], ARGV[3], ARGV[4]
local host = redis.call('HGET', P .. 'hosts', doc)
if host ~= peer then
  if host and host ~= '' and online(host) then
    return host
  end
  return false
end
local heir = false
if successor == '1' then
  for _, member in ipairs(redis.call('ZRANGE', P .. 'members:' .. doc, 0, -1)) do
    if member ~= peer and online(member) then
      heir = member
      break
    end
  end
end
redis.call('HSET', P .. 'hosts', doc, heir or '')
return heir
""",
    # doc -> {peer, ...} online, longest present first
    "members": r"""
local result = {}
for _, member in ipairs(redis.call('ZRANGE', P .. 'members:' .. ARGV[2], 0, -1)) do
  if online(member) then
    result[#result + 1] = member
  end
end
return result
""",
    # doc -> {host or '', peer, account, nickname or false, since (µs), ...}
    "roster": r"""
local doc = ARGV[2]
local host = redis.call('HGET', P .. 'hosts', doc) or ''
local result = {host}
local found = redis.call('ZRANGE', P .. 'members:' .. doc, 0, -1, 'WITHSCORES')
for i = 1, #found, 2 do
  local member = found[i]
  if online(member) then
    result[#result + 1] = member
    result[#result + 1] = redis.call('HGET', P .. 'accounts', member) or ''
    result[#result + 1] = redis.call('HGET', P .. 'nicknames', member)
    result[#result + 1] = found[i + 1]
  end
end
return result
""",
    # doc -> {first peer, second peer, since (µs), ...}, oldest first, both ends' workers alive
    "pipes": r"""
local result = {}
local found = redis.call('ZRANGE', P .. 'pipes:' .. ARGV[2], 0, -1, 'WITHSCORES')
for i = 1, #found, 2 do
  local pipe = cjson.decode(found[i])
  if alive(pipe[4]) and alive(pipe[5]) then
    result[#result + 1] = pipe[2]
    result[#result + 1] = pipe[3]
    result[#result + 1] = found[i + 1]
  end
end
return result
""",
    # account -> {peer, connection, ...}
    "peers_of": r"""
local result = {}
if ARGV[2] == '' then
  return result
end
for _, peer in ipairs(redis.call('SMEMBERS', P .. 'account:' .. ARGV[2])) do
  local connection = online(peer)
  if connection then
    result[#result + 1] = peer
    result[#result + 1] = connection
  end
end
return result
""",
    # field, reciprocal field, connection, doc, first peer, second peer
    #   -> {'paired', partner} | {'held'} | {'taken'}
    "hold_or_pair": r"""
local field, reciprocal, connection = ARGV[2], ARGV[3], ARGV[4]
local doc, first, second = ARGV[5], ARGV[6], ARGV[7]
-- A retried call that paired already finds its pipe (pairing end: this connection).
for _, id in ipairs(redis.call('ZRANGE', pair_key(doc, first, second), 0, -1)) do
  local pipe = cjson.decode(id)
  if pipe[5] == connection then
    return {'paired', pipe[4]}
  end
end
local partner = redis.call('HGET', P .. 'held', reciprocal)
if partner then
  drop_held(reciprocal, partner)
  if alive(partner) then
    open_pipe(doc, first, second, partner, connection)
    return {'paired', partner}
  end
  -- Held by a worker that stopped announcing: nobody is paired with a ghost.
end
local holder = redis.call('HGET', P .. 'held', field)
if holder == connection then
  return {'held'}  -- a retried call
end
if holder then
  if alive(holder) then
    return {'taken'}
  end
  drop_held(field, holder)
end
redis.call('HSET', P .. 'held', field, connection)
redis.call('SADD', P .. 'wheld:' .. worker_of(connection), field)
return {'held'}
""",
    # field, connection
    "release": r"""
if redis.call('HGET', P .. 'held', ARGV[2]) == ARGV[3] then
  drop_held(ARGV[2], ARGV[3])
end
return 0
""",
    # doc, first peer, second peer: the oldest such pipe closes; none open: nothing happens
    "pipe_closed": r"""
local oldest = redis.call('ZRANGE', pair_key(ARGV[2], ARGV[3], ARGV[4]), 0, 0)
if oldest[1] then
  close_pipe(oldest[1])
end
return 0
""",
    # -> {peers online, lobbies active, pipes open}
    "stats": r"""
return {
  redis.call('HLEN', P .. 'peers'),
  redis.call('SCARD', P .. 'lobbies'),
  redis.call('ZCARD', P .. 'pipes'),
}
""",
    # worker, ttl (seconds) -> 1 if the store knew the worker, else 0
    "announce": r"""
local worker = ARGV[2]
local known = redis.call('ZSCORE', P .. 'workers', worker)
redis.call('ZADD', P .. 'workers', us(now() + tonumber(ARGV[3]) * 1000000), worker)
if known then
  return 1
end
return 0
""",
    # -> {worker, ...} forgotten
    "reap": r"""
local expired = redis.call('ZRANGEBYSCORE', P .. 'workers', '-inf', us(now()))
for _, worker in ipairs(expired) do
  forget_worker(worker)
end
return expired
""",
    # worker... -> {worker, ...} of those not alive: expired, or not known at all (these are
    # workers the caller has talked to, so each announced itself once)
    "gone": r"""
local result = {}
for i = 2, #ARGV do
  local expiry = redis.call('ZSCORE', P .. 'workers', ARGV[i])
  if not expiry or tonumber(expiry) <= now() then
    result[#result + 1] = ARGV[i]
  end
end
return result
""",
    # worker
    "withdraw": r"""
forget_worker(ARGV[2])
return 0
""",
}

SCRIPTS: dict[str, str] = {name: _PRELUDE + body for name, body in _BODIES.items()}
