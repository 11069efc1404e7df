// The nodemirror UI: clusters and nodes of every member cluster, live.
import { Stream } from "./stream.js";
import * as fmt from "./format.js";

const PAGE_SIZE = 100;
const FLASH_MS = 1600;
const $ = (id) => document.getElementById(id);

const state = {
  nodes: new Map(),    // namespace/name → NodeSnapshot
  clusters: new Map(), // namespace/name → ManagedCluster
  changed: new Map(),  // namespace/name → time of the last live change
  expanded: new Set(),
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
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const start = state.page * PAGE_SIZE;
  const now = Date.now();
  const out = [];
  for (const r of rows.slice(start, start + PAGE_SIZE)) {
    const flash = now - (state.changed.get(r.key) || 0) < FLASH_MS;
    const tr = el("tr", { class: "row" + (flash ? " flash" : ""), "data-key": r.key, "data-node": r.node, "data-cluster": r.cluster,
      tabindex: "0", "aria-expanded": String(state.expanded.has(r.key)) },
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
  return el("tr", { class: "details" }, el("td", { class: "detail", colspan: "10" },
    el("div", { class: "detail" }, el("strong", { text: "Labels" }), labels, el("strong", { text: "Conditions" }), conds,
    r.taints.length ? el("strong", { text: "Taints" }) : null, r.taints.length ? taints : null, el("strong", { text: "System" }), sys)));
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
  notice("");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  stream = new Stream({
    url: `${scheme}//${location.host}/api/v1/watch`, token,
    onState: setConn,
    onReset: (id) => (id === "nodes" ? state.nodes : state.clusters).clear(),
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
      const map = id === "nodes" ? state.nodes : state.clusters;
      const key = keyOf(obj);
      if (type === "DELETED") { map.delete(key); state.expanded.delete(key); } else map.set(key, obj);
      if (id === "nodes" && state.live) state.changed.set(key, Date.now());
      render();
    },
  });
  stream.subscribe("nodes", { kind: "NodeSnapshot", namespace: ns });
  stream.subscribe("clusters", { kind: "ManagedCluster", namespace: ns });
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
$("rows").addEventListener("click", (e) => toggle(e.target.closest("tr.row")));
$("rows").addEventListener("keydown", (e) => { if (e.key === "Enter") toggle(e.target.closest("tr.row")); });
// Ages move on, highlights fade: refresh now and then without data changes.
setInterval(render, 5000);

boot();
