-- Downloading/Verifying/Converting is Progressing (with the percentage when known); an
-- import that cannot succeed without a spec change is Stalled: Degraded.

-- The kind-specific part: what common.lua puts in front of the condition's message (nil: nothing).
local function detail(status)
  local p = status.progress
  if status.phase ~= nil and type(p) == "table" and p.bytesTotal ~= nil and p.bytesTotal > 0
    and status.phase ~= "Ready" and status.phase ~= "Failed" then
    return status.phase .. " " .. tostring(math.floor(100 * (p.bytesDone or 0) / p.bytesTotal)) .. "%"
  end
  return status.phase
end
