-- Read what planning a partition batch needs, in one round trip: the partition's meta hash, which
-- of the batch's event ids the partition has already applied, and the stored state of each user
-- of the batch (nil for a user with none).
-- KEYS[1] meta hash; ARGV[1] the partition's key prefix ("<ns>:{pN}:", the same hash tag as
-- KEYS[1]; key names: `Keys` in stream_processors/store/redis_lua.py, see apply_batch.lua); ARGV[2] "user_id user_id ..."; ARGV[3] "event_id event_id ...".
-- Returns {meta as a flat list, {event_id, topic, event_time, ...} of the batch's ids the partition
-- remembers, state of user 1, state of user 2, ...}.
local meta = redis.call('HGETALL', KEYS[1])
local prefix = ARGV[1]

-- The partition keeps one set of applied event ids per topic (`ids:<topic>`, apply_batch.lua);
-- an id is the event's identity whatever its topic, so the batch's ids are looked up in all of
-- them. The topics are those the partition has applied offsets for.
local ids = {}
for id in string.gmatch(ARGV[3], '%S+') do
  ids[#ids + 1] = id
end
local known, n_known = {}, 0
if #ids > 0 then
  for i = 1, #meta, 2 do
    local name = meta[i]
    if string.sub(name, 1, 4) == 'off:' then
      local topic = string.sub(name, 5)
      local key = prefix .. 'ids:' .. topic
      for first = 1, #ids, 1000 do  -- unpack() of very long lists overflows Lua's C stack
        local last = math.min(first + 999, #ids)
        local scores = redis.call('ZMSCORE', key, unpack(ids, first, last))
        for j = 1, last - first + 1 do
          if scores[j] then
            known[n_known + 1], known[n_known + 2], known[n_known + 3] = ids[first + j - 1], topic, scores[j]
            n_known = n_known + 3
          end
        end
      end
    end
  end
end

local out = {meta, known}
local n = 2
for user in string.gmatch(ARGV[2], '%S+') do
  n = n + 1
  out[n] = redis.call('GET', prefix .. 'u:' .. user)  -- false (nil reply) when absent
end
return out
