// The nodemirror UI: clusters and nodes of every member cluster, live,
// and NodeOperations on the selected nodes.
import { Stream } from "./stream.js";
import * as fmt from "./format.js";
import * as ops from "./ops.js";

const PAGE_SIZE = 100;
const FLASH_MS = 1600;
const MAX_OPS_SHOWN = 20;
const MAX_RESULTS_SHOWN = 50;
const ACCESS_TTL_MS = 30000;
const $ = (id) => document.getElementById(id);

const state = {
  nodes: new Map(),    // namespace/name → NodeSnapshot
  clusters: new Map(), // namespace/name → ManagedCluster
  changed: new Map(),  // namespace/name → time of the last live change
  expanded: new Set(),
  selected: new Set(), // namespace/name of the selected NodeSnapshots
  ops: new Map(),      // namespace/name → NodeOperation
  access: new Map(),   // namespace → {allowed, reason, at, pending}
  token: "",
  scope: "",
  filteredKeys: [],
  sort: { key: "cluster", dir: 1 },
  page: 0,
  live: false,
};

const keyOf = (o) => `${o.metadata.namespace}/${o.metadata.name}`;

// --- rows: what a node looks like in the table ---------------------------

// The status, roles, version and address cells are the snapshot's
// status.columns: the strings `kubectl get nodes -o wide` prints.
function row(s) {
  const st = s.status || {};
  const cols = st.columns || {};
  const summary = cols.status || "Unknown";
  return {
    key: keyOf(s), snap: s, cols,
    cluster: s.spec.clusterName, node: s.spec.nodeName, namespace: s.metadata.namespace,
    status: summary.split(",")[0], cordoned: !!st.unschedulable, summary,
    roles: cols.roles || "<none>",
    version: cols.version || "",
    cpuAlloc: fmt.quantity(st.allocatable?.cpu), cpuCap: fmt.quantity(st.capacity?.cpu),
    memAlloc: fmt.quantity(st.allocatable?.memory), memCap: fmt.quantity(st.capacity?.memory),
    taints: (st.taints || []).map((t) => `${t.key}${t.value ? "=" + t.value : ""}:${t.effect}`),
    ip: cols.internalIP || "<none>", created: st.nodeCreationTimestamp,
    labels: st.labels || {},
  };
}

const sorters = {
  cluster: (r) => r.cluster + "/" + r.node, node: (r) => r.node, status: (r) => r.summary,
  roles: (r) => r.roles, version: (r) => r.version, cpu: (r) => r.cpuAlloc, memory: (r) => r.memAlloc,
  taints: (r) => r.taints.length, ip: (r) => r.ip.split(".").map((p) => p.padStart(3, "0")).join("."),
  age: (r) => -Date.parse(r.created || 0),
};

function filtered() {
  const f = {
    cluster: $("f-cluster").value, status: $("f-status").value, role: $("f-role").value,
    sched: $("f-sched").value, text: $("f-text").value.trim().toLowerCase(),
  };
  const out = [];
  for (const s of state.nodes.values()) {
    const r = row(s);
    if (f.cluster && `${r.namespace}/${r.cluster}` !== f.cluster) continue;
    if (f.status && r.status !== f.status) continue;
    if (f.role && !r.roles.split(",").includes(f.role)) continue;
    if (f.sched === "yes" && r.cordoned) continue;
    if (f.sched === "no" && !r.cordoned) continue;
    if (f.text) {
      const hay = [r.node, r.cluster, r.ip, ...Object.entries(r.labels).map(([k, v]) => `${k}=${v}`)].join(" ").toLowerCase();
      if (!hay.includes(f.text)) continue;
    }
    out.push(r);
  }
  const by = sorters[state.sort.key];
  out.sort((a, b) => {
    const x = by(a), y = by(b);
    return (x < y ? -1 : x > y ? 1 : a.key < b.key ? -1 : 1) * state.sort.dir;
  });
  return out;
}

// --- rendering, batched to one pass per animation frame -----------------

let scheduled = false;
function render() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    renderClusters();
    renderNodes();
    renderActions();
    renderOps();
  });
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function condition(o, type) {
  return (o.status?.conditions || []).find((c) => c.type === type);
}

