-- A Host that cannot reach libvirt is Ready=False: Progressing (the operator keeps reconnecting);
-- bad credentials are Stalled: Degraded.

-- The kind-specific part: what common.lua puts in front of the condition's message (nil: nothing).
local function detail(status)
  return status.phase
end
