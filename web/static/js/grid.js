/* The grid view: runs as columns (oldest left), tasks as rows, a coloured square per task
   instance. Squares change colour as state events arrive; an unknown run or task means the grid
   is refetched from the API. Clicking a square shows its task instance beside the grid. A task
   group is a row of its own above its tasks, with one summary square per run (its most urgent
   member's state); its toggle hides or shows the rows inside it. A mapped task has one summary
   square per run (the count of its instances inside); its row expands into one row per map
   index. */
(function () {
  "use strict";
  const hf = window.hf;
  const root = document.getElementById("grid");
  if (!root) return;
  const dagId = root.dataset.dag;
  const runsShown = root.dataset.runs || "25";
  const canOp = root.dataset.canOp === "true";
  const panel = document.getElementById("grid-detail");
  let data = JSON.parse(document.getElementById("grid-data").textContent);
  let cells = new Map(); // run_id \u0000 task_id -> element
  let heads = new Map(); // run_id -> element
  let groupCells = new Map(); // run_id \u0000 group_id -> element
  let rowsOf = new Map(); // group id -> the <tr> of each row inside it
  let selected = null; // {run, task, index}, {run, group} or {run}
  const collapsed = hf.collapsedGroups("grid", dagId);
  const expanded = new Set(); // mapped tasks whose instance rows are shown

  const key = function (run, task, index) {
    return run + "\u0000" + task + (index === undefined || index < 0 ? "" : "\u0000" + index);
  };
  const instancesOf = function (run, task) { return ((data.mapped || {})[run] || {})[task]; };
  const isMapped = function (task) { return (data.mapped_tasks || []).indexOf(task) >= 0; };
  const dagPath = "/dags/" + hf.enc(dagId);

  function groupsById() {
    return new Map((data.groups || []).map(function (g) { return [g.id, g]; }));
  }

  /* The rows to draw: the server's (groups above their tasks), or one per task from an older server. */
  function rowList() {
    return data.rows || data.tasks.map(function (t) { return { kind: "task", id: t, depth: 0, group: null }; });
  }

  function shortName(id, groupId) {
    return groupId && id.startsWith(groupId + ".") ? id.slice(groupId.length + 1) : id;
  }

  function groupStateIn(group, runId) {
    const states = data.states[runId] || {};
    return hf.groupState(group.tasks.map(function (t) { return states[t]; }));
  }

  function taskRow(task, depth, groupId) {
    const name = hf.el("th", { class: "task", title: task }, shortName(task, groupId));
    name.style.paddingLeft = (depth * 14) + "px";
    return hf.el("tr", null, name);
  }

  function groupRow(group, depth) {
    const open = !collapsed.has(group.id);
    const toggle = hf.el("button", { type: "button", class: "group-toggle", "aria-expanded": String(open),
      title: group.id + (group.tooltip ? "\n" + group.tooltip : "") + "\n" + group.tasks.length + " tasks" },
      (open ? "\u25be " : "\u25b8 ") + shortName(group.id, group.parent));
    toggle.dataset.group = group.id;
    toggle.addEventListener("click", function () {
      if (collapsed.has(group.id)) collapsed.delete(group.id); else collapsed.add(group.id);
      collapsed.save();
      toggle.setAttribute("aria-expanded", String(!collapsed.has(group.id)));
      toggle.textContent = (collapsed.has(group.id) ? "\u25b8 " : "\u25be ") + shortName(group.id, group.parent);
      applyCollapsed();
    });
    const name = hf.el("th", { class: "task group" }, toggle);
    name.style.paddingLeft = (depth * 14) + "px";
    const row = hf.el("tr", { class: "group-row" }, name);
    row.dataset.group = group.id;
    for (const run of data.runs) {
      const state = groupStateIn(group, run.run_id);
      const c = hf.el("span", {
        class: "cell group-cell " + hf.stateClass(state),
        title: group.id + " \u00b7 " + state + " (" + group.tasks.length + " tasks)\n" + run.run_id,
        role: "button",
        tabindex: "0",
      });
      c.dataset.run = run.run_id;
      c.dataset.group = group.id;
      c.dataset.state = state;
      c.addEventListener("click", function () { showGroup(run.run_id, group.id); });
      groupCells.set(key(run.run_id, group.id), c);
      row.append(hf.el("td", null, c));
    }
    return row;
  }

  /* Hide every row inside a collapsed group (the cells stay, so live events still land). */
  function applyCollapsed() {
    const hidden = new Set();
    for (const id of collapsed) for (const row of rowsOf.get(id) || []) hidden.add(row);
    for (const rows of rowsOf.values()) for (const row of rows) row.hidden = hidden.has(row);
  }

  function render() {
    cells = new Map();
    heads = new Map();
    groupCells = new Map();
    rowsOf = new Map();
    const groups = groupsById();
    const table = hf.el("table", { class: groups.size ? "gridtable grouped" : "gridtable", id: "gridtable" });
    const head = hf.el("tr", null, hf.el("th", { class: "corner" }, data.runs.length ? "runs \u2192" : ""));
    for (const run of data.runs) {
      const h = hf.el("span", {
        class: "run-head " + hf.stateClass(run.state),
        title: run.run_id + "\n" + hf.fmtDate(run.logical_date) + " \u00b7 " + run.state,
        role: "button",
        tabindex: "0",
      });
      h.dataset.run = run.run_id;
      h.dataset.state = run.state;
      h.addEventListener("click", function () { showRun(run.run_id); });
      heads.set(run.run_id, h);
      head.append(hf.el("td", null, h));
    }
    table.append(hf.el("thead", null, head));
    const body = hf.el("tbody");
    const within = new Map(); // row id -> enclosing group id
    for (const entry of rowList()) {
      within.set(entry.id, entry.group);
      const group = entry.kind === "group" ? groups.get(entry.id) : null;
      const row = group ? groupRow(group, entry.depth) : taskRow(entry.id, entry.depth, entry.group);
      for (let g = entry.group; g; g = within.get(g) || null) {
        if (!rowsOf.has(g)) rowsOf.set(g, []);
        rowsOf.get(g).push(row);
      }
      body.append(row);
      if (group) continue;
      const task = entry.id;
      const mapped = isMapped(task);
      if (mapped) {
        const label = row.firstChild;
        label.classList.add("mapped-task");
        const toggle = hf.el("button", {
          type: "button",
          class: "expand-toggle",
          title: (expanded.has(task) ? "hide" : "show") + " the mapped instances",
          "aria-expanded": expanded.has(task) ? "true" : "false",
        }, expanded.has(task) ? "\u25be" : "\u25b8");
        toggle.addEventListener("click", function () {
          if (expanded.has(task)) expanded.delete(task); else expanded.add(task);
          render();
        });
        label.prepend(toggle);
      }
      let widest = 0;
      for (const run of data.runs) {
        const state = (data.states[run.run_id] || {})[task] || "none";
        const instances = instancesOf(run.run_id, task);
        const c = hf.el("span", {
          class: "cell " + hf.stateClass(state) + (instances ? " mapped" : ""),
          title: task + " \u00b7 " + state + (instances ? " \u00b7 " + instances.length + " mapped" : "") + "\n" + run.run_id,
          role: "button",
          tabindex: "0",
        }, instances ? String(instances.length) : "");
        c.dataset.run = run.run_id;
        c.dataset.task = task;
        c.dataset.state = state;
        c.addEventListener("click", function () {
          if (instances) showMapped(run.run_id, task); else showTask(run.run_id, task);
        });
        cells.set(key(run.run_id, task), c);
        row.append(hf.el("td", null, c));
        widest = Math.max(widest, instances ? instances.length : 0);
      }
      if (mapped && expanded.has(task)) {
        for (let i = 0; i < widest; i++) {
          const extra = instanceRow(task, i);
          for (let g = entry.group; g; g = within.get(g) || null) rowsOf.get(g).push(extra);
          body.append(extra);
        }
      }
    }
    table.append(body);
    applyCollapsed();
    if (!data.tasks.length) {
      root.replaceChildren(hf.el("p", { class: "muted" }, "This DAG has no tasks."));
    } else if (!data.runs.length) {
      root.replaceChildren(table, hf.el("p", { class: "muted" }, "No runs yet."));
    } else {
      root.replaceChildren(table);
    }
    markSelected();
  }

  function instanceRow(task, index) {
    const row = hf.el("tr", { class: "instance-row" }, hf.el("th", { class: "task instance", title: task + " [" + index + "]" }, "[" + index + "]"));
    for (const run of data.runs) {
      const state = (instancesOf(run.run_id, task) || [])[index];
      if (state === undefined) { row.append(hf.el("td")); continue; }
      const c = hf.el("span", {
        class: "cell " + hf.stateClass(state),
        title: task + " [" + index + "] \u00b7 " + state + "\n" + run.run_id,
        role: "button",
        tabindex: "0",
      });
      c.dataset.run = run.run_id;
      c.dataset.task = task;
      c.dataset.mapIndex = String(index);
      c.dataset.state = state;
      c.addEventListener("click", function () { showTask(run.run_id, task, false, index); });
      cells.set(key(run.run_id, task, index), c);
      row.append(hf.el("td", null, c));
    }
    return row;
  }

  function markSelected() {
    root.querySelectorAll(".selected").forEach(function (n) { n.classList.remove("selected"); });
    if (!selected) return;
    const node = selected.task ? cells.get(key(selected.run, selected.task, selected.index))
      : selected.group ? groupCells.get(key(selected.run, selected.group)) : heads.get(selected.run);
    if (node) node.classList.add("selected");
  }

  function refreshSelected() {
    if (!selected) return;
    if (selected.group) showGroup(selected.run, selected.group);
    else if (!selected.task) showRun(selected.run, true);
    else if (selected.summary) showMapped(selected.run, selected.task);
    else showTask(selected.run, selected.task, true, selected.index);
  }

  const refetch = hf.debounce(async function () {
    try {
      data = await hf.api(dagPath + "/grid?limit=" + hf.enc(runsShown));
      render();
      refreshSelected();
    } catch (e) { /* the next event or resync tries again */ }
  }, 150);

  function onEvents(events) {
    let stale = false;
    let refreshPanel = false;
    for (const e of events) {
      if (e.dag_id !== dagId) continue;
      if (e.kind === "task" && e.map_index >= 0) {
        stale = true; // a mapped instance: the summary square and the instance rows are recounted
      } else if (e.kind === "task") {
        const c = cells.get(key(e.run_id, e.task_id));
        if (!c) { stale = true; continue; }
        hf.setState(c, e.state);
        c.title = e.task_id + " \u00b7 " + e.state + "\n" + e.run_id;
        (data.states[e.run_id] = data.states[e.run_id] || {})[e.task_id] = e.state;
        for (const group of data.groups || []) {
          if (!group.tasks.includes(e.task_id)) continue;
          const gc = groupCells.get(key(e.run_id, group.id));
          if (gc) hf.setState(gc, groupStateIn(group, e.run_id));
          if (selected && selected.run === e.run_id && selected.group === group.id) refreshPanel = true;
        }
        if (selected && selected.run === e.run_id && !selected.group && (!selected.task || selected.task === e.task_id)) refreshPanel = true;
      } else if (e.kind === "run") {
        const h = heads.get(e.run_id);
        if (!h) { stale = true; continue; }
        hf.setState(h, e.state);
        if (selected && selected.run === e.run_id && !selected.task && !selected.group) refreshPanel = true;
      } else if (e.kind === "dag") {
        stale = true;
      }
    }
    if (stale) refetch();
    else {
      markSelected();
      if (refreshPanel) refreshSelected();
    }
  }

  /* A group's summary square: its tasks' states in that run, each opening its task instance. */
  function showGroup(runId, groupId) {
    selected = { run: runId, group: groupId };
    markSelected();
    const group = groupsById().get(groupId);
    if (!group) return;
    const states = data.states[runId] || {};
    const list = hf.el("table", { class: "kv" });
    for (const task of group.tasks) {
      const link = hf.el("a", { href: "#", title: task }, shortName(task, groupId));
      link.addEventListener("click", function (event) { event.preventDefault(); showTask(runId, task); });
      list.append(row(link, hf.badge(states[task] || "none")));
    }
    const children = [hf.el("h4", null, groupId), hf.el("p", null, hf.badge(groupStateIn(group, runId)), " ",
      group.tasks.length + " tasks in run ", hf.el("a", { href: dagPath + "/runs/" + hf.enc(runId) }, runId))];
    if (group.tooltip) children.push(hf.el("p", { class: "muted small" }, group.tooltip));
    children.push(list);
    panel.replaceChildren.apply(panel, children);
  }

  function row(label, value) {
    return hf.el("tr", null, hf.el("th", null, label), hf.el("td", null, value === null || value === undefined ? "" : value));
  }

  function showMapped(runId, taskId) {
    selected = { run: runId, task: taskId, summary: true };
    markSelected();
    const instances = instancesOf(runId, taskId) || [];
    const counts = {};
    for (const state of instances) counts[state] = (counts[state] || 0) + 1;
    const table = hf.el("table", { class: "kv" },
      row("Run", hf.el("a", { href: "/dags/" + hf.enc(dagId) + "/runs/" + hf.enc(runId) }, runId)),
      row("State", hf.badge((data.states[runId] || {})[taskId] || "none")),
      row("Instances", String(instances.length)));
    for (const state of Object.keys(counts).sort()) table.append(row(state, String(counts[state])));
    const squares = hf.el("div", { class: "instance-squares" });
    instances.forEach(function (state, index) {
      const sq = hf.el("span", { class: "cell " + hf.stateClass(state), title: "[" + index + "] " + state, role: "button", tabindex: "0" }, String(index));
      sq.dataset.mapIndex = String(index);
      sq.addEventListener("click", function () { showTask(runId, taskId, false, index); });
      squares.append(sq);
    });
    panel.replaceChildren(hf.el("h4", null, taskId + " (mapped)"), table, squares,
      hf.el("p", { class: "small muted" }, "Click an instance for its details."));
  }

  async function showTask(runId, taskId, quiet, index) {
    const mapIndex = index === undefined ? -1 : index;
    selected = { run: runId, task: taskId, index: mapIndex };
    markSelected();
    const which = mapIndex >= 0 ? "?map_index=" + mapIndex : "";
    const runPath = dagPath + "/runs/" + hf.enc(runId);
    const page = "/dags/" + hf.enc(dagId) + "/runs/" + hf.enc(runId) + "/tasks/" + hf.enc(taskId) + which;
    const title = taskId + (mapIndex >= 0 ? " [" + mapIndex + "]" : "");
    let ti;
    try {
      ti = await hf.api(runPath + "/tasks/" + hf.enc(taskId) + which);
    } catch (e) {
      if (!quiet) panel.replaceChildren(hf.el("h4", null, title), hf.el("p", { class: "muted" },
        e.status === 404 ? "Not created in this run yet." : e.message));
      return;
    }
    if (!selected || selected.run !== runId || selected.task !== taskId || selected.index !== mapIndex) return;
    const table = hf.el("table", { class: "kv" },
      row("Run", hf.el("a", { href: "/dags/" + hf.enc(dagId) + "/runs/" + hf.enc(runId) }, runId)),
      row("State", hf.badge(ti.state)),
      row("Try", ti.try_number + " of " + ti.max_tries),
      row("Started", hf.fmtDate(ti.start_date)),
      row("Ended", hf.fmtDate(ti.end_date)),
      row("Duration", hf.fmtDuration(ti.duration)),
      row("Host", ti.hostname || ""),
      row("Queue", ti.queue));
    const children = [hf.el("h4", null, title), table];
    if (ti.error) children.push(hf.el("pre", { class: "error-text" }, ti.error.slice(0, 2000)));
    const buttons = hf.el("div", { class: "buttons" }, hf.el("a", { class: "button primary", href: page }, "Log and details"));
    if (canOp) {
      buttons.append(
        hf.el("button", { type: "button", onclick: function () { act("clear", runId, taskId, mapIndex); } }, "Clear"),
        hf.el("button", { type: "button", class: "mark-success", onclick: function () { act("success", runId, taskId, mapIndex); } }, "Mark success"),
        hf.el("button", { type: "button", class: "mark-failed", onclick: function () { act("failed", runId, taskId, mapIndex); } }, "Mark failed"));
    }
    children.push(buttons, hf.el("p", { class: "small muted", id: "grid-action-status" }));
    panel.replaceChildren.apply(panel, children);
  }

  async function act(what, runId, taskId, mapIndex) {
    const base = dagPath + "/runs/" + hf.enc(runId) + "/tasks/" + hf.enc(taskId);
    const which = mapIndex >= 0 ? "?map_index=" + mapIndex : "";
    const status = document.getElementById("grid-action-status");
    try {
      if (what === "clear") {
        if (!window.confirm("Clear " + taskId + " and its downstream tasks in this run? They run again.")) return;
        const r = await hf.api(base + "/clear" + which, { method: "POST", body: { downstream: true } });
        status.textContent = "cleared " + (r.cleared.map(function (c) {
          return c.task_id + (c.map_index >= 0 ? "[" + c.map_index + "]" : "");
        }).join(", ") || "nothing");
      } else {
        await hf.api(base + which, { method: "PATCH", body: { state: what } });
        status.textContent = "marked " + what;
      }
      refetch();
    } catch (e) {
      status.textContent = e.message;
    }
  }

  async function showRun(runId, quiet) {
    selected = { run: runId };
    markSelected();
    let run;
    try {
      run = await hf.api(dagPath + "/runs/" + hf.enc(runId));
    } catch (e) {
      if (!quiet) panel.replaceChildren(hf.el("p", { class: "muted" }, e.message));
      return;
    }
    if (!selected || selected.run !== runId || selected.task) return;
    panel.replaceChildren(
      hf.el("h4", null, runId),
      hf.el("table", { class: "kv" },
        row("State", hf.badge(run.state)),
        row("Type", run.run_type),
        row("Logical date", hf.fmtDate(run.logical_date)),
        row("Started", hf.fmtDate(run.start_date)),
        row("Ended", hf.fmtDate(run.end_date)),
        row("Duration", hf.fmtDuration(run.duration)),
        row("Triggered by", run.triggered_by || "")),
      hf.el("div", { class: "buttons" },
        hf.el("a", { class: "button primary", href: "/dags/" + hf.enc(dagId) + "/runs/" + hf.enc(runId) }, "Run details")));
  }

  render();
  hf.live(["dag:" + dagId], onEvents, refetch);
})();
