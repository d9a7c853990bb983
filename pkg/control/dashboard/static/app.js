// The hms-node dashboard: renders api/overview as it streams in over
// Server-Sent Events (api/events), and one service's calls (api/tap).
// Every value from the mesh goes into the page as text, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);

// h builds an element: h("td", {class: "x"}, "text", child...).
function h(tag, attrs, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null && v !== false) e.setAttribute(k, String(v));
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fillTable(sel, rows, empty) {
  const body = $(sel + " tbody");
  const cols = $(sel + " thead tr").children.length;
  body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", {class: "empty", colspan: cols}, empty))]));
}

const fmt = {
  rps: (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1)),
  pct: (v) => (v * 100).toFixed(v > 0 && v < 0.1 ? 1 : 0) + "%",
  ms: (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + " ms",
  left(sec) {
    if (sec <= 0) return "expired";
    const d = Math.floor(sec / 86400), hr = Math.floor(sec / 3600) % 24, m = Math.floor(sec / 60) % 60;
    if (d > 0) return `in ${d}d ${hr}h`;
    if (hr > 0) return `in ${hr}h ${m}m`;
    return m > 0 ? `in ${m}m ${sec % 60}s` : `in ${sec}s`;
  },
  time: (iso) => new Date(iso).toLocaleTimeString(undefined, {hour12: false}),
  clock: (iso) => new Date(iso).toLocaleTimeString(undefined,
    {hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3}),
};

// health of a service from its instances.
function health(s) {
  if (!s) return "unknown";
  if (s.instances.length === 0) return "idle";
  if (s.healthy === s.instances.length) return "ok";
  return s.healthy === 0 ? "failing" : "degraded";
}

function renderServices(o) {
  fillTable("#services", o.services.map((s) => h("tr", {"data-service": s.id, class: "health-" + health(s)},
    h("td", {}, s.id, s.version ? ` (${s.version})` : ""),
    h("td", {class: "vip"}, s.vip || "—"),
    h("td", {}, s.ports.join(", ")),
    h("td", {}, s.protocol),
    h("td", {class: "instances"}, ...(s.instances.length ? s.instances.map((i) =>
      h("span", {class: "inst " + (i.healthy ? "healthy" : "unhealthy"), title: i.healthy ? "healthy" : "unhealthy"},
        `${i.ip}:${i.port} on ${i.node}`)) : ["none"])))), "no services: hms-node apply -f FILE registers some");
}

function renderEdges(o) {
  fillTable("#edges", o.edges.map((e) => h("tr", {"data-edge": e.source + "->" + e.destination, "data-state": e.state},
    h("td", {}, e.source), h("td", {}, e.destination), h("td", {}, fmt.rps(e.rps)),
    h("td", {}, `${e.errors} (${fmt.pct(e.error_rate)})`), h("td", {}, fmt.ms(e.p99_ms)),
    h("td", {class: "state " + e.state}, e.state + (e.circuit ? `, circuit ${e.circuit}` : "")))),
  "no calls in the last window");
}

// COL is the distance between columns: room for an edge's label.
const COL = 420;

// layout places services in columns by call depth: callers left, callees
// right, services without traffic in a last column.
function layout(o) {
  const ids = new Set(o.services.map((s) => s.id));
  for (const e of o.edges) { ids.add(e.source); ids.add(e.destination); }
  const linked = new Set(o.edges.flatMap((e) => [e.source, e.destination]));
  const depth = new Map([...linked].map((id) => [id, 0]));
  for (let i = 0; i < linked.size; i++) { // longest path, bounded: cycles stop growing
    let moved = false;
    for (const e of o.edges) {
      if (e.source !== e.destination && depth.get(e.destination) < depth.get(e.source) + 1 && depth.get(e.source) + 1 < linked.size) {
        depth.set(e.destination, depth.get(e.source) + 1);
        moved = true;
      }
    }
    if (!moved) break;
  }
  const maxDepth = Math.max(-1, ...depth.values());
  const cols = [];
  for (const id of [...ids].sort()) {
    const c = linked.has(id) ? depth.get(id) : maxDepth + 1;
    (cols[c] = cols[c] || []).push(id);
  }
  const pos = new Map();
  cols.forEach((col, c) => (col || []).forEach((id, r) => pos.set(id, {x: 110 + c * COL, y: 50 + r * 80})));
  const width = Math.max(640, 220 + (cols.length - 1) * COL);
  const height = Math.max(120, 20 + Math.max(1, ...cols.map((c) => (c || []).length)) * 80);
  return {pos, width, height};
}

