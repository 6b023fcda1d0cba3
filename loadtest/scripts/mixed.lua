-- wrk 90/10 read/write mix on one URL: nine GETs, then one POST with a unique name, per connection thread.
-- Deterministic (every 10th request writes) rather than random, so every run has exactly the same mix.
--   LOADTEST_RUN_ID=abc wrk -t2 -c100 -d10s -s loadtest/scripts/mixed.lua http://127.0.0.1:8080/items
-- Prints the LOADTEST_RESULT line of report.lua at the end; its "202" count is the writes accepted.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local run_id = os.getenv("LOADTEST_RUN_ID") or tostring(os.time())
local post_headers = { ["Content-Type"] = "application/json" }
local counter = 0

function request()
   counter = counter + 1
   local is_write = counter % 10 == 0
   loadtest_sent(is_write)
   if is_write then
      local body = string.format('{"name":"lt-%s-%d-%d","description":"wrk mixed.lua"}',
                                 run_id, thread_index or 0, counter)
      return wrk.format("POST", wrk.path, post_headers, body)
   end
   return wrk.format("GET", wrk.path)
end
