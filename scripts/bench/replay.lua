-- POST /v1/batches with the same Idempotency-Key on every request: the replay
-- path (the conditional write finds the existing record and returns it).
-- scripts/bench.sh creates the batch with this key before the run, so every
-- measured request is a replay. The key is passed as the script's argument.
wrk.method = "POST"
wrk.path = "/v1/batches"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}'

function init(args)
  -- Set before wrk builds its one static request (wrk.init calls init first).
  wrk.headers["Idempotency-Key"] = args[1] or "bench-replay"
end
