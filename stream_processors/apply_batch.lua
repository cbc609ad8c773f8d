-- Apply one partition batch atomically (DESIGN.md section 4).
--
-- Why one script: the offsets that say "this batch is applied" and everything the batch changes
-- (figures, user states, journey paths, reach, audiences) must move together, or a crash between
-- them would lose or double-count the batch on replay.
--
-- Keys. KEYS[1] is the partition's meta hash, KEYS[2] its all-time totals, KEYS[3] its journey
-- paths. Every other key is the partition's key prefix (ARGV[2], "<ns>:{pN}:") plus a suffix: it
-- carries the same hash tag, so it lives in the same slot as KEYS[1] and the script stays one
-- atomic call on Redis Cluster. Key names are built here rather than passed, because a batch
-- touches ~1,000 keys and the client pays ~0.6 us per argument to encode each.
--
-- Lists travel as text, one argument each: the fields are identifiers ([A-Za-z0-9_.:-]), channel
-- names, integers and Python float reprs, none of which contain spaces or newlines.
--
-- ARGV[1]  epoch
-- ARGV[2]  key prefix of the partition
-- ARGV[3]  offsets:  "topic expected_offset new_offset new_watermark\n" per topic
-- ARGV[4]  user state TTL (s)
-- ARGV[5]  "user_id byte_length " per user;  ARGV[6] the users' states, back to back
-- ARGV[7]  bucket TTL (s)
-- ARGV[8]  increments: "bucket field amount\n" (bucket "-": the all-time totals hash)
-- ARGV[9]  journey paths: "path amount\n"
-- ARGV[10] reach TTL (s)
-- ARGV[11] reach: "key_suffix user user ...\n" (HyperLogLogs: r:<bucket>:<campaign>:<channel>, e:<bucket>:<campaign>)
-- ARGV[12] audience checkouts, ARGV[13] carts, ARGV[14] engagements: "user_id event_time\n"
-- ARGV[15] audience expiry cutoffs "cart_abandoners engaged buyers" (event times), or "" for none
--
-- Returns {"OK"}, {"FENCED", current_epoch} when a newer owner claimed the partition (this
-- writer is a zombie), or {"CONFLICT", topic, current_offset} when the stored offset is not the
-- one the caller read (someone applied in between); nothing is written in either case.

local meta = KEYS[1]
local current_epoch = redis.call('HGET', meta, 'epoch')
if current_epoch ~= ARGV[1] then
  return {'FENCED', current_epoch or ''}
end
local prefix = ARGV[2]

local offsets = {}
for topic, expected, new, wm in string.gmatch(ARGV[3], '(%S+) (%S+) (%S+) (%S+)') do
  offsets[#offsets + 1] = {topic, expected, new, wm}
end
for _, o in ipairs(offsets) do
  local stored = redis.call('HGET', meta, 'off:' .. o[1]) or '-1'
  if stored ~= o[2] then
    return {'CONFLICT', o[1], stored}
  end
end
for _, o in ipairs(offsets) do
  redis.call('HSET', meta, 'off:' .. o[1], o[3])
  local old_wm = tonumber(redis.call('HGET', meta, 'wm:' .. o[1]) or '-1')
  if tonumber(o[4]) > old_wm then
    redis.call('HSET', meta, 'wm:' .. o[1], o[4])
  end
end

local user_ttl = ARGV[4]
local states = ARGV[6]
local pos = 1
for user, len in string.gmatch(ARGV[5], '(%S+) (%d+)') do
  local last = pos + tonumber(len)
  redis.call('SET', prefix .. 'u:' .. user, string.sub(states, pos, last - 1), 'EX', user_ttl)
  pos = last
end

local bucket_ttl = ARGV[7]
local buckets, seen_bucket = {}, {}
for bucket, field, amount in string.gmatch(ARGV[8], '(%S+) (%S+) (%S+)') do
  if bucket == '-' then
    redis.call('HINCRBY', KEYS[2], field, amount)
  else
    local key = prefix .. 'b:' .. bucket
    redis.call('HINCRBY', key, field, amount)
    if not seen_bucket[key] then
      seen_bucket[key] = true
      buckets[#buckets + 1] = key
    end
  end
end
for _, key in ipairs(buckets) do
  redis.call('EXPIRE', key, bucket_ttl)
end

for path, amount in string.gmatch(ARGV[9], '(%S+) (%S+)') do
  redis.call('HINCRBY', KEYS[3], path, amount)
end

local reach_ttl = ARGV[10]
for line in string.gmatch(ARGV[11], '[^\n]+') do
  local key, users, n = nil, {}, 0
  for word in string.gmatch(line, '%S+') do
    if key == nil then
      key = prefix .. word
    else
      n = n + 1
      users[n] = word
      if n == 1000 then  -- unpack() of very long lists overflows Lua's C stack
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
local aud = prefix .. 'aud:'
local last_key = aud .. 'last_checkout'
local last_checkout = {}  -- user -> {time, text} of their latest checkout, stored or in this batch
local function last_of(user)
  local known = last_checkout[user]
  if known == nil then
    local stored = redis.call('HGET', last_key, user)
    known = stored and {tonumber(stored), stored} or false
    last_checkout[user] = known
  end
  return known
end
local bought = {}
for user, at in string.gmatch(ARGV[12], '(%S+) (%S+)') do
  local prev = last_of(user)
  if not prev or tonumber(at) > prev[1] then
    last_checkout[user] = {tonumber(at), at}
    redis.call('HSET', last_key, user, at)
  end
  redis.call('ZADD', aud .. 'buyers', 'GT', at, user)
  redis.call('ZREM', aud .. 'engaged', user)
  bought[#bought + 1] = user
end
for user, at in string.gmatch(ARGV[13], '(%S+) (%S+)') do
  local prev = last_of(user)
  if not prev or tonumber(at) > prev[1] then
    redis.call('ZADD', aud .. 'cart_abandoners', 'GT', at, user)
  end
end
for user, at in string.gmatch(ARGV[14], '(%S+) (%S+)') do
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
local cart_cut, engaged_cut, buyers_cut = string.match(ARGV[15], '(%S+) (%S+) (%S+)')
if cart_cut then
  redis.call('ZREMRANGEBYSCORE', aud .. 'cart_abandoners', '-inf', cart_cut)
  redis.call('ZREMRANGEBYSCORE', aud .. 'engaged', '-inf', engaged_cut)
  redis.call('ZREMRANGEBYSCORE', aud .. 'buyers', '-inf', buyers_cut)
end

return {'OK'}