function renderGraph(o) {
  const svg = $("#graph");
  const {pos, width, height} = layout(o);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const defs = h("svg:defs", {}, ...["ok", "degraded", "failing", "open"].map((s) =>
    h("svg:marker", {id: "arrow-" + s, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 10, markerHeight: 10, markerUnits: "userSpaceOnUse", orient: "auto"},
      h("svg:path", {d: "M0,0 L10,5 L0,10 z", class: "arrow-" + s}))));
  const parts = [defs];
  const byID = new Map(o.services.map((s) => [s.id, s]));
  const maxRPS = Math.max(1, ...o.edges.map((e) => e.rps));
  for (const e of o.edges) {
    const a = pos.get(e.source), b = pos.get(e.destination);
    const open = e.circuit === "open";
    let d, lx, ly, anchor = "middle";
    if (e.source === e.destination) {
      d = `M${a.x - 20},${a.y - 20} C${a.x - 40},${a.y - 70} ${a.x + 40},${a.y - 70} ${a.x + 20},${a.y - 20}`;
      lx = a.x; ly = a.y - 58;
    } else {
      const back = b.x <= a.x;
      const x1 = a.x + (back ? -90 : 90), x2 = b.x + (back ? 90 : -90), bend = back ? 60 : 0;
      d = `M${x1},${a.y} C${(x1 + x2) / 2},${a.y + bend} ${(x1 + x2) / 2},${b.y + bend} ${x2},${b.y}`;
      lx = (x1 + x2) / 2; ly = (a.y + b.y) / 2 + bend - 6;
      if (!back && b.y !== a.y) { // beside the curve's middle, on the side it leaves free
        anchor = "start"; lx += 10; ly = (a.y + b.y) / 2 + (b.y > a.y ? -4 : 14);
      }
    }
    const label = `${fmt.rps(e.rps)} req/s · ${fmt.pct(e.error_rate)} err · p99 ${fmt.ms(e.p99_ms)}`;
    parts.push(h("svg:g", {class: `edge state-${e.state}` + (open ? " circuit-open" : ""), "data-edge": e.source + "->" + e.destination, "data-state": e.state},
      h("svg:title", {}, `${e.source} → ${e.destination}: ${e.requests} requests, ${e.errors} errors in ${o.window_seconds}s` + (e.circuit ? `; circuit ${e.circuit}` : "")),
      h("svg:path", {d, "stroke-width": (1.5 + 4 * e.rps / maxRPS).toFixed(1), "marker-end": `url(#arrow-${open ? "open" : e.state})`}),
      h("svg:text", {x: lx, y: ly, "text-anchor": anchor}, label + (open ? " · circuit open" : ""))));
  }
  for (const [id, p] of pos) {
    const s = byID.get(id);
    const sub = s ? `${s.healthy}/${s.instances.length} healthy` : "not in the registry";
    parts.push(h("svg:g", {class: "svc health-" + health(s), "data-node": id},
      h("svg:rect", {x: p.x - 90, y: p.y - 20, width: 180, height: 40}),
      h("svg:text", {x: p.x, y: p.y - 3}, id),
      h("svg:text", {x: p.x, y: p.y + 12, class: "sub"}, sub)));
  }
  if (pos.size === 0) parts.push(h("svg:text", {x: 20, y: 60, class: "none"}, "no services yet"));
  svg.replaceChildren(...parts);
  $("#window-note").textContent = `(last ${o.window_seconds}s of every reporting agent)`;
}

function renderTables(o) {
  fillTable("#circuits", o.circuits.map((c) => h("tr", {"data-circuit": c.destination},
    h("td", {}, c.destination), h("td", {}, c.node), h("td", {class: "state " + c.state}, c.state))), "every circuit is closed");
  fillTable("#rate-limits", o.rate_limits.map((l) => h("tr", {"data-limit": l.service},
    h("td", {}, l.service), h("td", {}, `${l.rps} req/s`), h("td", {}, l.source === "limit" ? "hms-node limit set" : "manifest"))),
  "no rate limits");
  fillTable("#certs", o.certs.map((c) => h("tr", {"data-identity": c.identity},
    h("td", {}, c.identity), h("td", {}, c.node),
    h("td", {class: "state " + c.state, title: c.expiry}, fmt.left(c.seconds_left)))), "no agent reported certificates yet");
  fillTable("#nodes", o.nodes.map((n) => h("tr", {"data-node": n.name},
    h("td", {}, n.name), h("td", {}, n.address || "—"), h("td", {}, n.agent_version || "—"),
    h("td", {class: "state " + (n.reporting ? "ok" : "degraded")}, n.reporting ? "reporting" : "silent"))), "no nodes joined");
}

