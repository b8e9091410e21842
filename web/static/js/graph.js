/* The graph view: tasks laid out left to right by dagre, coloured by the selected run's states,
   updated live. The newest run stays selected while new runs arrive unless another was chosen.
   Task groups are boxes (dagre compound nodes); a collapsed group is one node showing its task
   count and its most urgent member's state, and the edges of its tasks end on it.
   A mapped task carries a badge with the number of its instances in the selected run.
   The graph is the DAG's version the page was opened with (?version=, or ?run_id='s): choosing a
   run that recorded another version opens the graph of that version. */
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
  const query = new URLSearchParams(window.location.search);
  let followLatest = !query.get("run_id") && !query.get("version");
  const runVersions = JSON.parse(document.getElementById("run-versions").textContent || "{}");
  const initialRuns = Object.assign({}, runVersions);
  const nodes = new Map(); // drawn node id (task or collapsed group) -> {group, sub, tasks}
  const clusters = new Map(); // expanded group id -> its <g>
  const groups = new Map((graph.groups || []).map(function (g) { return [g.id, g]; }));
  const groupOf = new Map(graph.nodes.map(function (n) { return [n.id, n.group || null]; }));
  const typeOf = new Map(graph.nodes.map(function (n) { return [n.id, n.type || "task"]; }));
  const mappedIds = new Set(graph.nodes.filter(function (n) { return n.mapped; }).map(function (n) { return n.id; }));
  const collapsed = hf.collapsedGroups("graph", dagId);
  for (const id of Array.from(collapsed)) if (!groups.has(id)) collapsed.delete(id);
  const expandAll = document.getElementById("graph-expand");
  const collapseAll = document.getElementById("graph-collapse");

  function svg(tag, attrs) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    return n;
  }

  /* Groups holding a task or group, outermost first. */
  function path(groupId) {
    const out = [];
    while (groupId && groups.has(groupId) && !out.includes(groupId)) {
      out.unshift(groupId);
      groupId = groups.get(groupId).parent;
    }
    return out;
  }

  /* What a task is drawn as: itself, or the outermost collapsed group holding it. */
  function shownAs(taskId) {
    for (const id of path(groupOf.get(taskId))) if (collapsed.has(id)) return id;
    return taskId;
  }

  /* A name without the prefix of the group drawn around it. */
  function shortName(id, groupId) {
    return groupId && id.startsWith(groupId + ".") ? id.slice(groupId.length + 1) : id;
  }

  function toggle(groupId) {
    if (collapsed.has(groupId)) collapsed.delete(groupId); else collapsed.add(groupId);
    collapsed.save();
    draw();
  }

  function onActivate(node, action) {
    node.addEventListener("click", action);
    node.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); action(); }
    });
  }

  function layout() {
    const g = new window.dagre.graphlib.Graph({ compound: true });
    g.setGraph({ rankdir: "LR", nodesep: groups.size ? 24 : 14, ranksep: 46, marginx: 8, marginy: groups.size ? 24 : 8 });
    g.setDefaultEdgeLabel(function () { return {}; });
    const shown = new Map(); // drawn node id -> the task ids it stands for
    for (const n of graph.nodes) {
      const id = shownAs(n.id);
      if (!shown.has(id)) shown.set(id, []);
      shown.get(id).push(n.id);
    }
    const parentOf = function (id) {
      const groupId = groups.has(id) ? groups.get(id).parent : groupOf.get(id);
      return groupId && groups.has(groupId) ? groupId : null;
    };
    for (const id of shown.keys()) {
      const label = groups.has(id) ? groups.get(id).label : shortName(id, parentOf(id));
      // A collapsed group's second line reads like "12 tasks · upstream_failed".
      const width = Math.max(groups.has(id) ? 150 : 90, label.length * 7.4 + 26) + (mappedIds.has(id) ? 34 : 0);
      g.setNode(id, { width: width, height: 40 });
      for (let child = id, parent = parentOf(id); parent; child = parent, parent = parentOf(parent)) {
        if (!g.hasNode(parent)) g.setNode(parent, { label: groups.get(parent).label });
        g.setParent(child, parent);
      }
    }
    const linked = new Set();
    for (const [from, to] of graph.edges) {
      const a = shownAs(from), b = shownAs(to);
      if (a === b || linked.has(a + "\u0000" + b)) continue;
      linked.add(a + "\u0000" + b);
      g.setEdge(a, b);
    }
    window.dagre.layout(g);
    return { g: g, shown: shown, parentOf: parentOf };
  }

  function drawCluster(canvas, g, id) {
    const box = g.node(id);
    const info = groups.get(id);
    const top = box.y - box.height / 2 - 16;
    const cluster = svg("g", { class: "cluster s-none", tabindex: "0", role: "button" });
    cluster.dataset.group = id;
    const rect = svg("rect", { x: box.x - box.width / 2, y: top, width: box.width, height: box.height + 16, rx: 6 });
    const label = svg("text", { x: box.x - box.width / 2 + 8, y: top + 13 });
    label.textContent = "\u25be " + info.label;
    const title = svg("title");
    title.textContent = info.id + (info.tooltip ? "\n" + info.tooltip : "") + "\nclick to collapse";
    cluster.append(rect, label, title);
    onActivate(cluster, function () { toggle(id); });
    clusters.set(id, cluster);
    canvas.append(cluster);
  }

  function drawNode(canvas, box, id, tasks, parent) {
    const info = groups.get(id);
    const group = svg("g", { class: "node s-none" + (info ? " group-node" : ""), transform: "translate(" + (box.x - box.width / 2) + "," + (box.y - box.height / 2) + ")", tabindex: "0" });
    const rect = svg("rect", { width: box.width, height: box.height, rx: 4 });
    const label = svg("text", { x: 10, y: 17 });
    const sub = svg("text", { x: 10, y: 32, class: "state-label" });
    const title = svg("title");
    if (info) {
      group.dataset.group = id;
      label.textContent = "\u25b8 " + info.label;
      title.textContent = id + (info.tooltip ? "\n" + info.tooltip : "") + "\n" + tasks.length + " tasks; click to expand";
      onActivate(group, function () { toggle(id); });
    } else {
      group.dataset.task = id;
      label.textContent = shortName(id, parent);
      title.textContent = id + " (" + typeOf.get(id) + ")";
      onActivate(group, function () {
        if (!select.value) return;
        window.location.href = dagPath + "/runs/" + hf.enc(select.value) + "/tasks/" + hf.enc(id);
      });
    }
    group.append(rect, label, sub, title);
    let badge = null;
    if (!info && mappedIds.has(id)) {
      badge = svg("text", { x: box.width - 8, y: 17, class: "map-badge", "text-anchor": "end" });
      badge.textContent = "[ ]";
      group.append(badge);
    }
    nodes.set(id, { group: group, sub: sub, badge: badge, tasks: tasks, count: info ? tasks.length + " tasks" : "" });
    canvas.append(group);
  }

  function draw() {
    nodes.clear();
    clusters.clear();
    const laid = layout();
    const g = laid.g;
    const size = g.graph();
    const canvas = svg("svg", { width: size.width + 16, height: size.height + 16, role: "img" });
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#98a2b3" }));
    defs.append(marker);
    canvas.append(defs);
    const expanded = g.nodes().filter(function (id) { return g.children(id).length > 0; });
    expanded.sort(function (a, b) { return path(a).length - path(b).length; });
    for (const id of expanded) drawCluster(canvas, g, id);
    for (const e of g.edges()) {
      const pts = g.edge(e).points;
      const d = "M" + pts.map(function (p) { return p.x + "," + p.y; }).join(" L");
      canvas.append(svg("path", { d: d, class: "edge", "marker-end": "url(#arrow)" }));
    }
    for (const [id, tasks] of laid.shown) drawNode(canvas, g.node(id), id, tasks, laid.parentOf(id));
    root.replaceChildren(canvas);
    if (!graph.nodes.length) root.replaceChildren(hf.el("p", { class: "muted" }, "This DAG has no tasks."));
    if (expandAll) expandAll.disabled = collapsed.size === 0;
    if (collapseAll) collapseAll.disabled = groups.size === 0 || Array.from(groups.keys()).every(function (id) { return collapsed.has(id); });
    paint(grid.states[select.value]);
  }

  function paint(states) {
    states = states || {};
    for (const n of nodes.values()) {
      const state = hf.groupState(n.tasks.map(function (t) { return states[t]; }));
      hf.setState(n.group, state);
      n.sub.textContent = [n.count, state === "none" ? "" : state].filter(Boolean).join(" \u00b7 ");
      if (n.badge) {
        const instances = ((grid.mapped || {})[select.value] || {})[n.tasks[0]];
        n.badge.textContent = instances ? "[" + instances.length + "]" : "[ ]";
      }
    }
    for (const [id, cluster] of clusters) {
      hf.setState(cluster, hf.groupState(groups.get(id).tasks.map(function (t) { return states[t]; })));
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
      await followNewVersion();
    } catch (e) { /* retried on the next event */ }
  }, 150);

  /* Following the newest run, and it arrived live with another version of the DAG (the file was
     edited since the page opened): reload, which draws the latest version. Only a run the page
     did not start with can do this, so a reload never leads to another. */
  async function followNewVersion() {
    const runId = select.value;
    if (!followLatest || !runId || runId in initialRuns) return;
    const version = await versionOf(runId);
    if (version !== null && version !== undefined && version !== graph.version) window.location.reload();
  }

  function onEvents(events) {
    let stale = false;
    for (const e of events) {
      if (e.dag_id !== dagId) continue;
      if (e.kind === "task" && e.map_index >= 0) {
        stale = true; // a mapped instance: its task's summary and count are recounted
      } else if (e.kind === "task" && grid.states[e.run_id]) {
        grid.states[e.run_id][e.task_id] = e.state;
        if (e.run_id === select.value) paint(grid.states[select.value]);
      } else if ((e.kind === "run" || e.kind === "task") && !grid.states[e.run_id]) {
        stale = true;
      } else if (e.kind === "run") {
        for (const r of grid.runs) if (r.run_id === e.run_id) r.state = e.state;
      }
    }
    if (stale) resync();
  }

  /* The version number a run recorded (null: unknown), asked for once for a run that came live. */
  async function versionOf(runId) {
    if (!(runId in runVersions)) {
      try { runVersions[runId] = (await hf.api(dagPath + "/runs/" + hf.enc(runId))).dag_version; } catch (e) { return null; }
    }
    return runVersions[runId];
  }

  select.addEventListener("change", async function () {
    const runId = select.value;
    const version = runId ? await versionOf(runId) : null;
    if (version !== null && version !== undefined && version !== graph.version) {
      window.location.href = dagPath + "/graph?run_id=" + hf.enc(runId);
      return;
    }
    followLatest = grid.runs.length > 0 && runId === grid.runs[grid.runs.length - 1].run_id;
    paint(grid.states[runId]);
  });

  if (groups.size && expandAll && collapseAll) {
    expandAll.hidden = collapseAll.hidden = false;
    expandAll.addEventListener("click", function () { collapsed.clear(); collapsed.save(); draw(); });
    collapseAll.addEventListener("click", function () {
      for (const id of groups.keys()) collapsed.add(id);
      collapsed.save();
      draw();
    });
  }
  draw();
  hf.live(["dag:" + dagId], onEvents, resync);
})();
