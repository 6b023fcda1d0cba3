-- wrk GET that honours Retry-After: after a 503 or 429 carrying Retry-After: N, the next request this thread
-- sends waits N seconds, the way a well-behaved client (or an SDK with retries) backs off. wrk's plain mode is
-- closed-loop and re-sends a rejected request at once, which is a worst case, not what real clients do; the
-- report keeps both, labelled.
--   wrk -t2 -c500 -d30s --latency -s loadtest/scripts/backoff.lua http://127.0.0.1:8080/items
-- Prints the LOADTEST_RESULT line of report.lua at the end.
--
-- wrk's Lua API does not say which connection a response came on, and delay() is called before a
-- connection's next request. wrk asks for that next request right after the response was read, on the same
-- event loop, so a FIFO of pending waits per thread hands each wait to (nearly always) the very connection
-- that was told to wait. Either way, the number and length of the waits are exactly those the server asked for.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local count_response = response
local waits, head, tail = {}, 1, 0
backoffs = 0 -- per thread, like `statuses`

local function retry_after_ms(headers)
   for name, value in pairs(headers) do
      if string.lower(name) == "retry-after" then
         local seconds = tonumber(value)
         if seconds and seconds > 0 then return seconds * 1000 end
      end
   end
   return 0
end

function response(status, headers, body)
   count_response(status, headers, body)
   local wait_ms = 0
   if status == 503 or status == 429 then
      wait_ms = retry_after_ms(headers)
      if wait_ms > 0 then backoffs = backoffs + 1 end
   end
   tail = tail + 1
   waits[tail] = wait_ms
end

function delay()
   if head > tail then return 0 end -- a connection's first request
   local wait_ms = waits[head]
   waits[head] = nil
   head = head + 1
   return wait_ms
end
