-- Argo CD health of a modelfleet.io ModelVersion (one build of a model).
--   Healthy      Ready, Serving or Retired: it meets its Model's rules
--   Progressing  Pending: not checked yet, or its Model does not exist yet
--   Degraded     Rejected: it breaks its Model's rules (image not allowed, approval missing)
-- The message is the phase and status.message: why it is in its phase, or for a Ready or Retired
-- version its latest outcome ("Retired: rolled back in iris: errors 0.31 > 0.05").
-- Written for gopher-lua (Lua 5.1).
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the modelfleet operator to check the version"
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local phase = status.phase
if phase == "Ready" or phase == "Serving" or phase == "Retired" then
  hs.status = "Healthy"
elseif phase == "Rejected" then
  hs.status = "Degraded"
elseif phase == "Pending" then
  hs.status = "Progressing"
else
  hs.status = "Unknown"
end
local message = status.message or ""
hs.message = phase .. (message ~= "" and (": " .. message) or "")
return hs
