/* The DAG's Durations tab: each of the latest N runs as a bar (queued time hatched under its
   running time, coloured by the run's state), and below, one line per task over the same runs
   (the longest tasks by median first, or those the filter matches). A click opens that run (or the
   task instance, on the task chart). Run events refetch the data, so a finishing run appears. */
(function () {
  "use strict";
  const hf = window.hf;
  const root = document.getElementById("durations-view");
  if (!root || !hf || !hf.charts) return;
  const charts = hf.charts;
  const dagId = root.dataset.dag;
  const limit = Number(root.dataset.runs) || 25;
  const filterInput = document.getElementById("task-filter");
  const queuedToggle = document.getElementById("show-queued");
  const taskSummary = document.getElementById("task-summary");
  const MAX_LINES = 6;  // more lines than this are a tangle: the filter picks others
  const RUN_STATES = ["success", "failed", "running", "queued"];

  let data = JSON.parse(document.getElementById("durations-data").textContent);

  const runUrl = function (run) { return "/dags/" + hf.enc(dagId) + "/runs/" + hf.enc(run.run_id); };
  const labels = function () { return data.runs.map(function (r) { return charts.fmtShortDate(r.logical_date) || r.run_id; }); };
  const secondsAxis = function (title) {
    return { beginAtZero: true, title: { display: true, text: title }, ticks: { callback: function (v) { return charts.fmtSeconds(v); } } };
  };
  const dateAxis = function () {
    return {
      title: { display: true, text: "logical date (UTC)" },
      ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 12 }, grid: { display: false },
    };
  };

  function median(values) {
    const v = values.filter(function (x) { return x !== null && x !== undefined; }).sort(function (a, b) { return a - b; });
    if (!v.length) return -1;
    const mid = v.length >> 1;
    return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  }

  // -- runs ------------------------------------------------------------------------------------

  /* A finished run's duration; a running one's so far. */
  function runSeconds(run) {
    if (run.duration !== null && run.duration !== undefined) return run.duration;
    const start = run.start_date ? Date.parse(run.start_date) : NaN;
    return run.state === "running" && !isNaN(start) ? Math.max((Date.now() - start) / 1000, 0) : null;
  }

  function runDatasets() {
    const wait = charts.stateStyle("queued");
    const out = [{
      label: "queued", key: "queued", stack: "run",
      data: data.runs.map(function (r) { return r.queued; }),
      backgroundColor: wait.background, borderColor: wait.border, borderWidth: wait.width,
    }];
    const present = new Set(data.runs.map(function (r) { return r.state; }));
    const order = RUN_STATES.concat(Array.from(present).filter(function (s) { return !RUN_STATES.includes(s); }));
    for (const state of order) {
      if (!present.has(state) || state === "queued") continue;
      const style = charts.stateStyle(state);
      out.push({
        label: state, key: state, stack: "run",
        data: data.runs.map(function (r) { return r.state === state ? runSeconds(r) : null; }),
        backgroundColor: style.background, borderColor: style.border, borderWidth: style.width,
      });
    }
    return out;
  }

  const runChart = new window.Chart(document.getElementById("run-durations-chart"), {
    type: "bar",
    data: { labels: [], datasets: [] },
    options: {
      responsive: true, maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      datasets: { bar: { maxBarThickness: 28, categoryPercentage: 0.85, barPercentage: 0.95 } },
      scales: { x: Object.assign({ stacked: true }, dateAxis()), y: Object.assign({ stacked: true }, secondsAxis("seconds")) },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 14, boxHeight: 10, color: charts.ink } },
        tooltip: {
          filter: function (item) { return item.raw !== null && item.raw !== undefined; },
          callbacks: {
            title: function (items) { return items.length ? data.runs[items[0].dataIndex].run_id : ""; },
            beforeBody: function (items) {
              if (!items.length) return "";
              const run = data.runs[items[0].dataIndex];
              return ["state: " + run.state + " (" + run.run_type + ")", "logical date " + hf.fmtDate(run.logical_date) + " UTC"];
            },
            label: function (item) {
              return (item.dataset.key === "queued" ? "queued " : "ran ") + hf.fmtDuration(item.raw);
            },
          },
        },
      },
      onClick: function (event) {
        const hit = charts.clickedIndex(runChart, event) || nearestColumn(runChart, event);
        if (hit) window.location.href = runUrl(data.runs[hit.index]);
      },
      onHover: function (event, elements) { event.native.target.classList.toggle("clickable", elements.length > 0); },
    },
  });

  /* A click anywhere in a run's column (a short bar is hard to hit) counts as a click on it. */
  function nearestColumn(chart, event) {
    const hit = chart.getElementsAtEventForMode(event, "index", { intersect: false }, true);
    return hit.length ? { index: hit[0].index } : null;
  }

  // -- tasks -----------------------------------------------------------------------------------

  function shownTasks() {
    const needle = filterInput.value.trim().toLowerCase();
    const source = queuedToggle.checked ? data.task_queued : data.task_durations;
    const matching = data.tasks.filter(function (t) { return !needle || t.toLowerCase().includes(needle); });
    const ranked = matching.map(function (t) { return { task: t, median: median(source[t] || []) }; })
      .sort(function (a, b) { return b.median - a.median; });
    return { tasks: ranked.slice(0, MAX_LINES).map(function (r) { return r.task; }), matching: matching.length, source: source };
  }

  function taskDatasets() {
    const shown = shownTasks();
    const what = queuedToggle.checked ? "queued time" : "running time";
    taskSummary.textContent = data.tasks.length
      ? (shown.tasks.length < shown.matching
        ? shown.tasks.length + " of " + shown.matching + " matching tasks, longest median " + what + " first: filter to see others"
        : shown.tasks.length + " task" + (shown.tasks.length === 1 ? "" : "s") + ", " + what)
      : "no task has finished in these runs";
    return shown.tasks.map(function (task, i) {
      const series = charts.series(i);
      return {
        label: task, key: task,
        data: shown.source[task] || [],
        borderColor: series.color, backgroundColor: series.color, pointStyle: series.shape,
        pointRadius: data.runs.length > 50 ? 1.5 : 3.5, pointHitRadius: 6, pointHoverRadius: 6,
        borderWidth: 1.6, spanGaps: false, tension: 0,
      };
    });
  }

  const taskChart = new window.Chart(document.getElementById("task-durations-chart"), {
    type: "line",
    data: { labels: [], datasets: [] },
    options: {
      responsive: true, maintainAspectRatio: false,
      interaction: { mode: "nearest", intersect: true },
      scales: { x: dateAxis(), y: secondsAxis("seconds") },
      plugins: {
        legend: { position: "bottom", labels: { usePointStyle: true, boxWidth: 8, boxHeight: 8, color: charts.ink } },
        tooltip: {
          callbacks: {
            title: function (items) { return items.length ? data.runs[items[0].dataIndex].run_id : ""; },
            label: function (item) { return item.dataset.label + ": " + hf.fmtDuration(item.raw); },
          },
        },
      },
      onClick: function (event) {
        const hit = charts.clickedIndex(taskChart, event);
        if (!hit) return;
        const task = taskChart.data.datasets[hit.dataset].label;
        window.location.href = runUrl(data.runs[hit.index]) + "/tasks/" + hf.enc(task);
      },
      onHover: function (event, elements) { event.native.target.classList.toggle("clickable", elements.length > 0); },
    },
  });

  function draw() {
    runChart.data.labels = labels();
    runChart.data.datasets = runDatasets();
    runChart.update();
    taskChart.data.labels = labels();
    taskChart.data.datasets = taskDatasets();
    taskChart.update();
    root.dataset.points = String(data.runs.length);
  }

  filterInput.addEventListener("input", hf.debounce(function () {
    taskChart.data.datasets = taskDatasets();
    taskChart.update();
  }, 120));
  queuedToggle.addEventListener("change", function () {
    taskChart.data.datasets = taskDatasets();
    taskChart.options.scales.y.title.text = queuedToggle.checked ? "seconds queued" : "seconds";
    taskChart.update();
  });

  const resync = hf.debounce(async function () {
    try {
      data = await hf.api("/dags/" + hf.enc(dagId) + "/durations?limit=" + limit);
      draw();
    } catch (e) { /* the next event or the periodic resync retries */ }
  }, 500);

  function onEvents(events) {
    if (events.some(function (e) { return e.dag_id === dagId && e.kind === "run"; })) resync();
  }

  draw();
  hf.charts.runs = runChart;  // for tests and the console
  hf.charts.tasks = taskChart;
  hf.live(["dag:" + dagId], onEvents, resync);
})();
