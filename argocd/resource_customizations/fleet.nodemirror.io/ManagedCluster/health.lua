-- Health of a nodemirror ManagedCluster (fleet.nodemirror.io/v1alpha1).
-- Its status is kstatus-compliant (observedGeneration; Ready, Reconciling,
-- Stalled), and Connected tells why a cluster is not Ready. Conditions and
-- reasons: api/v1alpha1/conditions.go and controllers/managedcluster/status.go
-- in github.com/nodemirror/nodemirror.
-- Uses no standard library but base and table, so it runs from argocd-cm
-- without resource.customizations.useOpenLibs.
local hs = {}

local function condition(conditionType)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function messageOf(c, default)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return default
end

-- Until the operator has looked at this generation of the spec, the status
-- describes another one (or nothing: the schema defaults
-- status.observedGeneration to 0).
local generation = tonumber(obj.metadata.generation)
local observed = nil
if obj.status ~= nil then
  observed = tonumber(obj.status.observedGeneration)
end
if observed == nil or (generation ~= nil and observed < generation) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  else
    hs.message = "Waiting for the operator to observe the ManagedCluster"
  end
  return hs
end

local ready = condition("Ready")

-- spec.paused: the operator has stopped watching the member and keeps the
-- NodeSnapshots as last seen (Ready=True reason Paused).
if obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = messageOf(ready, "Mirroring is paused")
  return hs
end

-- Stalled=True: what retrying cannot fix (refused or unusable credentials,
-- forbidden RBAC, an untrusted certificate, a denied address, more nodes
-- than the operator mirrors per cluster).
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = messageOf(stalled, "Stalled")
  return hs
end

-- Ready=True: the member is reachable and its nodes are mirrored.
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = messageOf(ready, "Mirroring")
  return hs
end

local connected = condition("Connected")
if connected ~= nil then
  -- The first probe of the member has not answered yet.
  if connected.reason == "Connecting" then
    hs.status = "Progressing"
    hs.message = messageOf(connected, "Connecting to the member API server")
    return hs
  end
  -- The member is lost: it cannot be reached (Unknown, Unreachable; a
  -- healthy member is reported lost only after several failed probes), or
  -- it answers but not ok (False: Unhealthy, Redirected,
  -- MemberResponseTooLarge). The snapshots are stale; the operator retries.
  if (connected.status == "Unknown" and connected.reason == "Unreachable") or connected.status == "False" then
    hs.status = "Degraded"
    hs.message = messageOf(connected, connected.reason)
    return hs
  end
end

-- Anything else on the way to Ready, e.g. the initial node list being
-- mirrored (Synced=False, reason Syncing).
hs.status = "Progressing"
hs.message = messageOf(ready, "Waiting for the ManagedCluster to become Ready")
return hs
