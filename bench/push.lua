-- wrk script: POST pre-built packets to /push, each wrk thread from its own file.
-- Run with -tN -cN (one connection per thread): a thread's packets come from one source
-- with rising seq, and one connection keeps them in order. Usage: wrk ... -s push.lua URL -- DIR
-- DIR holds 0.bin, 1.bin, ...: packets, each preceded by its length as 4 big-endian bytes.
-- Out of packets, a thread sends its last one again: the gateway refuses the replay (409) and
-- wrk counts it under "Non-2xx", so a run that outlasts its packets shows errors.

local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  local file = assert(io.open(args[1] .. "/" .. id .. ".bin", "rb"))
  local data = file:read("*a")
  file:close()
  requests, sent = {}, 0
  local pos = 1
  while pos <= #data do
    local b1, b2, b3, b4 = data:byte(pos, pos + 3)
    local size = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    local body = data:sub(pos + 4, pos + 3 + size)
    requests[#requests + 1] = wrk.format("POST", "/push", {["Content-Type"] = "application/octet-stream"}, body)
    pos = pos + 4 + size
  end
end

function request()
  if sent < #requests then
    sent = sent + 1
  end
  return requests[sent]
end
