/* The Assets pages. The list refetches /assets whenever an asset event is announced (room
   "assets"), so a new event appears without a reload; the lineage page lays out producer DAG ->
   asset -> consumer DAG with dagre, as the DAG graph does. */
(function () {
  "use strict";
  const hf = window.hf;
  const table = document.getElementById("assets-table");
  const lineage = document.getElementById("lineage");
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    return n;
  }

  function runLink(e) {
    if (!e.source_run_id) return hf.el("span", { class: "tag" }, "posted by " + (e.created_by || "unknown"));
    const href = "/dags/" + hf.enc(e.source_dag_id) + "/runs/" + hf.enc(e.source_run_id);
    return hf.el("a", { href: href }, e.source_dag_id + " \u00b7 " + e.source_run_id);
  }

  function row(a) {
    const producers = a.producers.length
      ? a.producers.map(function (p) {
        return hf.el("div", null, hf.el("a", { href: "/dags/" + hf.enc(p.split(".")[0]) + "/graph" }, hf.el("code", null, p)));
      })
      : [hf.el("span", { class: "muted" }, "outside only")];
    const consumers = a.consumers.length
      ? a.consumers.map(function (c) { return hf.el("div", null, hf.el("a", { href: "/dags/" + hf.enc(c) + "/graph" }, c)); })
      : [hf.el("span", { class: "muted" }, "none")];
    const events = a.latest_events.length
      ? a.latest_events.map(function (e) {
        const parts = [hf.el("span", { class: "muted small" }, hf.fmtDate(e.timestamp)), " ", runLink(e)];
        if (e.extra && Object.keys(e.extra).length) parts.push(" ", hf.el("code", { class: "small" }, JSON.stringify(e.extra)));
        return hf.el("div", { class: "asset-event" }, ...parts);
      })
      : [hf.el("span", { class: "muted" }, "no events yet")];
    const first = [hf.el("code", null, a.uri)];
    if (a.name !== a.uri) first.push(hf.el("div", { class: "small muted" }, a.name));
    const tr = hf.el("tr", null, hf.el("td", null, ...first), hf.el("td", null, ...producers),
      hf.el("td", null, ...consumers), hf.el("td", { class: "asset-events" }, ...events));
    tr.dataset.asset = a.uri;
    return tr;
  }

  const refresh = hf.debounce(async function () {
    try {
      const data = await hf.api("/assets");
      document.getElementById("asset-count").textContent = String(data.assets.length);
      const body = table.tBodies[0];
      if (data.assets.length) body.replaceChildren.apply(body, data.assets.map(row));
    } catch (e) { /* retried on the next event */ }
  }, 150);

  function drawLineage() {
    const graph = JSON.parse(document.getElementById("lineage-data").textContent);
    if (!graph.nodes.length) {
      lineage.replaceChildren(hf.el("p", { class: "muted" }, "No DAG produces or consumes an asset yet."));
      return;
    }
    const g = new window.dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 60, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(function () { return {}; });
    for (const n of graph.nodes) g.setNode(n.id, { width: Math.max(90, n.label.length * 7.4 + 28), height: 34, info: n });
    for (const [from, to] of graph.edges) g.setEdge(from, to);
    window.dagre.layout(g);
    const size = g.graph();
    const canvas = svg("svg", { width: size.width + 16, height: size.height + 16, role: "img" });
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#98a2b3" }));
    defs.append(marker);
    canvas.append(defs);
    for (const e of g.edges()) {
      const pts = g.edge(e).points;
      canvas.append(svg("path", { d: "M" + pts.map(function (p) { return p.x + "," + p.y; }).join(" L"), class: "edge", "marker-end": "url(#arrow)" }));
    }
    for (const id of g.nodes()) {
      const box = g.node(id);
      const n = box.info;
      const node = svg("g", { class: "node lineage-" + n.kind, transform: "translate(" + (box.x - box.width / 2) + "," + (box.y - box.height / 2) + ")" });
      node.dataset.node = id;
      const rect = svg("rect", { width: box.width, height: box.height, rx: n.kind === "asset" ? 17 : 4 });
      const label = svg("text", { x: box.width / 2, y: 21, "text-anchor": "middle" });
      label.textContent = n.label;
      const title = svg("title");
      title.textContent = n.kind === "asset" ? "asset " + n.uri : "DAG " + n.label;
      node.append(rect, label, title);
      if (n.kind === "dag") {
        node.setAttribute("tabindex", "0");
        node.addEventListener("click", function () { window.location.href = "/dags/" + hf.enc(n.label) + "/graph"; });
      }
      canvas.append(node);
    }
    lineage.replaceChildren(canvas);
  }

  if (table) hf.live(["assets"], function (events) {
    if (events.some(function (e) { return e.kind === "asset"; })) refresh();
  }, refresh);
  if (lineage && window.dagre) drawLineage();
})();
