-- wrk POST /items with a JSON body whose name is unique per request ("lt-<run>-<thread>-<n>"), so every
-- accepted request is a distinct row (no accidental idempotency) and a run's rows can be told apart.
--   LOADTEST_RUN_ID=abc wrk -t2 -c50 -d10s -s loadtest/scripts/post.lua http://127.0.0.1:8080/items
-- Prints the LOADTEST_RESULT line of report.lua at the end.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local run_id = os.getenv("LOADTEST_RUN_ID") or tostring(os.time())
local headers = { ["Content-Type"] = "application/json" }
local counter = 0

function request()
   counter = counter + 1
   loadtest_sent(true)
   local body = string.format('{"name":"lt-%s-%d-%d","description":"wrk post.lua"}',
                              run_id, thread_index or 0, counter)
   return wrk.format("POST", wrk.path, headers, body)
end
