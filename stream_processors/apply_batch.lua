-- Apply one partition batch atomically.
--
-- Why one script: the offsets that say "this batch is applied" and everything the batch changes
-- (figures, user states, journey paths, reach, audiences, applied event ids) must move together,
-- or a crash between them would lose or double-count the batch on replay.
--
-- Why this order: Redis runs a script atomically but does not roll back the writes a script made
-- before a command of it failed. So every check that could make a write fail runs first, before
-- the first write: the type of every key the script writes (a wrong-type key makes HINCRBY, PFADD
-- or ZADD fail), that every hash field it increments holds an integer and stays within int64
-- (HINCRBY refuses to overflow), that every HyperLogLog is one. Out of memory can only refuse
-- the first write (Redis lets a script that has written go on). The offsets are written last,
-- so that if a write failed anyway the batch would not be marked applied. A failed check returns
-- an error with nothing written: the worker stops before acknowledging the batch, and the batch
-- is applied whole, once, when the key is repaired.
--
-- Keys. The client (stream_processors/store/redis_lua.py, whose `Keys` owns every key name and
-- lists the suffixes used here) passes KEYS[1] the partition's meta hash, KEYS[2] its all-time
-- totals, KEYS[3] its journey paths, and the partition's key prefix (arg.prefix, "<ns>:{pN}:").
-- Every other key is that prefix plus a suffix (b:, u:, ids:, aud:, and r:/e: from arg.reach): it
-- carries the same hash tag, so it lives in the same slot as KEYS[1] and the script stays one
-- atomic call on Redis Cluster. Key names are built here rather than passed, because a batch
-- touches ~1,000 keys and the client pays ~0.6 us per argument to encode each.
--
-- Arguments are named (RedisPartitionStore.apply_fields, encoded by redis_lua.named_args): ARGV[1]
-- lists the names, ARGV[2..] are the values in that order. They are read once into the table `arg`
-- below, which refuses a call whose names are not exactly APPLY_ARGS, so neither side depends on
-- an order. Lists travel as text, one argument each: the fields are
-- identifiers ([A-Za-z0-9_.:-]), channel names, integers and Python float reprs, none of which
-- contain spaces or newlines.
--
-- epoch        the writer's epoch
-- prefix       key prefix of the partition
-- offsets      "topic expected_offset new_offset watermark latest\n" per topic; watermark "-" for
--              none yet, latest the topic's largest accepted event times joined by "," (or "-")
-- user_ttl     user state TTL (s)
-- state_index  "user_id byte_length " per user;  states  the users' states, back to back
-- bucket_ttl   bucket TTL (s)
-- increments   "bucket field amount\n" (bucket "-": the all-time totals hash)
-- paths        journey paths: "path amount\n"
-- reach_ttl    reach TTL (s)
-- reach        "key_suffix user user ...\n" (HyperLogLogs: r:<bucket>:<campaign>:<channel>, e:<bucket>:<campaign>)
-- checkouts, carts, engagements   audience signals: "user_id event_time\n"
-- audience_cutoffs   expiry cutoffs "cart_abandoners engaged buyers" (event times), or "" for none
-- event_ids    applied event ids: "topic forget_before event_id event_time event_id event_time ...\n"
--              (sorted set ids:<topic>, scored by event time; ids scored below forget_before, "-"
--              for none, are dropped: they are older than the topic's watermark minus the
--              lateness, so any copy of them is dead-lettered as late before it could be looked up)
--
-- Returns {"OK"}, {"FENCED", current_epoch} when a newer owner claimed the partition (this
-- writer is a zombie), or {"CONFLICT", topic, current_offset} when the stored offset is not the
-- one the caller read (someone applied in between); nothing is written in either case. A failed
-- check is an error reply starting "SEEDLOOP_UNAPPLIABLE", arguments that are not exactly the
-- named ones one starting "SEEDLOOP_BAD_ARGS"; nothing is written either.

