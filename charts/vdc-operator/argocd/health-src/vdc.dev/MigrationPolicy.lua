-- Configuration, not something the operator acts on: each migration reads the policy that selects
-- its VM, and the operator writes no status (no finalizer either). A policy without conditions is
-- Healthy, as kstatus says Current, also after an edit (no generation is ever observed). Only a
-- deletion held by someone else's finalizer, or a status some later operator writes, goes on to the
-- common rules below.

-- The kind-specific part: what common.lua puts in front of the condition's message (nil: nothing).
local function detail(status)
  return nil
end

-- Healthy unless common.lua has something to judge: a deletion, an unobserved generation, or a
-- Ready condition, or a Reconciling or Stalled one that is True (kstatus's rules, as for no status).
local function configuration(o)
  local meta = o.metadata or {}
  if meta.deletionTimestamp ~= nil then
    return nil
  end
  local status = o.status
  if type(status) == "table" then
    if status.observedGeneration ~= nil and meta.generation ~= nil and status.observedGeneration ~= meta.generation then
      return nil
    end
    if type(status.conditions) == "table" then
      for _, c in ipairs(status.conditions) do
        if c.type == "Ready" or ((c.type == "Reconciling" or c.type == "Stalled") and c.status == "True") then
          return nil
        end
      end
    end
  end
  return {status = "Healthy", message = "Configuration: read by each migration of a VM it selects"}
end

local configured = configuration(obj)
if configured ~= nil then
  return configured
end
