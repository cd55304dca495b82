-- The part of every vdc.dev health check that is the same for each kind: kstatus's rules. Lua 5.1
-- (gopher-lua, as in Argo CD). The kind's part, in front of this one, defines `detail(status)`:
-- what goes in front of the condition's message and, as an optional second value, what goes after it.
-- Being deleted, no status yet, or metadata.generation not yet observed: Progressing.
-- Stalled=True: Degraded. Reconciling=True: Progressing. Ready=True: Healthy. Otherwise Progressing.

local function condition(status, wanted)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function text(prefix, c, fallback, suffix)
  local msg = fallback
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    msg = c.message
  elseif c ~= nil and c.reason ~= nil and c.reason ~= "" then
    msg = c.reason
  end
  if suffix ~= nil and suffix ~= "" then
    msg = msg .. suffix
  end
  if prefix ~= nil and prefix ~= "" then
    return prefix .. ": " .. msg
  end
  return msg
end

-- The rules kstatus (Flux) applies, in its order, so Argo CD and Flux agree on every state.
local function health(o, detail)
  local hs = {}
  local meta = o.metadata or {}
  if meta.deletionTimestamp ~= nil then
    hs.status = "Progressing"
    hs.message = "Deleting: waiting for the operator to clean up (finalizer)"
    return hs
  end
  local status = o.status
  if type(status) ~= "table" then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to report status"
    return hs
  end
  if meta.generation ~= nil and status.observedGeneration ~= meta.generation then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator: generation is " .. tostring(meta.generation)
      .. ", but the latest observed generation is " .. tostring(status.observedGeneration or "none")
    return hs
  end
  local prefix, suffix = detail(status)
  local stalled = condition(status, "Stalled")
  if stalled ~= nil and stalled.status == "True" then
    hs.status = "Degraded"
    hs.message = text(prefix, stalled, "Stalled", suffix)
    return hs
  end
  local reconciling = condition(status, "Reconciling")
  local ready = condition(status, "Ready")
  if reconciling ~= nil and reconciling.status == "True" then
    hs.status = "Progressing"
    if (reconciling.message == nil or reconciling.message == "") and ready ~= nil and ready.status ~= "True" then
      reconciling = ready -- its message says what is still missing
    end
    hs.message = text(prefix, reconciling, "Reconciling", suffix)
    return hs
  end
  if ready == nil then
    hs.status = "Progressing"
    hs.message = text(prefix, nil, "Waiting for the Ready condition", suffix)
  elseif ready.status == "True" then
    hs.status = "Healthy"
    hs.message = text(prefix, ready, "Ready", suffix)
  else
    hs.status = "Progressing"
    hs.message = text(prefix, ready, "Not ready", suffix)
  end
  return hs
end

return health(obj, detail)
