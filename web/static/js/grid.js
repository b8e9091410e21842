/* The grid view: runs as columns (oldest left), tasks as rows, a coloured square per task
   instance. Squares change colour as state events arrive; an unknown run or task means the grid
   is refetched from the API. Clicking a square shows its task instance beside the grid. */
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
  let selected = null; // {run, task} or {run}

  const key = function (run, task) { return run + "\u0000" + task; };
  const dagPath = "/dags/" + hf.enc(dagId);

  function render() {
    cells = new Map();
    heads = new Map();
    const table = hf.el("table", { class: "gridtable", id: "gridtable" });
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
    for (const task of data.tasks) {
      const row = hf.el("tr", null, hf.el("th", { class: "task", title: task }, task));
      for (const run of data.runs) {
        const state = (data.states[run.run_id] || {})[task] || "none";
        const c = hf.el("span", {
          class: "cell " + hf.stateClass(state),
          title: task + " \u00b7 " + state + "\n" + run.run_id,
          role: "button",
          tabindex: "0",
        });
        c.dataset.run = run.run_id;
        c.dataset.task = task;
        c.dataset.state = state;
        c.addEventListener("click", function () { showTask(run.run_id, task); });
        cells.set(key(run.run_id, task), c);
        row.append(hf.el("td", null, c));
      }
      body.append(row);
    }
    table.append(body);
    if (!data.tasks.length) {
      root.replaceChildren(hf.el("p", { class: "muted" }, "This DAG has no tasks."));
    } else if (!data.runs.length) {
      root.replaceChildren(table, hf.el("p", { class: "muted" }, "No runs yet."));
    } else {
      root.replaceChildren(table);
    }
    markSelected();
  }

  function markSelected() {
    root.querySelectorAll(".selected").forEach(function (n) { n.classList.remove("selected"); });
    if (!selected) return;
    const node = selected.task ? cells.get(key(selected.run, selected.task)) : heads.get(selected.run);
    if (node) node.classList.add("selected");
  }

  const refetch = hf.debounce(async function () {
    try {
      data = await hf.api(dagPath + "/grid?limit=" + hf.enc(runsShown));
      render();
      if (selected) (selected.task ? showTask(selected.run, selected.task, true) : showRun(selected.run, true));
    } catch (e) { /* the next event or resync tries again */ }
  }, 150);

  function onEvents(events) {
    let stale = false;
    let refreshPanel = false;
    for (const e of events) {
      if (e.dag_id !== dagId) continue;
      if (e.kind === "task") {
        const c = cells.get(key(e.run_id, e.task_id));
        if (!c) { stale = true; continue; }
        hf.setState(c, e.state);
        c.title = e.task_id + " \u00b7 " + e.state + "\n" + e.run_id;
        (data.states[e.run_id] = data.states[e.run_id] || {})[e.task_id] = e.state;
        if (selected && selected.run === e.run_id && (!selected.task || selected.task === e.task_id)) refreshPanel = true;
      } else if (e.kind === "run") {
        const h = heads.get(e.run_id);
        if (!h) { stale = true; continue; }
        hf.setState(h, e.state);
        if (selected && selected.run === e.run_id && !selected.task) refreshPanel = true;
      } else if (e.kind === "dag") {
        stale = true;
      }
    }
    if (stale) refetch();
    else {
      markSelected();
      if (refreshPanel) (selected.task ? showTask(selected.run, selected.task, true) : showRun(selected.run, true));
    }
  }

  function row(label, value) {
    return hf.el("tr", null, hf.el("th", null, label), hf.el("td", null, value === null || value === undefined ? "" : value));
  }

  async function showTask(runId, taskId, quiet) {
    selected = { run: runId, task: taskId };
    markSelected();
    const runPath = dagPath + "/runs/" + hf.enc(runId);
    const page = "/dags/" + hf.enc(dagId) + "/runs/" + hf.enc(runId) + "/tasks/" + hf.enc(taskId);
    let ti;
    try {
      ti = await hf.api(runPath + "/tasks/" + hf.enc(taskId));
    } catch (e) {
      if (!quiet) panel.replaceChildren(hf.el("h4", null, taskId), hf.el("p", { class: "muted" },
        e.status === 404 ? "Not created in this run yet." : e.message));
      return;
    }
    if (!selected || selected.run !== runId || selected.task !== taskId) return;
    const table = hf.el("table", { class: "kv" },
      row("Run", hf.el("a", { href: "/dags/" + hf.enc(dagId) + "/runs/" + hf.enc(runId) }, runId)),
      row("State", hf.badge(ti.state)),
      row("Try", ti.try_number + " of " + ti.max_tries),
      row("Started", hf.fmtDate(ti.start_date)),
      row("Ended", hf.fmtDate(ti.end_date)),
      row("Duration", hf.fmtDuration(ti.duration)),
      row("Host", ti.hostname || ""),
      row("Queue", ti.queue));
    const children = [hf.el("h4", null, taskId), table];
    if (ti.error) children.push(hf.el("pre", { class: "error-text" }, ti.error.slice(0, 2000)));
    const buttons = hf.el("div", { class: "buttons" }, hf.el("a", { class: "button primary", href: page }, "Log and details"));
    if (canOp) {
      buttons.append(
        hf.el("button", { type: "button", onclick: function () { act("clear", runId, taskId); } }, "Clear"),
        hf.el("button", { type: "button", class: "mark-success", onclick: function () { act("success", runId, taskId); } }, "Mark success"),
        hf.el("button", { type: "button", class: "mark-failed", onclick: function () { act("failed", runId, taskId); } }, "Mark failed"));
    }
    children.push(buttons, hf.el("p", { class: "small muted", id: "grid-action-status" }));
    panel.replaceChildren.apply(panel, children);
  }

  async function act(what, runId, taskId) {
    const base = dagPath + "/runs/" + hf.enc(runId) + "/tasks/" + hf.enc(taskId);
    const status = document.getElementById("grid-action-status");
    try {
      if (what === "clear") {
        if (!window.confirm("Clear " + taskId + " and its downstream tasks in this run? They run again.")) return;
        const r = await hf.api(base + "/clear", { method: "POST", body: { downstream: true } });
        status.textContent = "cleared " + (r.cleared.map(function (c) { return c.task_id; }).join(", ") || "nothing");
      } else {
        await hf.api(base, { method: "PATCH", body: { state: what } });
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
