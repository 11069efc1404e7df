-- pause stops the operator watching the member cluster (spec.paused: true)
-- and keeps the NodeSnapshots as last seen; resume starts it again.
local actions = {}
local paused = obj.spec ~= nil and obj.spec.paused == true
actions["pause"] = {
  ["disabled"] = paused,
  ["iconClass"] = "fa fa-fw fa-pause-circle",
  ["displayName"] = "Pause mirroring"
}
actions["resume"] = {
  ["disabled"] = not paused,
  ["iconClass"] = "fa fa-fw fa-play-circle",
  ["displayName"] = "Resume mirroring"
}
return actions
