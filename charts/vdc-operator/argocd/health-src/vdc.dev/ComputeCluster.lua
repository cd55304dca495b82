-- A cluster whose members are counted is Ready=True: Healthy. With HA on and admission control not
-- met (too few Ready hosts, or too little capacity left), Ready=False: Progressing, with the numbers.
-- A host selected by two clusters (HostInTwoClusters) is Stalled: Degraded, until the selectors differ.

-- The kind-specific part: what common.lua puts in front of the condition's message (nil: nothing).
-- Ready members over members, and the HA state, e.g. "3/3 hosts Ready, HA Protected".
local function detail(status)
  if status.hostCount == nil then
    return nil
  end
  local text = tostring(status.readyHosts or 0) .. "/" .. tostring(status.hostCount) .. " hosts Ready"
  if type(status.ha) == "table" and status.ha.state ~= nil then
    text = text .. ", HA " .. status.ha.state
  end
  return text
end
