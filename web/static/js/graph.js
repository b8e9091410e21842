/* The graph view: tasks laid out left to right by dagre, coloured by the selected run's states,
   updated live. The newest run stays selected while new runs arrive unless another was chosen.
   A mapped task carries a badge with the number of its instances in the selected run. */
(function () {
  "use strict";
  const hf = window.hf;
  const root = document.getElementById("graph");
  if (!root || !window.dagre) return;
  const SVG = "http://www.w3.org/2000/svg";
  const dagId = root.dataset.dag;
  const dagPath = "/dags/" + hf.enc(dagId);
  const graph = JSON.parse(document.getElementById("graph-data").textContent);
  let grid = JSON.parse(document.getElementById("grid-data").textContent);
  const select = document.getElementById("graph-run");
  let followLatest = !new URLSearchParams(window.location.search).get("run_id");
  const nodes = new Map();

  function svg(tag, attrs) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    return n;
  }

  function layout() {
    const g = new window.dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 14, ranksep: 46, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(function () { return {}; });
    for (const n of graph.nodes) {
      g.setNode(n.id, { width: Math.max(90, n.id.length * 7.4 + 26) + (n.mapped ? 34 : 0), height: 40 });
    }
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
      const d = "M" + pts.map(function (p) { return p.x + "," + p.y; }).join(" L");
      canvas.append(svg("path", { d: d, class: "edge", "marker-end": "url(#arrow)" }));
    }
    for (const n of graph.nodes) {
      const box = g.node(n.id);
      const group = svg("g", { class: "node s-none", transform: "translate(" + (box.x - box.width / 2) + "," + (box.y - box.height / 2) + ")", tabindex: "0" });
      group.dataset.task = n.id;
      const rect = svg("rect", { width: box.width, height: box.height, rx: 4 });
      const label = svg("text", { x: 10, y: 17 });
      label.textContent = n.id;
      const sub = svg("text", { x: 10, y: 32, class: "state-label" });
      sub.textContent = "";
      const title = svg("title");
      title.textContent = n.id + " (" + (n.type || "task") + ")";
      group.append(rect, label, sub, title);
      let badge = null;
      if (n.mapped) {
        badge = svg("text", { x: box.width - 8, y: 17, class: "map-badge", "text-anchor": "end" });
        badge.textContent = "[ ]";
        group.append(badge);
      }
      group.addEventListener("click", function () {
        if (!select.value) return;
        window.location.href = dagPath + "/runs/" + hf.enc(select.value) + "/tasks/" + hf.enc(n.id);
      });
      nodes.set(n.id, { group: group, sub: sub, badge: badge });
      canvas.append(group);
    }
    root.replaceChildren(canvas);
    if (!graph.nodes.length) root.replaceChildren(hf.el("p", { class: "muted" }, "This DAG has no tasks."));
  }

  function paint(states) {
    for (const [task, n] of nodes) {
      const state = (states || {})[task] || "none";
      hf.setState(n.group, state);
      n.sub.textContent = state === "none" ? "" : state;
      if (n.badge) {
        const instances = ((grid.mapped || {})[select.value] || {})[task];
        n.badge.textContent = instances ? "[" + instances.length + "]" : "[ ]";
      }
    }
  }

  function fillRuns() {
    const current = select.value;
    const options = grid.runs.slice().reverse().map(function (r) {
      return hf.el("option", { value: r.run_id }, hf.fmtDate(r.logical_date) + " \u00b7 " + r.run_id + " (" + r.state + ")");
    });
    if (!options.length) options.push(hf.el("option", { value: "" }, "no runs yet"));
    select.replaceChildren.apply(select, options);
    const latest = grid.runs.length ? grid.runs[grid.runs.length - 1].run_id : "";
    select.value = followLatest ? latest : (grid.runs.some(function (r) { return r.run_id === current; }) ? current : latest);
  }

  const resync = hf.debounce(async function () {
    try {
      grid = await hf.api(dagPath + "/grid?limit=25");
      fillRuns();
      paint(grid.states[select.value]);
    } catch (e) { /* retried on the next event */ }
  }, 150);

  function onEvents(events) {
    let stale = false;
    for (const e of events) {
      if (e.dag_id !== dagId) continue;
      if (e.kind === "task" && e.map_index >= 0) {
        stale = true; // a mapped instance: its task's summary and count are recounted
      } else if (e.kind === "task" && grid.states[e.run_id]) {
        grid.states[e.run_id][e.task_id] = e.state;
        if (e.run_id === select.value && nodes.has(e.task_id)) {
          const n = nodes.get(e.task_id);
          hf.setState(n.group, e.state);
          n.sub.textContent = e.state;
        }
      } else if ((e.kind === "run" || e.kind === "task") && !grid.states[e.run_id]) {
        stale = true;
      } else if (e.kind === "run") {
        for (const r of grid.runs) if (r.run_id === e.run_id) r.state = e.state;
      }
    }
    if (stale) resync();
  }

  select.addEventListener("change", function () {
    followLatest = grid.runs.length > 0 && select.value === grid.runs[grid.runs.length - 1].run_id;
    paint(grid.states[select.value]);
  });

  layout();
  paint(grid.states[select.value]);
  hf.live(["dag:" + dagId], onEvents, resync);
})();
