-- Apply one partition batch atomically (DESIGN.md section 4).
--
-- Why one script: the offsets that say "this batch is applied" and the figures the batch changes
-- must move together, or a crash between them would lose or double-count the batch on replay.
-- Every key is under the partition's hash tag, so this stays one atomic call on Redis Cluster.
--
-- KEYS[1] meta hash (epoch, off:<topic>, wm:<topic>)   KEYS[2] all-time totals hash
-- KEYS[3] journey-path counts hash                     KEYS[4..] user state keys, then bucket keys
-- ARGV: epoch, n_topics, {topic, expected_offset, new_offset, new_watermark} * n_topics,
--       n_users, user_ttl, {state} * n_users,
--       n_buckets, bucket_ttl, {n_fields, {field, amount} * n_fields} * n_buckets,
--       n_total_fields, {field, amount} * n, n_path_fields, {field, amount} * n
--
-- Returns {"OK"}, {"FENCED", current_epoch} when a newer owner claimed the partition (this
-- writer is a zombie), or {"CONFLICT", topic, current_offset} when the stored offset is not the
-- one the caller read (someone applied in between); nothing is written in either case.

local meta = KEYS[1]
local current_epoch = redis.call('HGET', meta, 'epoch')
if current_epoch ~= ARGV[1] then
  return {'FENCED', current_epoch or ''}
end

local n_topics = tonumber(ARGV[2])
local i = 3
for _ = 1, n_topics do
  local stored = redis.call('HGET', meta, 'off:' .. ARGV[i]) or '-1'
  if stored ~= ARGV[i + 1] then
    return {'CONFLICT', ARGV[i], stored}
  end
  i = i + 4
end

i = 3
for _ = 1, n_topics do
  local topic = ARGV[i]
  redis.call('HSET', meta, 'off:' .. topic, ARGV[i + 2])
  local wm = tonumber(ARGV[i + 3])
  local old_wm = tonumber(redis.call('HGET', meta, 'wm:' .. topic) or '-1')
  if wm > old_wm then
    redis.call('HSET', meta, 'wm:' .. topic, ARGV[i + 3])
  end
  i = i + 4
end

local n_users = tonumber(ARGV[i]); i = i + 1
local user_ttl = ARGV[i]; i = i + 1
for u = 1, n_users do
  redis.call('SET', KEYS[3 + u], ARGV[i], 'EX', user_ttl)
  i = i + 1
end

local n_buckets = tonumber(ARGV[i]); i = i + 1
local bucket_ttl = ARGV[i]; i = i + 1
for b = 1, n_buckets do
  local key = KEYS[3 + n_users + b]
  local n_fields = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n_fields do
    redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  redis.call('EXPIRE', key, bucket_ttl)
end

local n_total = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_total do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end

local n_paths = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_paths do
  redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end

return {'OK'}
