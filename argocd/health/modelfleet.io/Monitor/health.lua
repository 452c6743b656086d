-- Argo CD health of a modelfleet.io Monitor (what healthy means for a Deployment, measured).
--   Healthy      measuring, and the latest verdict passes, or is inconclusive (too little traffic)
--   Degraded     the latest verdict fails, or the Monitor cannot measure (Ready=False, e.g. its
--                Deployment does not exist)
--   Progressing  no measurement yet, or its Deployment serves no version yet (NothingToMeasure)
-- Written for gopher-lua (Lua 5.1).
local hs = {}
local status = obj.status
local ready = nil
if status ~= nil and status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" then
      ready = c
    end
  end
end

if status == nil or (status.phase == nil and ready == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for the first measurement"
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local message = status.message or ""
if ready ~= nil and ready.status == "False" and ready.reason == "NothingToMeasure" then
  hs.status = "Progressing"
  hs.message = "NothingToMeasure: " .. (ready.message or message)
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotMeasuring") .. ": " .. (ready.message or message)
elseif status.phase == "Failing" then
  hs.status = "Degraded"
  hs.message = "Failing: " .. message
elseif status.phase == "Passing" or status.phase == "Inconclusive" then
  hs.status = "Healthy"
  hs.message = status.phase .. (message ~= "" and (": " .. message) or "")
else
  hs.status = "Progressing"
  hs.message = "Waiting for the first measurement"
end
return hs
