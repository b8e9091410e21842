/* The grid view: runs as columns (oldest left), tasks as rows, a square per task instance.

   Each column head is a run: a bar whose height is its duration against the longest shown (its
   queued part lighter), a letter for its run type, its logical date. The task column and the
   heads stay in view while the grid scrolls.

   Drawing: the rows of the first screen are one HTML string set at once, the rows below follow a
   step at a time after the first frame (500 tasks x 100 runs are 50,000 squares: the first frame
   has a tenth of them); each row is `content-visibility: auto` so only the rows on screen are
   laid out and painted, and one listener per kind of event on the grid finds what was clicked or
   hovered (a square's run is its column, its task its row; tooltips are built on hover).
   `#grid[data-rendered]` is set once every row is in.

   Live: a state event changes the squares it is about in place — the task's square, its mapped
   summary and instance squares, the squares of the groups holding it, the run's head and bar.
   Only what the grid cannot patch refetches the grid's JSON: a run, task or mapped instance it
   has no square for (a new run, a mapped task that just expanded) or a changed DAG; such
   refetches are throttled (at most one a second) and the events that arrive meanwhile are
   replayed on the new data. After a (re)connect, and every 30 s, the page resyncs in full.

   Filters (last N runs, run type, run state) live in the URL (?runs=&run_type=&state=): the
   server applies them to the page and to the JSON the grid refetches. */
