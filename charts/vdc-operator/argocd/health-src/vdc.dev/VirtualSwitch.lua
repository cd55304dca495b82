-- A switch not yet active on every matching host is Progressing; an unsupported mode is
-- Stalled: Degraded.

-- The kind-specific part: what common.lua puts in front of the condition's message (nil: nothing).
local function detail(status)
  return nil
end
