-- An operation: Succeeded is Ready=True: Healthy; Cancelled too (it ended as asked: the VM stays on
-- its source). Failed is Stalled: Degraded, naming the phase that failed, with libvirt's error when
-- the message does not carry it.
-- Any other phase, and rolling back, is Reconciling: Progressing, with the percentage copied when
-- libvirt reported one. Deleting it cancels it: Progressing until the rollback is done.

-- The kind-specific part: what common.lua puts in front of the condition's message (nil: nothing),
-- and after it (libvirt's error of a failed migration, unless the message says it already).
local function detail(status)
  local phase = status.phase
  if phase == nil then
    return nil
  end
  local rollback = status.rollback
  if phase == "Failed" then
    local prefix = "Failed"
    if type(rollback) == "table" and rollback.failedPhase ~= nil and rollback.failedPhase ~= "" then
      prefix = "Failed in " .. rollback.failedPhase
    end
    -- libvirt's error, its first line, when the message does not say it already (the message is
    -- usually "libvirt: " and that line; status.libvirtError keeps all of it).
    local err = string.match(status.libvirtError or "", "[^\r\n]*[^%s][^\r\n]*")
    if err ~= nil then
      err = string.match(err, "^%s*(.-)%s*$")
    end
    if err ~= nil and string.find(status.message or "", err, 1, true) == nil then
      return prefix, " (libvirt: " .. err .. ")"
    end
    return prefix
  end
  if phase == "Succeeded" or phase == "Cancelled" then
    return phase
  end
  if type(rollback) == "table" then
    return "Rolling back from " .. phase
  end
  local p = status.progress
  if type(p) == "table" and type(p.percent) == "number" then
    return phase .. " " .. tostring(math.floor(p.percent)) .. "%"
  end
  return phase
end
