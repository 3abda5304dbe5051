-- Argo CD health check for modelroute.dev/v1alpha1 RoutingPolicy
-- (argocd-cm key: resource.customizations.health.modelroute.dev_RoutingPolicy).
-- Uses only what Argo CD opens by default: Lua's base functions and `table` (no `string`, no `math`).
--   Healthy      Ready=True for the current generation: compiled into the live config and every
--                ready sidecar of the namespace runs it (the sync figure counts this config:
--                status.syncedVersion = status.configVersion, and status.laggingPods is empty).
--   Progressing  no status yet, status of an older generation, Ready=Unknown (Pending),
--                Ready=False/Blocked, Ready=False/RollingOut: no sync figure for this config yet, or
--                sidecars still lagging (the operator retries them with backoff; they are named).
--   Degraded     Ready=False for any other reason, e.g. Invalid (a rule names a missing endpoint).
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

if ready.status ~= "True" and not (ready.status == "False" and ready.reason == "RollingOut") then
  if ready.status == "False" and ready.reason ~= "Blocked" then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  hs.message = (ready.reason or "Unknown") .. ": " .. (ready.message or "")
  return hs
end

if status.sync == nil then
  hs.status = "Progressing"
  hs.message = "live; waiting for the sidecar sync figure"
  return hs
end
if status.syncedVersion ~= nil and status.syncedVersion ~= status.configVersion then
  hs.status = "Progressing"
  hs.message = "live; waiting for the sidecars to be counted on this config"
  return hs
end
local lagging = status.laggingPods or {}
if #lagging > 0 then
  hs.status = "Progressing"
  hs.message = status.sync .. " sidecars synced; lagging: " .. table.concat(lagging, ", ")
  return hs
end
hs.status = "Healthy"
hs.message = "live; " .. status.sync .. " sidecars synced"
return hs
