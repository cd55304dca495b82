-- A pool not yet running on every matching host is Progressing; a pool Failed on a host is
-- Stalled: Degraded.

-- The kind-specific part: what common.lua puts in front of the condition's message (nil: nothing).
local function detail(status)
  return nil
end
