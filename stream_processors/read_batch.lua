-- Read what planning a partition batch needs, in one round trip: the partition's meta hash and
-- the stored state of each user of the batch (nil for a user with none).
-- KEYS[1] meta hash; ARGV[1] the partition's key prefix ("<ns>:{pN}:", the same hash tag as
-- KEYS[1], see apply_batch.lua); ARGV[2] "user_id user_id ...".
local out = {redis.call('HGETALL', KEYS[1])}
local n = 1
for user in string.gmatch(ARGV[2], '%S+') do
  n = n + 1
  out[n] = redis.call('GET', ARGV[1] .. 'u:' .. user)  -- false (nil reply) when absent
end
return out
