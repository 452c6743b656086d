-- Argo CD health of a modelfleet.io Deployment (a progressive rollout of a model).
--   Healthy      the requested version serves all traffic from ready pods (Ready=True)
--   Progressing  a rollout is under way, pods are starting, or the operator has not seen the spec yet
--   Suspended    the rollout is paused (spec.paused, or a pause step waiting for promotion)
--   Degraded     rolled back, failing its monitor, or the requested version cannot be served
-- Written for gopher-lua (Lua 5.1), which Argo CD embeds.
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the modelfleet operator to report status"
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local message = status.message or ""
local phase = status.phase
local ready = condition(status, "Ready")

if phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "Progressing" then
  hs.status = "Progressing"
elseif phase == "Healthy" then
  if ready ~= nil and ready.status == "True" then
    hs.status = "Healthy"
  elseif ready ~= nil and ready.reason == "VersionNotServable" then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
elseif phase == "RolledBack" or phase == "Degraded" or phase == "Failed" then
  hs.status = "Degraded"
else
  hs.status = "Unknown"
end

if message == "" and ready ~= nil and ready.message ~= nil then
  message = ready.message
end
hs.message = phase .. (message ~= "" and (": " .. message) or "")
return hs
