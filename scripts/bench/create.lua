-- POST /v1/batches without an Idempotency-Key: every request is a real create
-- with a fresh random batch id. The request is built once (no request()
-- function), so wrk spends as little CPU as possible per request.
wrk.method = "POST"
wrk.path = "/v1/batches"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}'
