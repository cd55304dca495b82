-- A VM stopped on purpose (runStrategy Halted or Manual, Once after its run) is Ready=True:
-- Healthy, not Suspended: it is what the spec asks for.

-- The kind-specific part: what common.lua puts in front of the condition's message (nil: nothing).
local function detail(status)
  return status.phase
end