local APPLY_ARGS = {
  'epoch', 'prefix', 'offsets', 'user_ttl', 'state_index', 'states', 'bucket_ttl', 'increments',
  'paths', 'reach_ttl', 'reach', 'checkouts', 'carts', 'engagements', 'audience_cutoffs', 'event_ids',
}
local arg, given = {}, 0
for name in string.gmatch(ARGV[1], '%S+') do
  given = given + 1
  arg[name] = ARGV[given + 1]
end
if given ~= #APPLY_ARGS or #ARGV ~= given + 1 then
  return redis.error_reply('SEEDLOOP_BAD_ARGS nothing written: ' .. given .. ' names and '
    .. (#ARGV - 1) .. ' values, not the ' .. #APPLY_ARGS .. ' named arguments')
end
for _, name in ipairs(APPLY_ARGS) do
  if arg[name] == nil then
    return redis.error_reply('SEEDLOOP_BAD_ARGS nothing written: no argument named ' .. name)
  end
end

local meta = KEYS[1]
local prefix = arg.prefix

-- 1. May this writer apply this batch? (reads only)
local current_epoch = redis.call('HGET', meta, 'epoch')
if current_epoch ~= arg.epoch then
  return {'FENCED', current_epoch or ''}
end
local offsets = {}
for topic, expected, new, wm, latest in string.gmatch(arg.offsets, '(%S+) (%S+) (%S+) (%S+) (%S+)') do
  offsets[#offsets + 1] = {topic, expected, new, wm, latest}
end
for _, o in ipairs(offsets) do
  local stored = redis.call('HGET', meta, 'off:' .. o[1]) or '-1'
  if stored ~= o[2] then
    return {'CONFLICT', o[1], stored}
  end
end

-- 2. Parse the batch and check that every write below will succeed (reads only).
local problem = nil
local checked_type = {}
local function expect_type(key, want)
  if problem or checked_type[key] then
    return
  end
  checked_type[key] = true
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= want then
    problem = key .. ' holds a ' .. found .. ', not a ' .. want
  end
end

-- Integers as Redis reads them (util.c string2ll: no sign but '-', no leading zero), split as
-- hi * 1e9 + lo with 0 <= lo < 1e9 so that Lua's doubles (exact to 2^53) compute int64 sums
-- exactly. nil when HINCRBY would not read the text as an integer.
local function int64_parts(text)
  if text == '0' then
    return 0, 0
  end
  local sign, digits = string.match(text, '^(%-?)([1-9]%d*)$')
  if not digits or #digits > 19 then
    return nil
  end
  local hi, lo = tonumber(string.sub(digits, 1, -10)) or 0, tonumber(string.sub(digits, -9))
  if sign == '-' then
    hi, lo = -hi, -lo
    if lo < 0 then
      hi, lo = hi - 1, lo + 1e9
    end
  end
  return hi, lo
end
local function within_int64(hi, lo)  -- [-9223372036854775808, 9223372036854775807]
  if hi > 9223372036 or (hi == 9223372036 and lo > 854775807) then
    return false
  end
  return not (hi < -9223372037 or (hi == -9223372037 and lo < 145224192))
end
-- Does HINCRBY of `amount` on a field holding `stored` (nil: absent) succeed?
local function increments_cleanly(stored, amount)
  stored = stored or '0'
  if #stored < 16 and #amount < 16 then  -- both below 1e15 in magnitude: the sum fits
    return stored == '0' or string.find(stored, '^%-?[1-9]%d*$') ~= nil
  end
  local hi, lo = int64_parts(stored)
  local add_hi, add_lo = int64_parts(amount)
  if hi == nil or add_hi == nil or not within_int64(hi, lo) or not within_int64(add_hi, add_lo) then
    return false
  end
  local sum_lo, carry = lo + add_lo, 0
  if sum_lo >= 1e9 then
    sum_lo, carry = sum_lo - 1e9, 1
  end
  return within_int64(hi + add_hi + carry, sum_lo)
end

-- HMGET of `fields` of the hash `key`, in chunks (unpack() of very long lists overflows Lua's C
-- stack): check(i, value) for each field in order, value false when absent. Returns the first
-- problem a check returns (the fields after it are not checked), or nil.
local function check_fields(key, fields, check)
  for first = 1, #fields, 1000 do
    local last = math.min(first + 999, #fields)
    local stored = redis.call('HMGET', key, unpack(fields, first, last))
    for i = first, last do
      local found = check(i, stored[i - first + 1])
      if found then
        return found
      end
    end
  end
  return nil
end

expect_type(meta, 'hash')

-- Increments, grouped per hash so that each hash's current values are read in one HMGET.
local incr_keys, incr_fields, incr_amounts = {}, {}, {}
local function add_increment(key, field, amount)
  local fields = incr_fields[key]
  if fields == nil then
    fields = {}
    incr_fields[key], incr_amounts[key] = fields, {}
    incr_keys[#incr_keys + 1] = key
  end
  fields[#fields + 1] = field
  incr_amounts[key][#fields] = amount
end
for bucket, field, amount in string.gmatch(arg.increments, '(%S+) (%S+) (%S+)') do
  add_increment(bucket == '-' and KEYS[2] or prefix .. 'b:' .. bucket, field, amount)
end
for path, amount in string.gmatch(arg.paths, '(%S+) (%S+)') do
  add_increment(KEYS[3], path, amount)
end
for _, key in ipairs(incr_keys) do
  expect_type(key, 'hash')
  if problem then
    break
  end
  local fields, amounts = incr_fields[key], incr_amounts[key]
  problem = check_fields(key, fields, function(i, stored)
    if not increments_cleanly(stored, amounts[i]) then
      return key .. ' field ' .. fields[i] .. ' = ' .. tostring(stored)
        .. ': HINCRBY ' .. amounts[i] .. ' would fail (not an integer, or past int64)'
    end
  end)
  if problem then
    break
  end
end

-- Reach: each key is absent or a valid HyperLogLog. PFCOUNT refuses what PFADD would (another
-- type, a string that is not a HyperLogLog, a corrupt one) and answers 0 for an absent key; its
-- only side effect is a cached cardinality inside a valid one, not a change of its value.
local reach = {}
for line in string.gmatch(arg.reach, '[^\n]+') do
  local key = prefix .. string.match(line, '^(%S+)')
  reach[#reach + 1] = {key, line}
  if not problem then
    local counted = redis.pcall('PFCOUNT', key)
    if type(counted) == 'table' and counted.err then
      problem = key .. ' is not a HyperLogLog: ' .. counted.err
    end
  end
end

local aud = prefix .. 'aud:'
local last_key = aud .. 'last_checkout'
expect_type(last_key, 'hash')
for _, name in ipairs({'buyers', 'engaged', 'cart_abandoners'}) do
  expect_type(aud .. name, 'zset')
end
-- The stored last checkout of every user the audiences below look at, read (and checked to be a
-- number) now rather than while writing.
local last_checkout = {}  -- user -> {time, text} of their latest checkout, stored or in this batch
if not problem then
  local users, seen = {}, {}
  for _, signals in ipairs({arg.checkouts, arg.carts, arg.engagements}) do
    for user in string.gmatch(signals, '(%S+) %S+') do
      if not seen[user] then
        seen[user] = true
        users[#users + 1] = user
      end
    end
  end
  problem = check_fields(last_key, users, function(i, text)
    if text and not tonumber(text) then
      return last_key .. ' field ' .. users[i] .. ' = ' .. text .. ' is not an event time'
    end
    last_checkout[users[i]] = text and {tonumber(text), text} or false
  end)
end

local id_lines = {}
for line in string.gmatch(arg.event_ids, '[^\n]+') do
  local topic, forget_before, rest = string.match(line, '^(%S+) (%S+)(.*)$')
  local key = prefix .. 'ids:' .. topic
  expect_type(key, 'zset')
  id_lines[#id_lines + 1] = {key, forget_before, rest}
end

if problem then
  return redis.error_reply('SEEDLOOP_UNAPPLIABLE nothing written: ' .. problem)
end

-- 3. Write: nothing below can fail.
local user_ttl = arg.user_ttl
local states = arg.states
local pos = 1
for user, len in string.gmatch(arg.state_index, '(%S+) (%d+)') do
  local last = pos + tonumber(len)
  redis.call('SET', prefix .. 'u:' .. user, string.sub(states, pos, last - 1), 'EX', user_ttl)
  pos = last
end

local bucket_ttl = arg.bucket_ttl
for _, key in ipairs(incr_keys) do
  local fields, amounts = incr_fields[key], incr_amounts[key]
  for i = 1, #fields do
    redis.call('HINCRBY', key, fields[i], amounts[i])
  end
  if key ~= KEYS[2] and key ~= KEYS[3] then
    redis.call('EXPIRE', key, bucket_ttl)
  end
end

local reach_ttl = arg.reach_ttl
for _, entry in ipairs(reach) do
  local key, users, n, skip = entry[1], {}, 0, true
  for word in string.gmatch(entry[2], '%S+') do
    if skip then
      skip = false  -- the key suffix
    else
      n = n + 1
      users[n] = word
      if n == 1000 then
        redis.call('PFADD', key, unpack(users, 1, n))
        n = 0
      end
    end
  end
  if n > 0 then
    redis.call('PFADD', key, unpack(users, 1, n))
  end
  redis.call('EXPIRE', key, reach_ttl)
end

-- Remarketing audiences (audiences.py): sorted sets scored by event time, written so that any
-- arrival order within the allowed lateness ends in the same sets.
local function last_of(user)
  return last_checkout[user]
end
local bought = {}
for user, at in string.gmatch(arg.checkouts, '(%S+) (%S+)') do
  local prev = last_of(user)
  if not prev or tonumber(at) > prev[1] then
    last_checkout[user] = {tonumber(at), at}
    redis.call('HSET', last_key, user, at)
  end
  redis.call('ZADD', aud .. 'buyers', 'GT', at, user)
  redis.call('ZREM', aud .. 'engaged', user)
  bought[#bought + 1] = user
end
for user, at in string.gmatch(arg.carts, '(%S+) (%S+)') do
  local prev = last_of(user)
  if not prev or tonumber(at) > prev[1] then
    redis.call('ZADD', aud .. 'cart_abandoners', 'GT', at, user)
  end
end
for user, at in string.gmatch(arg.engagements, '(%S+) (%S+)') do
  if not last_of(user) then
    redis.call('ZADD', aud .. 'engaged', 'GT', at, user)
  end
end
-- A cart at or before the user's last checkout was bought: not abandoned any more.
for _, user in ipairs(bought) do
  local cart = redis.call('ZSCORE', aud .. 'cart_abandoners', user)
  if cart and tonumber(cart) <= last_checkout[user][1] then
    redis.call('ZREM', aud .. 'cart_abandoners', user)
  end
end
local cart_cut, engaged_cut, buyers_cut = string.match(arg.audience_cutoffs, '(%S+) (%S+) (%S+)')
if cart_cut then
  redis.call('ZREMRANGEBYSCORE', aud .. 'cart_abandoners', '-inf', cart_cut)
  redis.call('ZREMRANGEBYSCORE', aud .. 'engaged', '-inf', engaged_cut)
  redis.call('ZREMRANGEBYSCORE', aud .. 'buyers', '-inf', buyers_cut)
end

-- The partition's applied event ids (read_batch.lua looks a batch's ids up in them).
for _, entry in ipairs(id_lines) do
  local key, forget_before, args, n = entry[1], entry[2], {}, 0
  for id, at in string.gmatch(entry[3], '(%S+) (%S+)') do
    args[n + 1], args[n + 2] = at, id
    n = n + 2
    if n == 1000 then
      redis.call('ZADD', key, unpack(args, 1, n))
      n = 0
    end
  end
  if n > 0 then
    redis.call('ZADD', key, unpack(args, 1, n))
  end
  if forget_before ~= '-' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. forget_before)
  end
end

-- 4. Last: the watermarks and the offsets that mark the batch applied.
for _, o in ipairs(offsets) do
  if o[4] ~= '-' then
    redis.call('HSET', meta, 'wm:' .. o[1], o[4])
  end
  if o[5] ~= '-' then
    redis.call('HSET', meta, 'top:' .. o[1], o[5])
  end
  redis.call('HSET', meta, 'off:' .. o[1], o[3])
end

return {'OK'}
