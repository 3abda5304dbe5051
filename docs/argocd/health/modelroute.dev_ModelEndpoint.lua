-- Argo CD health check for modelroute.dev/v1alpha1 ModelEndpoint
-- (argocd-cm key: resource.customizations.health.modelroute.dev_ModelEndpoint).
-- Uses only what Argo CD opens by default: Lua's base functions and `table` (no `string`, no `math`).
--   Healthy      Ready=True for the current generation: live, and at least one replica is not
--                unhealthy. Unhealthy replicas are named in the message; the router already avoids them.
--   Degraded     Ready=False: Invalid (the spec is rejected) or Unavailable (every replica unhealthy).
--   Progressing  no status yet, status of an older generation, Ready=Unknown (Pending), or
--                Ready=False/Blocked (valid, waiting while another object of the namespace is invalid).
local hs = {}
local status = obj.status
local generation = obj.metadata.generation or 0

if status == nil or status.observedGeneration == nil or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the modelroute operator to observe generation " .. generation
  return hs
end

local ready = nil
for _, condition in ipairs(status.conditions or {}) do
  if condition.type == "Ready" then
    ready = condition
  end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the Ready condition"
  return hs
end

if ready.status == "True" then
  local unhealthy = {}
  for _, replica in ipairs(status.replicas or {}) do
    if replica.health == "Unhealthy" then
      table.insert(unhealthy, replica.name)
    end
  end
  hs.status = "Healthy"
  hs.message = (status.readySummary or "?") .. " replicas ready (" .. (status.regions or "") .. ")"
  if #unhealthy > 0 then
    hs.message = hs.message .. "; unhealthy: " .. table.concat(unhealthy, ", ")
  end
  return hs
end

if ready.status == "False" and ready.reason ~= "Blocked" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = (ready.reason or "Unknown") .. ": " .. (ready.message or "")
return hs
