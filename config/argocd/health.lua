-- Argo CD health check for Mizzen's MeshInstall (install.mizzen.dev/v1alpha1).
--
-- Argo CD sets the global `obj` to the live MeshInstall and shows the table
-- this script returns. The Mizzen operator reports three kstatus conditions:
--
--   Ready        True once every enabled component of the current
--                generation is healthy.
--   Reconciling  True while the operator works: components starting, a
--                transient error being retried, an uninstall in progress.
--   Stalled      True when the operator cannot go on until the spec (or a
--                conflicting MeshInstall) changes.
--
-- Healthy      Ready is True for the current generation (metadata.generation
--              equals status.observedGeneration and Ready's
--              observedGeneration).
-- Progressing  no status yet; a spec change the operator has not handled
--              yet; Reconciling is True; the MeshInstall is being deleted.
-- Degraded     Stalled is True, or Ready is False with a failure reason.
--
-- The message is the message of the condition that decided.
--
-- The script uses only the base library, which Argo CD always opens, so it
-- needs no resource.customizations.useOpenLibs setting. It never raises an
-- error, whatever is missing from the object.
--
-- Keep config/argocd/argocd-cm-patch.yaml identical (test/argocd checks it).

-- What Ready=False means, by reason. Every reason the operator writes is
-- listed; a reason missing here counts as a failure.
local readyFalse = {
  -- Still working: the operator will get there without help.
  ComponentsProgressing = "Progressing", -- applied; workloads not available yet
  Progressing = "Progressing",
  Uninstalling = "Progressing",          -- deleted; installed objects still going
  RetryingAfterFailure = "Progressing",  -- a Reconciling reason, listed for completeness
  -- Failures: a human has to look.
  ComponentsDegraded = "Degraded",       -- a component failed (e.g. a Deployment's progress deadline)
  InvalidSpec = "Degraded",
  UnsupportedVersion = "Degraded",       -- spec.version this operator cannot install
  RevisionConflict = "Degraded",         -- another MeshInstall installs this revision
  ObjectConflict = "Degraded",           -- another MeshInstall manages an object of this one
  RenderFailed = "Degraded",             -- the charts refused the spec (bad values)
  ApplyFailed = "Degraded",
  PruneFailed = "Degraded",
  ReconciliationFailed = "Degraded",
  -- Reasons of Ready=True; on Ready=False they would make no sense.
  InstallSucceeded = "Degraded",
  NothingToInstall = "Degraded",
}

local function field(t, key)
  if type(t) == "table" then
    return t[key]
  end
  return nil
end

local function number(v)
  if type(v) == "number" then
    return v
  end
  return nil
end

local function text(v, fallback)
  if type(v) == "string" and v ~= "" then
    return v
  end
  return fallback
end

local function health()
  local metadata = field(obj, "metadata")
  local status = field(obj, "status")
  local generation = number(field(metadata, "generation"))
  local observed = number(field(status, "observedGeneration"))

  local conditions = {}
  local found = false
  local list = field(status, "conditions")
  if type(list) == "table" then
    for _, c in ipairs(list) do
      if type(c) == "table" and type(c.type) == "string" then
        conditions[c.type] = c
        found = true
      end
    end
  end
  local ready, reconciling, stalled = conditions["Ready"], conditions["Reconciling"], conditions["Stalled"]

  local function isTrue(c)
    return c ~= nil and c.status == "True"
  end
  -- current says whether a condition was written for the current generation.
  local function current(c)
    return generation == nil or number(field(c, "observedGeneration")) == generation
  end
  local function result(s, c, fallback)
    local reason = text(field(c, "reason"), nil)
    if reason ~= nil then
      fallback = reason
    end
    return { status = s, message = text(field(c, "message"), fallback) }
  end

  -- Deleted: the operator removes what it installed, then lets go. (Argo CD
  -- itself reports objects being deleted as Progressing without asking.)
  if field(metadata, "deletionTimestamp") ~= nil then
    if isTrue(reconciling) then
      return result("Progressing", reconciling, "uninstalling")
    end
    return { status = "Progressing", message = "uninstalling" }
  end

  if not found then
    return { status = "Progressing", message = "waiting for the Mizzen operator to report the MeshInstall's status" }
  end

  -- The operator judged the current spec and cannot go on.
  if isTrue(stalled) and current(stalled) then
    return result("Degraded", stalled, "stalled")
  end

  -- The spec changed since the status was written.
  if generation ~= nil and (observed == nil or observed < generation) then
    if isTrue(reconciling) and current(reconciling) then
      return result("Progressing", reconciling, "reconciling")
    end
    return {
      status = "Progressing",
      message = "waiting for the Mizzen operator to handle generation " .. generation ..
        " (the status describes generation " .. (observed or 0) .. ")",
    }
  end

  if isTrue(stalled) then
    return result("Degraded", stalled, "stalled")
  end
  if isTrue(reconciling) then
    return result("Progressing", reconciling, "reconciling")
  end

  if ready ~= nil and ready.status == "True" then
    if current(ready) and observed == generation then
      return result("Healthy", ready, "ready")
    end
    return { status = "Progressing", message = "waiting for the Mizzen operator to report on generation " .. (generation or 0) }
  end
  if ready ~= nil and ready.status == "False" then
    local class = readyFalse[text(ready.reason, "")]
    if class == "Progressing" then
      return result("Progressing", ready, "not ready")
    end
    return result("Degraded", ready, "not ready")
  end
  return result("Progressing", ready, "waiting for the Mizzen operator to report readiness")
end

return health()
