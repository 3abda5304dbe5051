-- Argo CD health check for modelroute.dev/v1alpha1 Canary
-- (argocd-cm key: resource.customizations.health.modelroute.dev_Canary).
-- Uses only what Argo CD opens by default: Lua's base functions and `table` (no `string`, no `math`).
--   Progressing  no status yet, status of an older generation, Ready not True (Pending, Blocked),
--                phase Pending, Mirroring (spec.mirror: copies to the candidate are judged before step 1)
--                or Progressing (the message names the step and the candidate's weight).
--   Suspended    phase Paused (spec.paused: holds its weight until resumed).
--   Healthy      phase Promoted (100% on the candidate; name it stable in the RoutingPolicy in Git).
--   Degraded     phase RolledBack (Ready=False/RolledBack: failed analysis or spec.abort; the message
--                says which), or
--                Ready=False for any reason but Blocked, e.g. Invalid (unknown policy or endpoint).
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
if ready.status ~= "True" and not (ready.status == "False" and ready.reason == "RolledBack") then
  if ready.status == "False" and ready.reason ~= "Blocked" then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  hs.message = (ready.reason or "Unknown") .. ": " .. (ready.message or "")
  return hs
end

local spec = obj.spec or {}
local candidate = spec.candidate or "?"
local step = (status.currentStep or 0) + 1
local steps = #(spec.steps or {})
-- the step's weight (desiredWeight); currentWeight is what every sidecar acknowledged, and is unset
-- until they have (RolledOut says so), so a step in flight reads as its target, not as 0%
local weight = status.desiredWeight or status.currentWeight or 0
local phase = status.phase or "Pending"

if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "waiting for the canary controller to start"
elseif phase == "Mirroring" then
  hs.status = "Progressing"
  hs.message = "mirroring the route's requests to " .. candidate .. " before step 1/" .. steps
elseif phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = "step " .. step .. "/" .. steps .. ": " .. weight .. "% to " .. candidate
elseif phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "paused at step " .. step .. "/" .. steps .. ": " .. weight .. "% to " .. candidate
elseif phase == "Promoted" then
  hs.status = "Healthy"
  hs.message = "promoted: 100% to " .. candidate .. "; name it stable in the RoutingPolicy"
elseif phase == "RolledBack" then
  local history = status.history or {}
  local why = "rolled back"
  if #history > 0 and history[#history].message ~= nil then
    why = history[#history].message
  end
  hs.status = "Degraded"
  hs.message = "rolled back to " .. (spec.stable or "?") .. ": " .. why
else
  hs.status = "Unknown"
  hs.message = "unknown phase " .. phase
end
return hs
