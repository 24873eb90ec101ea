-- POST /v1/batches with a distinct Idempotency-Key on every request: every
-- request is a real create through the idempotent path (key -> batch id).
--
-- A key is  bench-<nonce>-<random>-t<thread>-<counter>:
--   nonce    passed by scripts/bench.sh (nanosecond clock + $RANDOM, new per run),
--   random   from this thread's own seeded generator,
--   thread   a number setup() gives each wrk thread (distinct within a run),
--   counter  per thread, incremented on every request.
-- so no key repeats across threads, runs or servers.
wrk.method = "POST"
wrk.path = "/v1/batches"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}'

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

local prefix
local counter = 0
function init(args)
  local nonce = args[1] or tostring(os.time())
  local n = thread_number or 0
  math.randomseed(os.time() + n * 7919 + math.floor(os.clock() * 1000000))
  prefix = string.format("bench-%s-%08x-t%d-", nonce, math.random(0, 0x7fffffff), n)
end

function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = prefix .. counter
  return wrk.format()
end