(function () {
  "use strict";
  const hf = window.hf;
  const root = document.getElementById("grid");
  if (!root) return;
  if (window.performance && performance.mark) performance.mark("hareflow:grid-start");
  const dagId = root.dataset.dag;
  const canOp = root.dataset.canOp === "true";
  const panel = document.getElementById("grid-detail");
  const form = document.getElementById("grid-filters");
  const countLabel = document.getElementById("grid-count");
  const dagPath = "/dags/" + hf.enc(dagId);
  const collapsed = hf.collapsedGroups("grid", dagId);
  const expanded = new Set(); // mapped tasks whose instance rows are shown
  const RUN_TYPE_LETTERS = { scheduled: "S", manual: "M", backfill: "B", asset_triggered: "A", event: "E" };
  //: Which state a mapped task's summary shows (the rule of web/queries.py SUMMARY_ORDER).
  const SUMMARY_ORDER = ["running", "queued", "up_for_retry", "up_for_reschedule", "scheduled", "none",
    "failed", "upstream_failed", "success", "skipped", "removed"];
  const ACTIVE_RUN = new Set(["queued", "running"]);
  const BAR_HEIGHT = 44; // px of the longest run's bar

  let data = decode(JSON.parse(document.getElementById("grid-data").textContent));
  let colOf = new Map(); // run id -> column index
  let taskRows = new Map(); // task id -> its row (a mapped task's: the summary row)
  let groupRows = new Map(); // group id -> its row
  let groupsOfTask = new Map(); // task id -> the groups holding it, innermost last
  let heads = []; // column index -> head element
  let ignoredRuns = new Set(); // runs a refetch did not bring (filtered out or too old)
  let selected = null; // {run, task, index}, {run, task, summary}, {run, group} or {run}

  /* The compact form's cells (one letter per task, see web/queries.py) as run -> task -> state. */
  function decode(d) {
    if (!d.cells || d.states) return d;
    const codes = d.state_codes;
    d.states = {};
    for (const run of d.runs) {
      const letters = d.cells[run.run_id] || "";
      const states = {};
      for (let i = 0; i < letters.length; i++) {
        const code = letters.charCodeAt(i) - 97;
        if (code >= 0) states[d.tasks[i]] = codes[code] || "none";
      }
      d.states[run.run_id] = states;
    }
    delete d.cells;
    return d;
  }

  const esc = function (text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  };
  const stateClass = hf.stateClass;
  const instancesOf = function (run, task) { return ((data.mapped || {})[run] || {})[task]; };
  const isMapped = function (task) { return (data.mapped_tasks || []).indexOf(task) >= 0; };
  const stateOf = function (run, task) { return (data.states[run] || {})[task] || "none"; };

  function summaryState(states) {
    const present = new Set(states);
    for (const state of SUMMARY_ORDER) if (present.has(state)) return state;
    return "none";
  }

  function groupsById() {
    return new Map((data.groups || []).map(function (g) { return [g.id, g]; }));
  }

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

  // -- run heads ---------------------------------------------------------------------------------

  function seconds(iso) { return iso ? Date.parse(iso) / 1000 : null; }

  /* The queued and running parts of a run's bar, in seconds (a running run's grows until now). */
  function durations(run) {
    const now = Date.now() / 1000;
    const queued = seconds(run.queued_at), start = seconds(run.start_date), end = seconds(run.end_date);
    const waited = queued === null ? 0 : Math.max(0, (start === null ? (ACTIVE_RUN.has(run.state) ? now : queued) : start) - queued);
    const ran = start === null ? 0 : Math.max(0, (end === null ? (ACTIVE_RUN.has(run.state) ? now : start) : end) - start);
    return [waited, ran];
  }

  /* Short logical dates: month-day hour:minute, with seconds when two shown runs share a minute. */
  function labels() {
    // In the zone picked in the header (hf.fmtDate: "YYYY-MM-DD HH:MM:SS <zone>").
    const full = data.runs.map(function (r) { return r.logical_date ? hf.fmtDate(r.logical_date) : ""; });
    const out = full.map(function (t) { return t.slice(5, 16); });
    if (new Set(out).size < out.length) return full.map(function (t) { return t.slice(5, 19); });
    return out;
  }

  function headHtml(run, index, label) {
    const letter = RUN_TYPE_LETTERS[run.run_type] || "?";
    return '<div class="run-col" role="button" tabindex="0" data-col="' + index + '" data-run="' + esc(run.run_id) +
      '" data-state="' + esc(run.state) + '"><span class="run-bar ' + stateClass(run.state) +
      '"><span class="bar-queued"></span></span><span class="run-type" title="' + esc(run.run_type) + ' run">' +
      letter + '</span><span class="run-label">' + esc(label) + "</span></div>";
  }

  /* Bar heights against the longest run shown (and the longest's duration in the corner). */
  function drawBars() {
    const parts = data.runs.map(durations);
    const longest = Math.max.apply(null, parts.map(function (p) { return p[0] + p[1]; }).concat([0]));
    parts.forEach(function (p, i) {
      const head = heads[i];
      if (!head) return;
      const bar = head.firstChild;
      const total = p[0] + p[1];
      const height = longest > 0 ? Math.max(2, Math.round(BAR_HEIGHT * total / longest)) : 2;
      bar.style.height = height + "px";
      bar.firstChild.style.height = (total > 0 ? Math.round(100 * p[0] / total) : 0) + "%";
    });
    const scale = document.getElementById("grid-scale");
    if (scale) scale.textContent = longest > 0 ? "longest " + hf.fmtDuration(longest) : "";
  }

  function runTitle(run) {
    const p = durations(run);
    return run.run_id + "\n" + run.run_type + " run \u00b7 " + run.state +
      "\nlogical date " + hf.fmtDate(run.logical_date) +
      (p[0] ? "\nqueued " + hf.fmtDuration(p[0]) : "") +
      (run.start_date ? "\n" + (run.end_date ? "ran " : "running for ") + hf.fmtDuration(p[1]) : "");
  }

  // -- rows --------------------------------------------------------------------------------------

  function cellsHtml(statesPerRun, extraClass) {
    let html = "";
    for (let i = 0; i < statesPerRun.length; i++) {
      const state = statesPerRun[i];
      if (state === undefined) { html += '<span class="cell blank"></span>'; continue; }
      const text = extraClass === " mapped" ? statesPerRun.counts[i] : "";
      html += '<span class="cell ' + stateClass(state) + (text === "" ? "" : extraClass) + '" data-state="' + state + '">' + text + "</span>";
    }
    return html;
  }

  function labelHtml(cls, depth, title, inner) {
    return '<span class="task ' + cls + " depth-" + Math.min(depth, 8) + '" title="' + esc(title) + '">' + inner + "</span>";
  }

  /* A row's opening tag: its kind, what it is about, its depth and the groups it sits in. */
  function rowOpen(cls, attrs, depth, within) {
    return '<div class="grid-row ' + cls + '"' + attrs + ' data-depth="' + depth + '"' +
      (within ? ' data-within="' + esc(within) + '"' : "") + ">";
  }

  function taskRowHtml(entry, within) {
    const task = entry.id;
    const mapped = isMapped(task);
    const states = data.runs.map(function (r) { return stateOf(r.run_id, task); });
    let label = esc(shortName(task, entry.group));
    let cells;
    if (mapped) {
      const open = expanded.has(task);
      label = '<button type="button" class="expand-toggle" aria-expanded="' + open + '" title="' +
        (open ? "hide" : "show") + ' the mapped instances">' + (open ? "\u25be" : "\u25b8") + "</button>" + label;
      states.counts = data.runs.map(function (r) {
        const instances = instancesOf(r.run_id, task);
        return instances ? String(instances.length) : "";
      });
      cells = cellsHtml(states, " mapped");
    } else {
      cells = cellsHtml(states, "");
    }
    return rowOpen("task-row", ' data-task="' + esc(task) + '"', entry.depth, within) +
      labelHtml("task-name" + (mapped ? " mapped-task" : ""), entry.depth, task, label) + cells + "</div>";
  }

  function groupRowHtml(group, depth, within) {
    const open = !collapsed.has(group.id);
    const title = group.id + (group.tooltip ? "\n" + group.tooltip : "") + "\n" + group.tasks.length + " tasks";
    const toggle = '<button type="button" class="group-toggle" aria-expanded="' + open + '" data-group="' + esc(group.id) +
      '">' + (open ? "\u25be " : "\u25b8 ") + esc(shortName(group.id, group.parent)) + "</button>";
    let cells = "";
    for (const run of data.runs) {
      const state = groupStateIn(group, run.run_id);
      cells += '<span class="cell group-cell ' + stateClass(state) + '" data-state="' + state + '"></span>';
    }
    return rowOpen("group-row", ' data-group="' + esc(group.id) + '"', depth, within) +
      labelHtml("group", depth, title, toggle) + cells + "</div>";
  }

  function widestExpansion(task) {
    let widest = 0;
    for (const run of data.runs) widest = Math.max(widest, (instancesOf(run.run_id, task) || []).length);
    return widest;
  }

  function instanceRowsHtml(task, depth, within) {
    let html = "";
    const widest = widestExpansion(task);
    for (let i = 0; i < widest; i++) {
      const states = data.runs.map(function (r) { return (instancesOf(r.run_id, task) || [])[i]; });
      html += rowOpen("instance-row", ' data-task="' + esc(task) + '" data-map-index="' + i + '"', depth + 1, within) +
        labelHtml("instance", depth + 1, task + " [" + i + "]", "[" + i + "]") + cellsHtml(states, "") + "</div>";
    }
    return html;
  }

  /* Hide every row inside a collapsed group (the squares stay, so live events still land). */
  function applyCollapsed(rows) {
    for (const row of rows || root.querySelectorAll(".grid-row")) {
      const chain = (row.dataset.within || "").split(" ");
      row.hidden = chain.some(function (g) { return g && collapsed.has(g); });
    }
  }

  //: Rows drawn with the page's first frame: a screenful and some, wherever the grid is scrolled
  //: to (so a redraw keeps its place); the rest follow ROWS_PER_STEP at a time, after that frame.
  const ROW_HEIGHT = 18;
  const ROWS_PER_STEP = 120;
  let generation = 0; // a new render abandons the rows an earlier one had still to add
  let pending = new Set(); // tasks whose rows are still to come (their squares follow `data`)

  /* What the body's rows will be, in order: each a task (with its instance rows when expanded)
     or a group, with the groups it sits in. */
  function rowPlan(groups) {
    const within = new Map(); // row id -> enclosing group id
    const plan = [];
    groupsOfTask = new Map();
    for (const entry of rowList()) {
      within.set(entry.id, entry.group);
      const chain = [];
      for (let g = entry.group; g; g = within.get(g) || null) chain.push(g);
      const group = entry.kind === "group" ? groups.get(entry.id) : null;
      if (!group) groupsOfTask.set(entry.id, chain.slice().reverse());
      plan.push({ entry: entry, group: group, inside: chain.join(" ") });
    }
    return plan;
  }

  /* The HTML of planned rows, from `data` as it is now (live events may have changed it since
     the plan was made). */
  function planHtml(items) {
    let html = "";
    for (const item of items) {
      if (item.group) { html += groupRowHtml(item.group, item.entry.depth, item.inside); continue; }
      const id = item.entry.id;
      html += taskRowHtml(item.entry, item.inside);
      if (expanded.has(id) && isMapped(id)) html += instanceRowsHtml(id, item.entry.depth, item.inside);
    }
    return html;
  }

  /* Note the rows just added to the body (after `after`, or all of them). */
  function adopt(body, after) {
    const rows = [];
    for (let row = after ? after.nextElementSibling : body.firstElementChild; row; row = row.nextElementSibling) {
      rows.push(row);
      if (row.classList.contains("task-row")) { taskRows.set(row.dataset.task, row); pending.delete(row.dataset.task); }
      else if (row.classList.contains("group-row")) groupRows.set(row.dataset.group, row);
    }
    applyCollapsed(rows);
  }

  function render() {
    const groups = groupsById();
    const dates = labels();
    const mine = ++generation;
    colOf = new Map(data.runs.map(function (r, i) { return [r.run_id, i]; }));
    const plan = rowPlan(groups);
    const firstRows = Math.ceil((root.scrollTop + Math.max(root.clientHeight, window.innerHeight)) / ROW_HEIGHT) + 20;
    const first = plan.slice(0, firstRows);
    let rest = plan.slice(firstRows);
    pending = new Set();
    for (const item of rest) if (!item.group) pending.add(item.entry.id);
    let html = '<div class="gridtable' + (groups.size ? " grouped" : "") + '" id="gridtable">' +
      '<div class="grid-head"><div class="grid-corner"><span id="grid-scale" class="muted"></span>' +
      '<span class="corner-label">logical date (' + esc(hf.zoneLabel()) + ") \u2192</span></div>";
    data.runs.forEach(function (run, i) { html += headHtml(run, i, dates[i]); });
    html += '</div><div class="grid-body">' + planHtml(first) + "</div></div>";
    if (!data.tasks.length) html = '<p class="muted">This DAG has no tasks.</p>';
    else if (!data.runs.length) html += '<p class="muted">No runs' + (filtersOn() ? " match these filters." : " yet.") + "</p>";
    const scrolled = [root.scrollTop, root.scrollLeft];
    root.innerHTML = html;
    heads = Array.from(root.querySelectorAll(".run-col"));
    taskRows = new Map();
    groupRows = new Map();
    const body = root.querySelector(".grid-body");
    if (body) adopt(body, null);
    root.scrollTop = scrolled[0];
    root.scrollLeft = scrolled[1];
    const longestName = Math.max.apply(null, rowList().map(function (e) { return shortName(e.id, e.group).length + 2 * e.depth; }).concat([6]));
    root.style.setProperty("--label-width", Math.min(320, 24 + 7.3 * longestName) + "px");
    drawBars();
    markSelected();
    if (countLabel) {
      countLabel.textContent = "latest " + data.runs.length + " run" + (data.runs.length === 1 ? "" : "s") +
        (filtersOn() ? " matching" : "") + ", oldest left";
    }
    if (window.performance && performance.mark) performance.mark("hareflow:grid-rendered");
    const complete = function () {
      root.dataset.rendered = String(mine);
      if (window.performance && performance.mark) performance.mark("hareflow:grid-complete");
    };
    if (!body || !rest.length) { complete(); return; }
    root.dataset.rendered = "";
    /* The rows below the first screen, a step per task once the first frame is drawn. */
    const step = function () {
      if (mine !== generation) return;
      const items = rest.slice(0, ROWS_PER_STEP);
      rest = rest.slice(ROWS_PER_STEP);
      const last = body.lastElementChild;
      body.insertAdjacentHTML("beforeend", planHtml(items));
      adopt(body, last);
      markSelected();
      if (rest.length) setTimeout(step, 0); else complete();
    };
    requestAnimationFrame(function () { setTimeout(step, 0); });
  }

  // -- finding and changing squares --------------------------------------------------------------

  function cellAt(row, col) { return row ? row.children[col + 1] || null : null; }

  function instanceRow(task, index) {
    return root.querySelector('.instance-row[data-task="' + CSS.escape(task) + '"][data-map-index="' + index + '"]');
  }

  function setCell(cell, state) {
    if (!cell || cell.dataset.state === state) return;
    hf.setState(cell, state);
    cell.removeAttribute("title"); // rebuilt on the next hover
  }

  /* What a click or hover is about: {run, col} for a head, plus {task} / {group} / {index} for a square. */
  function locate(node) {
    const head = node.closest(".run-col");
    if (head) return { col: +head.dataset.col, run: head.dataset.run, head: head };
    const cell = node.closest(".cell");
    if (!cell || !root.contains(cell) || cell.classList.contains("blank")) return null;
    const row = cell.parentNode;
    const col = Array.prototype.indexOf.call(row.children, cell) - 1;
    const run = data.runs[col];
    if (!run) return null;
    const where = { col: col, run: run.run_id, cell: cell };
    if (row.dataset.group) where.group = row.dataset.group;
    else {
      where.task = row.dataset.task;
      if (row.dataset.mapIndex !== undefined) where.index = +row.dataset.mapIndex;
    }
    return where;
  }

  function cellTitle(where) {
    if (where.head) return runTitle(data.runs[where.col]);
    if (where.group) {
      const group = groupsById().get(where.group);
      return where.group + " \u00b7 " + groupStateIn(group, where.run) + " (" + group.tasks.length + " tasks)\n" + where.run;
    }
    if (where.index !== undefined) {
      return where.task + " [" + where.index + "] \u00b7 " + (instancesOf(where.run, where.task) || [])[where.index] + "\n" + where.run;
    }
    const instances = instancesOf(where.run, where.task);
    return where.task + " \u00b7 " + stateOf(where.run, where.task) +
      (instances ? " \u00b7 " + instances.length + " mapped" : "") + "\n" + where.run;
  }

  root.addEventListener("mouseover", function (event) {
    const where = locate(event.target);
    const node = where && (where.head || where.cell);
    if (node && !node.title) node.title = cellTitle(where);
  });

  root.addEventListener("click", function (event) {
    const groupToggle = event.target.closest(".group-toggle");
    if (groupToggle) return toggleGroup(groupToggle);
    const expandToggle = event.target.closest(".expand-toggle");
    if (expandToggle) return toggleExpanded(expandToggle.closest(".grid-row").dataset.task);
    openAt(locate(event.target));
  });

  function openAt(where) {
    if (!where) return;
    if (where.head) showRun(where.run);
    else if (where.group) showGroup(where.run, where.group);
    else if (where.index !== undefined) showTask(where.run, where.task, false, where.index);
    else if (instancesOf(where.run, where.task)) showMapped(where.run, where.task);
    else showTask(where.run, where.task);
  }

  /* The keyboard: the grid is one tab stop; the arrow keys move the selection from square to
     square (over hidden rows), Enter or Space on a run head opens it. */
  const MOVES = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
  root.addEventListener("keydown", function (event) {
    const head = event.target.closest(".run-col");
    if (head && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      showRun(head.dataset.run);
      return;
    }
    const move = MOVES[event.key];
    if (!move || !data.runs.length || event.target.closest("button")) return;
    event.preventDefault();
    const rows = Array.from(root.querySelectorAll(".grid-body .grid-row")).filter(function (r) { return !r.hidden; });
    const current = root.querySelector(".grid-body .cell.selected");
    let row = current ? rows.indexOf(current.parentNode) : -1;
    let col = current ? Array.prototype.indexOf.call(current.parentNode.children, current) - 1 : data.runs.length - 1;
    if (row < 0) row = 0;
    else {
      row = Math.max(0, Math.min(rows.length - 1, row + move[0]));
      col = Math.max(0, Math.min(data.runs.length - 1, col + move[1]));
    }
    const cell = cellAt(rows[row], col);
    if (!cell || cell.classList.contains("blank")) return;
    cell.scrollIntoView({ block: "nearest", inline: "nearest" });
    openAt(locate(cell));
  });

  function toggleGroup(toggle) {
    const id = toggle.dataset.group;
    const group = groupsById().get(id);
    if (collapsed.has(id)) collapsed.delete(id); else collapsed.add(id);
    collapsed.save();
    toggle.setAttribute("aria-expanded", String(!collapsed.has(id)));
    toggle.textContent = (collapsed.has(id) ? "\u25b8 " : "\u25be ") + shortName(id, group ? group.parent : null);
    applyCollapsed();
  }

  /* Show or hide a mapped task's instance rows, below its summary row (nothing else is redrawn). */
  function toggleExpanded(task) {
    const row = taskRows.get(task);
    if (!row) return;
    const toggle = row.querySelector(".expand-toggle");
    if (expanded.has(task)) {
      expanded.delete(task);
      root.querySelectorAll('.instance-row[data-task="' + CSS.escape(task) + '"]').forEach(function (r) { r.remove(); });
    } else {
      expanded.add(task);
      row.insertAdjacentHTML("afterend", instanceRowsHtml(task, +row.dataset.depth || 0, row.dataset.within || ""));
      applyCollapsed();
    }
    const open = expanded.has(task);
    toggle.setAttribute("aria-expanded", String(open));
    toggle.textContent = open ? "\u25be" : "\u25b8";
    toggle.title = (open ? "hide" : "show") + " the mapped instances";
    markSelected();
  }

  function markSelected() {
    root.querySelectorAll(".selected").forEach(function (n) { n.classList.remove("selected"); });
    if (!selected) return;
    const col = colOf.get(selected.run);
    if (col === undefined) return;
    let node;
    if (selected.group) node = cellAt(groupRows.get(selected.group), col);
    else if (selected.task && selected.index !== undefined && selected.index >= 0) node = cellAt(instanceRow(selected.task, selected.index), col);
    else if (selected.task) node = cellAt(taskRows.get(selected.task), col);
    else node = heads[col];
    if (node) node.classList.add("selected");
  }

  function refreshSelected() {
    if (!selected) return;
    if (selected.group) showGroup(selected.run, selected.group);
    else if (!selected.task) showRun(selected.run, true);
    else if (selected.summary) showMapped(selected.run, selected.task);
    else showTask(selected.run, selected.task, true, selected.index);
  }

  // -- refetching --------------------------------------------------------------------------------

  function currentFilters() {
    const params = new URLSearchParams(window.location.search);
    return {
      runs: params.get("runs") || String((data.filters || {}).limit || 25),
      run_type: params.get("run_type") || "",
      state: params.get("state") || "",
    };
  }

  function filtersOn() {
    const f = data.filters || {};
    return !!(f.run_type || f.state);
  }

  function jsonPath() {
    const f = currentFilters();
    const query = new URLSearchParams({ limit: f.runs, compact: "true" });
    if (f.run_type) query.set("run_type", f.run_type);
    if (f.state) query.set("state", f.state);
    return dagPath + "/grid?" + query.toString();
  }

  let fetching = false;
  let again = false;
  let timer = null;
  let lastFetch = 0;
  let backlog = null; // events that arrived while a refetch was under way
  let asked = new Set(); // runs whose unknown events asked for the refetch under way
  let failures = 0; // refetches that failed in a row

  async function refetch() {
    timer = null;
    if (fetching) { again = true; return; }
    fetching = true;
    again = false;
    lastFetch = Date.now();
    backlog = [];
    const askedFor = asked;
    asked = new Set();
    let failed = false;
    try {
      update(decode(await hf.api(jsonPath())));
      failures = 0;
      for (const run of askedFor) if (!colOf.has(run)) ignoredRuns.add(run);
      const missed = backlog;
      backlog = null;
      if (missed.length) apply(missed, true);
      refreshSelected();
    } catch (e) {
      failed = true;
      for (const run of askedFor) asked.add(run);
    } finally {
      backlog = null;
      fetching = false;
      if (failed) retryLater(); else if (again) refetchSoon();
    }
  }

  /* A refetch that failed (the server restarting, say) is tried again, 1 s, 2 s, ... up to 30 s
     later: the events it was for were dropped, and only the fresh data brings their changes. */
  function retryLater() {
    failures += 1;
    if (timer) clearTimeout(timer);
    timer = setTimeout(refetch, Math.min(30000, 1000 * Math.pow(2, failures - 1)));
  }

  /* What decides the grid's rows and columns: when a refetch keeps it, only squares are patched. */
  function shape(d) {
    const mappedLengths = d.runs.map(function (r) {
      return (d.mapped_tasks || []).map(function (t) { return ((d.mapped || {})[r.run_id] || {})[t] ? d.mapped[r.run_id][t].length : -1; }).join(",");
    });
    return JSON.stringify([d.runs.map(function (r) { return r.run_id; }), d.tasks, (d.rows || []).map(function (r) { return r.id; }),
      d.mapped_tasks, mappedLengths, d.groups, d.filters]);
  }

  /* Take fresh data: patch the squares and heads that differ, or redraw when the shape changed. */
  function update(fresh) {
    if (shape(fresh) !== shape(data)) {
      data = fresh;
      render();
      return;
    }
    data = fresh;
    data.runs.forEach(function (run, col) {
      const head = heads[col];
      if (head.dataset.state !== run.state) {
        hf.setState(head, run.state);
        hf.setState(head.firstChild, run.state);
      }
      head.removeAttribute("title");
      for (const [task, row] of taskRows) setCell(cellAt(row, col), stateOf(run.run_id, task));
      for (const [groupId, row] of groupRows) {
        const group = groupsById().get(groupId);
        if (group) setCell(cellAt(row, col), groupStateIn(group, run.run_id));
      }
      for (const task of expanded) {
        (instancesOf(run.run_id, task) || []).forEach(function (state, index) {
          setCell(cellAt(instanceRow(task, index), col), state);
        });
      }
    });
    drawBars();
    markSelected();
  }

  /* A refetch for what the grid cannot patch: soon, and at most one a second. */
  function refetchSoon() {
    if (fetching) { again = true; return; }
    if (timer) return;
    timer = setTimeout(refetch, Math.max(150, 1000 - (Date.now() - lastFetch)));
  }

  function resync() {
    if (timer) { clearTimeout(timer); timer = null; }
    refetch();
  }

  // -- live events -------------------------------------------------------------------------------

  /* Patch a task's square (or a mapped instance's, and its summary) and its groups' squares.
     Returns false when the grid has no square for it. */
  function applyTask(e) {
    const col = colOf.get(e.run_id);
    if (col === undefined) return false;
    const row = taskRows.get(e.task_id);
    if (!row && !pending.has(e.task_id)) return false;
    const states = (data.states[e.run_id] = data.states[e.run_id] || {});
    if (e.map_index >= 0) {
      const instances = instancesOf(e.run_id, e.task_id);
      if (!instances || e.map_index >= instances.length) return false; // just expanded: not known yet
      instances[e.map_index] = e.state;
      setCell(cellAt(instanceRow(e.task_id, e.map_index), col), e.state);
      states[e.task_id] = summaryState(instances);
    } else {
      states[e.task_id] = e.state;
    }
    setCell(cellAt(row, col), states[e.task_id]);
    for (const groupId of groupsOfTask.get(e.task_id) || []) {
      const group = groupsById().get(groupId);
      if (group) setCell(cellAt(groupRows.get(groupId), col), groupStateIn(group, e.run_id));
    }
    return true;
  }

  function applyRun(e) {
    const col = colOf.get(e.run_id);
    if (col === undefined) return false;
    const run = data.runs[col];
    const at = new Date(e.at * 1000).toISOString();
    if (e.state === "running" && !run.start_date) run.start_date = at;
    if (e.state === "queued") { run.queued_at = at; run.start_date = null; run.end_date = null; }
    if ((e.state === "success" || e.state === "failed") && !run.end_date) run.end_date = at;
    run.state = e.state;
    const head = heads[col];
    hf.setState(head, e.state);
    hf.setState(head.firstChild, e.state);
    head.removeAttribute("title");
    drawBars();
    // A grid filtered by run state lets a run go once it has left that state.
    if ((data.filters || {}).state && e.state !== data.filters.state) refetchSoon();
    return true;
  }

  function selectedTouched(e) {
    if (!selected || selected.run !== e.run_id) return false;
    if (e.kind === "run") return !selected.task && !selected.group;
    if (selected.group) return (groupsOfTask.get(e.task_id) || []).indexOf(selected.group) >= 0;
    return !selected.task || selected.task === e.task_id;
  }

  function apply(events, replay) {
    let refreshPanel = false;
    for (const e of events) {
      if (e.dag_id !== dagId) continue;
      if (e.kind === "dag") { refetchSoon(); continue; }
      if (e.kind !== "task" && e.kind !== "run") continue;
      if (backlog && !replay) { backlog.push(e); continue; }
      const known = colOf.has(e.run_id);
      const done = e.kind === "run" ? applyRun(e) : applyTask(e);
      if (done) {
        if (selectedTouched(e)) refreshPanel = true;
      } else if (!known && ignoredRuns.has(e.run_id) && (e.kind === "task" || replay)) {
        /* a run this view leaves out (filtered out, or older than the last N): nothing to show */
      } else {
        if (e.kind === "run") ignoredRuns.delete(e.run_id); // its state may now match the filters
        asked.add(e.run_id);
        refetchSoon();
      }
    }
    markSelected();
    if (refreshPanel) refreshSelected();
  }

  /* Running runs' bars grow while the page is open. */
  setInterval(function () {
    if (data.runs.some(function (r) { return ACTIVE_RUN.has(r.state); })) drawBars();
  }, 5000);

  // -- filters -----------------------------------------------------------------------------------

  if (form) {
    form.addEventListener("change", function () {
      const query = new URLSearchParams();
      for (const field of form.querySelectorAll("select")) if (field.value) query.set(field.name, field.value);
      const url = window.location.pathname + (query.toString() ? "?" + query.toString() : "");
      window.history.pushState(null, "", url);
      ignoredRuns = new Set();
      resync();
    });
    window.addEventListener("popstate", function () {
      const f = currentFilters();
      for (const field of form.querySelectorAll("select")) field.value = f[field.name] || (field.name === "runs" ? "25" : "");
      ignoredRuns = new Set();
      resync();
    });
  }

  // -- the detail panel --------------------------------------------------------------------------

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
      row("Run", hf.el("a", { href: dagPath + "/runs/" + hf.enc(runId) }, runId)),
      row("State", hf.badge(stateOf(runId, taskId))),
      row("Instances", String(instances.length)));
    for (const state of Object.keys(counts).sort()) table.append(row(state, String(counts[state])));
    const squares = hf.el("div", { class: "instance-squares" });
    instances.forEach(function (state, index) {
      const sq = hf.el("span", { class: "cell " + stateClass(state), title: "[" + index + "] " + state, role: "button", tabindex: "0" }, String(index));
      sq.dataset.mapIndex = String(index);
      sq.dataset.state = state;
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
    const page = runPath + "/tasks/" + hf.enc(taskId) + which;
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
      row("Run", hf.el("a", { href: runPath }, runId)),
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
      refetchSoon();
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
    if (!selected || selected.run !== runId || selected.task || selected.group) return;
    panel.replaceChildren(
      hf.el("h4", null, runId),
      hf.el("table", { class: "kv" },
        row("State", hf.badge(run.state)),
        row("Type", run.run_type),
        row("Logical date", hf.fmtDate(run.logical_date)),
        row("Queued", hf.fmtDate(run.queued_at)),
        row("Started", hf.fmtDate(run.start_date)),
        row("Ended", hf.fmtDate(run.end_date)),
        row("Duration", hf.fmtDuration(run.duration)),
        row("Triggered by", run.triggered_by || "")),
      hf.el("div", { class: "buttons" },
        hf.el("a", { class: "button primary", href: dagPath + "/runs/" + hf.enc(runId) }, "Run details")));
  }

  render();
  hf.live(["dag:" + dagId], function (events) { apply(events, false); }, resync);
})();