function renderClusters() {
  const list = $("clusters");
  const items = [...state.clusters.values()].sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
  list.replaceChildren(...items.map((mc) => {
    const ready = condition(mc, "Ready"), conn = condition(mc, "Connected");
    const stale = conn && conn.status !== "True";
    const badge = (c, label) => el("span", {
      class: "badge " + (c?.status === "True" ? "ok" : c?.status === "False" ? "bad" : "warn"),
      title: c ? `${c.reason}: ${c.message}` : "not reported yet",
      text: `${label} ${c?.status ?? "?"}`,
    });
    const n = mc.status?.nodes || {};
    return el("li", { class: stale ? "stale" : "", "data-cluster": mc.metadata.name },
      el("div", {}, el("span", { class: "name", text: mc.metadata.name }), badge(ready, "Ready"), badge(conn, "Connected"),
        stale ? el("span", { class: "badge warn", text: "stale", title: "unreachable: nodes shown as last seen" }) : null),
      el("div", { class: "meta", text: `${mc.metadata.namespace} · ${mc.status?.kubernetesVersion || "version unknown"} · ${n.ready ?? 0}/${n.total ?? 0} nodes ready${n.unschedulable ? ` · ${n.unschedulable} cordoned` : ""}` }));
  }));
  $("cluster-count").textContent = `(${items.length})`;

  // Keep the cluster and role filters in step with what exists.
  syncOptions($("f-cluster"), items.map((mc) => [keyOf(mc), mc.metadata.name]));
  const roles = new Set();
  for (const s of state.nodes.values()) for (const r of s.status?.roles || []) roles.add(r);
  syncOptions($("f-role"), [...roles].sort().map((r) => [r, r]));
}

function syncOptions(select, pairs) {
  const want = JSON.stringify(pairs);
  if (select.dataset.options === want) return;
  const value = select.value;
  select.replaceChildren(el("option", { value: "", text: "all" }), ...pairs.map(([v, t]) => el("option", { value: v, text: t })));
  select.value = value;
  select.dataset.options = want;
}

function renderNodes() {
  const rows = filtered();
  state.filteredKeys = rows.map((r) => r.key);
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const start = state.page * PAGE_SIZE;
  const now = Date.now();
  const out = [];
  for (const r of rows.slice(start, start + PAGE_SIZE)) {
    const flash = now - (state.changed.get(r.key) || 0) < FLASH_MS;
    const selected = state.selected.has(r.key);
    const box = el("input", { type: "checkbox", class: "select", "aria-label": `Select ${r.cluster}/${r.node}` });
    box.checked = selected;
    const tr = el("tr", { class: "row" + (flash ? " flash" : "") + (selected ? " selected" : ""), "data-key": r.key, "data-node": r.node, "data-cluster": r.cluster,
      tabindex: "0", "aria-expanded": String(state.expanded.has(r.key)) },
      el("td", { class: "sel" }, box),
      el("td", { text: r.cluster }),
      el("td", { text: r.node }),
      el("td", {}, el("span", { class: "st-" + r.status, text: r.status }), r.summary.includes(",") ? el("span", { class: "cordon", text: r.summary.slice(r.status.length) }) : null),
      el("td", { text: r.roles }),
      el("td", { text: r.version }),
      el("td", { text: `${fmt.cpu(r.snap.status?.allocatable?.cpu)} / ${fmt.cpu(r.snap.status?.capacity?.cpu)}` }),
      el("td", { text: `${fmt.memory(r.snap.status?.allocatable?.memory)} / ${fmt.memory(r.snap.status?.capacity?.memory)}` }),
      el("td", { class: "taints", text: r.taints.length ? r.taints.map(shortTaint).join(" ") : "–", title: r.taints.join("\n") }),
      el("td", { text: r.ip }),
      el("td", { text: fmt.age(r.created, now) }));
    out.push(tr);
    if (state.expanded.has(r.key)) out.push(detailRow(r));
  }
  $("rows").replaceChildren(...out);
  const total = state.nodes.size;
  $("node-count").textContent = rows.length === total ? `(${total})` : `(${rows.length} of ${total})`;
  $("page").textContent = rows.length ? `${start + 1}–${Math.min(start + PAGE_SIZE, rows.length)} of ${rows.length}` : "no nodes match";
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page >= pages - 1;
  const chosen = rows.filter((r) => state.selected.has(r.key)).length;
  $("select-all").checked = rows.length > 0 && chosen === rows.length;
  $("select-all").indeterminate = chosen > 0 && chosen < rows.length;
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.setAttribute("aria-sort", th.dataset.sort === state.sort.key ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

// shortTaint drops the key's domain: "control-plane:NoSchedule".
const shortTaint = (t) => t.replace(/^[^/=:]*\//, "");

function detailRow(r) {
  const labels = el("dl", {}, ...Object.entries(r.labels).sort().flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v || '""' })]));
  const conds = el("dl", {}, ...(r.snap.status?.conditions || []).flatMap((c) => [
    el("dt", { text: c.type }), el("dd", { text: `${c.status} · ${c.reason || ""} · ${c.message || ""} (since ${c.lastTransitionTime || "?"})` })]));
  const taints = el("dl", {}, ...r.taints.flatMap((t, i) => [el("dt", { text: String(i + 1) }), el("dd", { text: t })]));
  const sys = el("dl", {}, ...[["external IP", "externalIP"], ["OS image", "osImage"], ["kernel", "kernelVersion"], ["container runtime", "containerRuntime"]]
    .flatMap(([label, k]) => [el("dt", { text: label }), el("dd", { text: r.cols[k] || "<unknown>" })]));
  return el("tr", { class: "details" }, el("td", { class: "detail", colspan: "11" },
    el("div", { class: "detail" }, el("strong", { text: "Labels" }), labels, el("strong", { text: "Conditions" }), conds,
    r.taints.length ? el("strong", { text: "Taints" }) : null, r.taints.length ? taints : null, el("strong", { text: "System" }), sys)));
}

