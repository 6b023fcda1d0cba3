-- wrk reporting: counts responses by status and, at the end, prints ONE machine-readable line
--   LOADTEST_RESULT {"requests":…,"latency_us":{"p50":…,"p90":…,"p99":…},"statuses":{"200":…},…}
-- wrk's own summary has no p90 and lumps every non-2xx/3xx status into one number; parsers.py reads this line.
--
-- Use alone for GET scenarios:      wrk -t2 -c100 -d15s -s loadtest/scripts/report.lua http://host/items
-- or from another script (post.lua, mixed.lua) via `dofile`; such scripts define request() and call
-- `loadtest_sent(is_write)` for each request they build, so the line also says how many requests (and how many
-- writes) were sent: wrk stops at its deadline without reading the responses in flight, and the lost-write
-- check needs to know how many writes may have been accepted without wrk seeing the 202.
--
-- Each wrk thread has its own Lua state: `statuses` and `sent` are per-thread globals, summed in done()
-- (which runs in the main state) through thread:get.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_index", #threads)
end

statuses = {}
sent = 0
writes_sent = 0

function loadtest_sent(is_write)
   sent = sent + 1
   if is_write then writes_sent = writes_sent + 1 end
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

local function json_object(t)
   local keys = {}
   for k in pairs(t) do table.insert(keys, k) end
   table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
   local parts = {}
   for _, k in ipairs(keys) do
      local v = t[k]
      local value
      if type(v) == "table" then value = json_object(v) else value = string.format("%.17g", v) end
      table.insert(parts, string.format('"%s":%s', tostring(k), value))
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   local counts, sent_total, writes_total, dynamic = {}, 0, 0, false
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses") or {}) do
         counts[tostring(status)] = (counts[tostring(status)] or 0) + n
      end
      local thread_sent = thread:get("sent") or 0
      if thread_sent > 0 then dynamic = true end
      sent_total = sent_total + thread_sent
      writes_total = writes_total + (thread:get("writes_sent") or 0)
   end
   local result = {
      duration_us = summary.duration,
      requests = summary.requests,
      bytes = summary.bytes,
      errors = summary.errors,
      latency_us = {
         min = latency.min, max = latency.max, mean = latency.mean, stdev = latency.stdev,
         p50 = latency:percentile(50), p75 = latency:percentile(75), p90 = latency:percentile(90),
         p99 = latency:percentile(99), p999 = latency:percentile(99.9),
      },
      statuses = counts,
   }
   -- Only scripts with a request() function count what they send; plain GET runs leave `sent` absent.
   if dynamic then
      result.sent = sent_total
      result.writes_sent = writes_total
   end
   io.write("LOADTEST_RESULT " .. json_object(result) .. "\n")
end