function renderErrors(o) {
  const b = $("#errors");
  b.hidden = o.errors.length === 0;
  b.replaceChildren(...o.errors.map((e) => h("div", {}, e)));
}

function renderTapChoices(o) {
  const sel = $("#tap-service");
  const keep = sel.value;
  const ids = o.services.map((s) => s.id);
  if (ids.join() === [...sel.options].map((x) => x.value).join()) return;
  sel.replaceChildren(...ids.map((id) => h("option", {value: id}, id)));
  if (ids.includes(keep)) sel.value = keep;
}

let updates = 0;
function render(o) {
  renderErrors(o);
  renderGraph(o);
  renderEdges(o);
  renderServices(o);
  renderTables(o);
  renderTapChoices(o);
  updates++;
  document.body.dataset.updates = updates;
  const live = $("#live");
  live.className = "live ok";
  live.textContent = `live · updated ${fmt.time(o.generated_at)} · registry revision ${o.revision}`;
}

function stale(why) {
  const live = $("#live");
  live.className = "live stale";
  live.textContent = why;
}

// connect streams the overview; without EventSource it polls.
function connect() {
  if (!window.EventSource) {
    const poll = () => fetch("api/overview", {cache: "no-store"}).then((r) => r.json()).then(render)
      .catch((e) => stale("cannot reach the control plane: " + e));
    poll();
    setInterval(poll, 2000);
    return;
  }
  const es = new EventSource("api/events");
  es.addEventListener("overview", (ev) => render(JSON.parse(ev.data)));
  es.onerror = () => stale("control plane unreachable; reconnecting…");
}

// The tap view: one EventSource per tapped service.
const tap = {es: null, seen: new Set()};

function tapRow(c) {
  const cls = c.status >= 500 ? "status-5xx" : c.status >= 400 ? "status-4xx" : "";
  return h("tr", {class: "fresh", "data-status": c.status},
    h("td", {title: c.time}, fmt.clock(c.time)), h("td", {}, c.reporter + " @ " + c.node),
    h("td", {}, c.source || "—"), h("td", {}, `${c.method} ${c.path}`),
    h("td", {class: cls}, c.status), h("td", {}, fmt.ms(c.latency_ms)), h("td", {}, c.flags || "-"),
    h("td", {}, c.retries), h("td", {}, c.mtls ? "yes" : "no"));
}

function stopTap(msg) {
  if (tap.es) tap.es.close();
  tap.es = null;
  $("#tap-start").disabled = false;
  $("#tap-stop").disabled = true;
  if (msg) $("#tap-status").textContent = msg;
}

function startTap(svc) {
  stopTap();
  tap.seen.clear();
  $("#tap tbody").replaceChildren();
  $("#tap-status").textContent = `connecting to ${svc}…`;
  $("#tap-start").disabled = true;
  $("#tap-stop").disabled = false;
  const es = new EventSource("api/tap?service=" + encodeURIComponent(svc) + "&last=50");
  tap.es = es;
  es.addEventListener("status", (ev) => {
    const st = JSON.parse(ev.data);
    if (st.state === "following") $("#tap-status").textContent = `following ${svc}`;
    else stopTap(st.state === "error" ? "tap failed: " + st.message : "tap ended");
  });
  es.addEventListener("call", (ev) => {
    const c = JSON.parse(ev.data);
    const key = [c.time, c.reporter, c.node, c.trace_id, c.path].join("|"); // a reconnect repeats the recent calls
    if (tap.seen.has(key)) return;
    tap.seen.add(key);
    const body = $("#tap tbody");
    for (const r of body.querySelectorAll("tr.fresh")) r.classList.remove("fresh");
    body.prepend(tapRow(c));
    while (body.children.length > 200) body.lastChild.remove();
  });
  es.onerror = () => { if (tap.es === es) $("#tap-status").textContent = `reconnecting to ${svc}…`; };
}

document.addEventListener("DOMContentLoaded", () => {
  $("#tap-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if ($("#tap-service").value) startTap($("#tap-service").value);
  });
  $("#tap-stop").addEventListener("click", () => stopTap("stopped"));
  connect();
});