// --- actions: NodeOperations on the selected nodes ----------------------

const mapOf = (id) => (id === "nodes" ? state.nodes : id === "ops" ? state.ops : state.clusters);

function selectedRows() {
  const out = [];
  for (const k of state.selected) {
    const s = state.nodes.get(k);
    if (s) out.push(row(s));
  }
  return out;
}

// accessFor answers from the cache and asks the sidecar again when the
// answer is missing or old; render runs again once it arrives.
function accessFor(ns) {
  const a = state.access.get(ns);
  if (!a || (!a.pending && Date.now() - a.at > ACCESS_TTL_MS)) {
    const entry = { ...(a || {}), pending: true };
    state.access.set(ns, entry);
    const token = state.token;
    ops.access(ns, token)
      .catch(() => ({ allowed: false, reason: "cannot reach the sidecar to check your access" }))
      .then((ans) => {
        if (state.token !== token) return;
        state.access.set(ns, { allowed: !!ans.allowed, reason: ans.reason || "", at: Date.now(), pending: false });
        render();
      });
    return entry;
  }
  return a;
}

// actionBlocker says why the actions cannot be used now, or "".
function actionBlocker(sel) {
  const namespaces = sel.length ? [...new Set(sel.map((r) => r.namespace))] : state.scope ? [state.scope] : [];
  for (const ns of namespaces.sort()) {
    const a = accessFor(ns);
    if (a.allowed === undefined) return "Checking whether you may create NodeOperations…";
    if (!a.allowed) return `You may not create NodeOperations in ${ns}: ${a.reason}`;
  }
  return sel.length ? "" : "Select nodes to act on.";
}

function renderActions() {
  const sel = selectedRows();
  const reason = actionBlocker(sel);
  $("selection").textContent = `${sel.length} selected`;
  for (const b of document.querySelectorAll("#actions button[data-action]")) {
    b.disabled = !!reason;
    b.title = reason || `${b.textContent.replace("…", "")} the ${sel.length} selected node${sel.length === 1 ? "" : "s"}`;
  }
  $("clear-selection").disabled = !sel.length;
  $("actions-reason").textContent = reason;
  $("actions").dataset.reason = reason;
}

const ACTION_NAMES = { cordon: "Cordon", uncordon: "Uncordon", drain: "Drain", label: "Label", taint: "Taint" };

let pending = null; // what the open dialog would create
function openConfirm(action) {
  const sel = selectedRows();
  if (!sel.length || actionBlocker(sel)) return;
  const groups = ops.plan(sel);
  pending = { action, groups };
  const namespaces = new Set(sel.map((r) => r.namespace));
  $("confirm-title").textContent = `${ACTION_NAMES[action]} ${sel.length} node${sel.length === 1 ? "" : "s"}?`;
  $("confirm-summary").textContent = `Creates ${groups.length} NodeOperation${groups.length === 1 ? "" : "s"} in ${[...namespaces].sort().join(", ")}, with your own hub token:`;
  $("confirm-clusters").replaceChildren(...ops.perCluster(sel).map(([k, n]) =>
    el("li", { "data-cluster": k, text: `${namespaces.size > 1 ? k : k.split("/")[1]}: ${n} node${n === 1 ? "" : "s"}` })));
  $("confirm-label").hidden = action !== "label";
  $("confirm-taint").hidden = action !== "taint";
  $("confirm-drain").hidden = action !== "drain";
  $("confirm-error").textContent = "";
  $("confirm-ok").disabled = false;
  $("confirm-ok").textContent = ACTION_NAMES[action];
  $("confirm").dataset.action = action;
  $("confirm").showModal();
}

