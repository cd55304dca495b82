-- A quota the operator has counted is Ready=True: Healthy, also when its namespace is over a limit
-- that was lowered (nothing is stopped; no new VM is placed; the message says which). A spec the
-- operator cannot read is Stalled: Degraded.

-- The kind-specific part: what common.lua puts in front of the condition's message (nil: nothing).
-- Each limited amount as used/limit, e.g. "2/10 VMs, 640Mi/32Gi memory".
local function detail(status)
  local used, hard = status.used, status.hard
  if type(used) ~= "table" or type(hard) ~= "table" then
    return nil
  end
  local parts = {}
  for _, amount in ipairs({
    {"virtualMachines", "VMs"}, {"vcpus", "vCPUs"}, {"memory", "memory"}, {"storage", "storage"},
    {"publicAddresses", "public addresses"},
  }) do
    local field, label = amount[1], amount[2]
    if hard[field] ~= nil then
      table.insert(parts, tostring(used[field] or 0) .. "/" .. tostring(hard[field]) .. " " .. label)
    end
  end
  if #parts == 0 then
    return nil
  end
  return table.concat(parts, ", ")
end
