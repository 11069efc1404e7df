// NodeOperations: what the actions bar creates and the operations panel
// shows. The sidecar creates them with the user's own token.

// plan turns selected rows into NodeOperation specs: one per namespace,
// clusters by names × nodes by names. Clusters whose selected node names
// differ get operations of their own, so that the cross product never
// reaches a node nobody selected.
export function plan(rows) {
  const byNs = new Map(); // namespace → cluster → Set(node)
  for (const r of rows) {
    if (!byNs.has(r.namespace)) byNs.set(r.namespace, new Map());
    const clusters = byNs.get(r.namespace);
    if (!clusters.has(r.cluster)) clusters.set(r.cluster, new Set());
    clusters.get(r.cluster).add(r.node);
  }
  const out = [];
  for (const [namespace, clusters] of byNs) {
    const groups = new Map(); // sorted node names → clusters
    for (const [cluster, nodes] of clusters) {
      const key = JSON.stringify([...nodes].sort());
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(cluster);
    }
    for (const [key, cs] of groups) out.push({ namespace, clusters: cs.sort(), nodes: JSON.parse(key) });
  }
  return out;
}

// perCluster counts the selected nodes per namespace/cluster.
export function perCluster(rows) {
  const counts = new Map();
  for (const r of rows) {
    const k = `${r.namespace}/${r.cluster}`;
    counts.set(k, (counts.get(k) || 0) + 1);
  }
  return [...counts].sort();
}

// parseLabels reads "k=v, k2=v2".
export function parseLabels(text) {
  const labels = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const i = part.indexOf("=");
    if (i <= 0) throw new Error(`"${part}" is not key=value`);
    labels[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  if (!Object.keys(labels).length) throw new Error("give at least one key=value");
  return labels;
}

// parseTaints reads "key=value:Effect, key2:Effect".
export function parseTaints(text) {
  const taints = [];
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^([^=:]+)(?:=([^:]*))?:(NoSchedule|PreferNoSchedule|NoExecute)$/.exec(part);
    if (!m) throw new Error(`"${part}" is not key[=value]:NoSchedule|PreferNoSchedule|NoExecute`);
    taints.push(m[2] ? { key: m[1].trim(), value: m[2].trim(), effect: m[3] } : { key: m[1].trim(), effect: m[3] });
  }
  if (!taints.length) throw new Error("give at least one taint");
  return taints;
}

// body is the NodeOperation to create for one planned group.
export function body(group, action, params) {
  const spec = { action, clusters: { names: group.clusters }, nodes: { names: group.nodes }, ...params };
  return {
    apiVersion: "fleet.nodemirror.io/v1alpha1", kind: "NodeOperation",
    metadata: { generateName: `${action}-`, namespace: group.namespace },
    spec,
  };
}

// create posts one NodeOperation; it resolves to the created object or
// throws an Error carrying the hub's Status message.
export async function create(op, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(`/api/v1/namespaces/${encodeURIComponent(op.metadata.namespace)}/nodeoperations`, {
    method: "POST", headers, body: JSON.stringify(op),
  });
  const answer = await r.json().catch(() => ({}));
  if (r.status !== 201) {
    throw new Error(`${answer.message || "the sidecar answered " + r.status} (${r.status}${answer.reason ? " " + answer.reason : ""})`);
  }
  return answer;
}

// access asks whether the user may create NodeOperations in namespace.
export async function access(namespace, token) {
  const r = await fetch(`/api/v1/namespaces/${encodeURIComponent(namespace)}/access`, {
    headers: token ? { Authorization: "Bearer " + token } : {},
  });
  const a = await r.json().catch(() => ({}));
  if (r.status !== 200) return { allowed: false, reason: a.message || `the sidecar answered ${r.status}` };
  return a.createNodeOperations || { allowed: false, reason: "no answer" };
}

// summary is one line about an operation's progress.
export function summary(op) {
  const c = op.status?.counts;
  if (!c || !c.total) return op.status?.targets || "waiting for the operator";
  const parts = [`${c.succeeded}/${c.total} succeeded`];
  for (const k of ["failed", "running", "pending", "skipped"]) if (c[k]) parts.push(`${c[k]} ${k}`);
  return parts.join(" · ");
}

// describe is what an operation does, for people.
export function describe(op) {
  const s = op.spec || {};
  const nodes = s.nodes?.names ? `${s.nodes.names.length} node${s.nodes.names.length === 1 ? "" : "s"}` : "nodes by selector";
  const clusters = s.clusters?.names ? s.clusters.names.join(", ") : "clusters by selector";
  let what = s.action;
  if (s.labels) what += " " + Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(",");
  if (s.taints) what += " " + s.taints.map((t) => `${t.key}${t.value ? "=" + t.value : ""}:${t.effect}`).join(",");
  return `${what}${s.dryRun ? " (dry run)" : ""} · ${nodes} in ${clusters}`;
}