function params(action) {
  const p = {};
  if (action === "label") p.labels = ops.parseLabels($("p-labels").value);
  if (action === "taint") p.taints = ops.parseTaints($("p-taints").value);
  if (action === "drain") {
    p.drain = { ignoreDaemonSets: $("p-ignore-ds").checked, deleteEmptyDirData: $("p-emptydir").checked, force: $("p-force").checked };
  }
  if ($("p-dry-run").checked) p.dryRun = true;
  return p;
}

async function confirmAction() {
  if (!pending) return;
  const { action, groups } = pending;
  let p;
  try {
    p = params(action);
  } catch (err) {
    $("confirm-error").textContent = err.message;
    return;
  }
  $("confirm-ok").disabled = true;
  $("confirm-error").textContent = "";
  while (groups.length) {
    try {
      const created = await ops.create(ops.body(groups[0], action, p), state.token);
      state.ops.set(keyOf(created), created);
      groups.shift(); // never created twice, should a later one fail
    } catch (err) {
      $("confirm-error").textContent = `The hub refused: ${err.message}`;
      $("confirm-ok").disabled = false;
      render();
      return;
    }
  }
  pending = null;
  $("confirm").close();
  state.selected.clear();
  render();
}

function renderOps() {
  const items = [...state.ops.values()].sort((a, b) =>
    (b.metadata.creationTimestamp || "").localeCompare(a.metadata.creationTimestamp || "") || keyOf(a).localeCompare(keyOf(b)));
  $("op-count").textContent = items.length ? `(${items.length})` : "";
  $("ops-empty").hidden = items.length > 0;
  $("operations").replaceChildren(...items.slice(0, MAX_OPS_SHOWN).map((op) => {
    const phase = op.status?.phase || "Pending";
    const results = op.status?.results || [];
    const more = results.length - MAX_RESULTS_SHOWN + (op.status?.omittedResults || 0);
    return el("li", { "data-op": op.metadata.name, "data-namespace": op.metadata.namespace, "data-phase": phase },
      el("div", {}, el("span", { class: "name", text: op.metadata.name }), el("span", { class: "phase ph-" + phase, text: phase })),
      el("div", { class: "meta", text: `${op.metadata.namespace} · ${ops.describe(op)}` }),
      el("div", { class: "counts", text: ops.summary(op) }),
      results.length ? el("ul", { class: "results" },
        ...results.slice(0, MAX_RESULTS_SHOWN).map((r) => el("li", { "data-node": r.node, "data-cluster": r.cluster },
          `${r.cluster}/${r.node} `, el("span", { class: "ph-" + r.phase, text: r.phase }),
          r.reason || r.message ? ` ${[r.reason, r.message].filter(Boolean).join(": ")}` : "")),
        more > 0 ? el("li", { text: `… and ${more} more` }) : null) : null);
  }));
}

// --- connection ----------------------------------------------------------

function setConn(s, seconds) {
  state.live = s === "live";
  const text = s === "reconnecting" && seconds ? `reconnecting in ${seconds}s` : s;
  $("conn").className = "conn conn-" + s;
  $("conn").dataset.state = s;
  $("conn-text").textContent = text;
}

function notice(msg) {
  $("notice").hidden = !msg;
  $("notice").textContent = msg || "";
}

let stream;
function start(token) {
  const ns = $("namespace").value.trim();
  sessionStorage.setItem("nodemirror.namespace", ns);
  stream?.close();
  state.nodes.clear(); state.clusters.clear(); state.changed.clear();
  state.selected.clear(); state.ops.clear(); state.access.clear();
  state.token = token;
  state.scope = ns;
  notice("");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  stream = new Stream({
    url: `${scheme}//${location.host}/api/v1/watch`, token,
    onState: setConn,
    onReset: (id) => mapOf(id).clear(),
    onError: (id, status) => notice(`${id || "request"}: ${status.message} (${status.code} ${status.reason})`),
    onUnauthorized: () => {
      sessionStorage.removeItem("nodemirror.token");
      $("app").hidden = true;
      $("auth").hidden = false;
      $("auth-error").textContent = "The hub no longer accepts your token. Sign in again.";
      setConn("offline");
      $("conn-text").textContent = "signed out";
    },
    onChange: (id, type, obj) => {
      const map = mapOf(id);
      const key = keyOf(obj);
      if (type === "DELETED") { map.delete(key); state.expanded.delete(key); state.selected.delete(key); } else map.set(key, obj);
      if (id === "nodes" && state.live) state.changed.set(key, Date.now());
      render();
    },
  });
  stream.subscribe("nodes", { kind: "NodeSnapshot", namespace: ns });
  stream.subscribe("clusters", { kind: "ManagedCluster", namespace: ns });
  stream.subscribe("ops", { kind: "NodeOperation", namespace: ns }, { optional: true });
  stream.connect();
  $("auth").hidden = true;
  $("app").hidden = false;
  render();
}

async function whoami(token) {
  const r = await fetch("/api/v1/whoami", { headers: token ? { Authorization: "Bearer " + token } : {} });
  return r.status;
}

async function boot() {
  $("namespace").value = sessionStorage.getItem("nodemirror.namespace") || "";
  const saved = sessionStorage.getItem("nodemirror.token") || "";
  try {
    if (await whoami(saved) === 200) return start(saved);
  } catch {
    setConn("offline");
  }
  $("auth").hidden = false;
  setConn("offline");
  $("conn-text").textContent = "signed out";
}

$("auth-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  const code = await whoami(token).catch(() => 0);
  if (code !== 200) {
    $("auth-error").textContent = code === 401 ? "The hub does not accept this token." : `The sidecar answered ${code || "nothing"}.`;
    return;
  }
  sessionStorage.setItem("nodemirror.token", token);
  $("auth-error").textContent = "";
  start(token);
});
$("scope").addEventListener("submit", (e) => {
  e.preventDefault();
  start(sessionStorage.getItem("nodemirror.token") || "");
});
$("filters").addEventListener("input", () => { state.page = 0; render(); });
$("filters").addEventListener("submit", (e) => e.preventDefault());
$("prev").addEventListener("click", () => { state.page--; render(); });
$("next").addEventListener("click", () => { state.page++; render(); });
for (const th of document.querySelectorAll("th[data-sort]")) {
  th.tabIndex = 0;
  const sort = () => {
    state.sort = { key: th.dataset.sort, dir: state.sort.key === th.dataset.sort ? -state.sort.dir : 1 };
    render();
  };
  th.addEventListener("click", sort);
  th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
}
const toggle = (tr) => {
  const key = tr?.dataset.key;
  if (!key) return;
  state.expanded.has(key) ? state.expanded.delete(key) : state.expanded.add(key);
  render();
};
$("rows").addEventListener("click", (e) => {
  const tr = e.target.closest("tr.row");
  if (!tr) return;
  if (e.target.closest("td.sel")) {
    // The checkbox cell selects; the rest of the row expands.
    state.selected.has(tr.dataset.key) ? state.selected.delete(tr.dataset.key) : state.selected.add(tr.dataset.key);
    render();
    return;
  }
  toggle(tr);
});
$("select-all").addEventListener("click", () => {
  // Every filtered row, on every page: all of them, or none if all were.
  const all = state.filteredKeys.length > 0 && state.filteredKeys.every((k) => state.selected.has(k));
  for (const k of state.filteredKeys) all ? state.selected.delete(k) : state.selected.add(k);
  render();
});
$("clear-selection").addEventListener("click", () => { state.selected.clear(); render(); });
for (const b of document.querySelectorAll("#actions button[data-action]")) {
  b.addEventListener("click", () => openConfirm(b.dataset.action));
}
$("confirm-cancel").addEventListener("click", () => $("confirm").close());
$("confirm-form").addEventListener("submit", (e) => { e.preventDefault(); confirmAction(); });
$("rows").addEventListener("keydown", (e) => { if (e.key === "Enter") toggle(e.target.closest("tr.row")); });
// Ages move on, highlights fade: refresh now and then without data changes.
setInterval(render, 5000);

boot();
