/* hareflow: helpers every page shares (API calls with the CSRF header, safe DOM building,
   formatting) and the live connection (Socket.IO rooms, resync after every (re)connect, polling
   when the server has no event source). */
(function () {
  "use strict";

  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.getAttribute("content") : "";
  const STATES = new Set(["none", "scheduled", "queued", "running", "success", "failed", "up_for_retry",
    "up_for_reschedule", "upstream_failed", "skipped", "removed", "cancelled", "active", "stopping", "stopped", "lost"]);

  const hf = (window.hf = {});

  hf.enc = encodeURIComponent;

  /* Call /api/v1<path>; JSON bodies; the CSRF header on writes; throws Error(message) on failure. */
  hf.api = async function (path, opts) {
    opts = opts || {};
    const init = { method: opts.method || "GET", credentials: "same-origin", headers: { Accept: "application/json" } };
    if (opts.body !== undefined) {
      init.body = JSON.stringify(opts.body);
      init.headers["Content-Type"] = "application/json";
    }
    if (init.method !== "GET") init.headers["X-CSRF-Token"] = csrf;
    const response = await fetch("/api/v1" + path, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const error = new Error((data && data.error) || response.status + " " + response.statusText);
      error.status = response.status;
      throw error;
    }
    return data;
  };

  /* el("a", {href: "/x", class: "y"}, "text", child...) — text is always set as text, never HTML. */
  hf.el = function (tag, attrs) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === "dataset") Object.assign(node.dataset, value);
        else if (key === "onclick") node.addEventListener("click", value);
        else node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (let i = 2; i < arguments.length; i++) {
      const child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };

  hf.stateClass = function (state) { return "s-" + (STATES.has(state) ? state : "none"); };

  hf.setState = function (node, state) {
    for (const cls of Array.from(node.classList)) if (cls.startsWith("s-")) node.classList.remove(cls);
    node.classList.add(hf.stateClass(state));
    node.dataset.state = state || "none";
  };

  /* A task group's state: its most urgent member's (the rule of web/task_groups.py). */
  const GROUP_STATE_ORDER = ["failed", "upstream_failed", "up_for_retry", "running", "queued",
    "up_for_reschedule", "scheduled", "none", "removed", "skipped", "success"];
  hf.groupState = function (states) {
    const present = new Set(states.map(function (s) { return s || "none"; }));
    for (const state of GROUP_STATE_ORDER) if (present.has(state)) return state;
    return present.size ? Array.from(present).sort()[0] : "none";
  };

  /* The collapsed task groups of one view of one DAG, remembered in this browser. */
  hf.collapsedGroups = function (view, dagId) {
    const storageKey = "hareflow.collapsed." + view + "." + dagId;
    let saved = [];
    try { saved = JSON.parse(window.localStorage.getItem(storageKey) || "[]"); } catch (e) { saved = []; }
    const set = new Set(Array.isArray(saved) ? saved : []);
    set.save = function () {
      try { window.localStorage.setItem(storageKey, JSON.stringify(Array.from(set))); } catch (e) { /* private mode */ }
    };
    return set;
  };

  hf.badge = function (state) {
    const b = hf.el("span", { class: "badge " + hf.stateClass(state) }, state || "none");
    b.dataset.state = state || "none";
    return b;
  };

  /* Times: stored in UTC, shown in the zone picked in the header — "utc", "local" (the
     browser's) or "dag" (the DAG's timezone on a DAG's pages; a <time data-tz> names its own) —
     remembered in this browser. Every time shown carries its zone's label. */
  const ZONE_KEY = "hareflow.timezone";
  hf.zoneMode = function () {
    let mode = null;
    try { mode = window.localStorage.getItem(ZONE_KEY); } catch (e) { mode = null; }
    return mode === "local" || mode === "dag" ? mode : "utc";
  };
  const dagHeader = document.getElementById("dag-header");
  const pageDagZone = dagHeader && dagHeader.dataset.tz ? dagHeader.dataset.tz : null;
  const formats = {};

  function zoneFor(dagZone) {
    const mode = hf.zoneMode();
    if (mode === "local") return undefined;  /* Intl: the browser's own zone */
    if (mode === "dag") return dagZone || pageDagZone || "UTC";
    return "UTC";
  }

  hf.fmtDate = function (iso, dagZone) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return "";
    const zone = zoneFor(dagZone);
    if (zone === "UTC") return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
    const key = zone || "local";
    if (!formats[key]) {
      try {
        formats[key] = new Intl.DateTimeFormat("en-CA", {
          timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
          hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
        });
      } catch (e) {  /* a zone this browser does not know: UTC, labelled so */
        return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
      }
    }
    const p = {};
    for (const part of formats[key].formatToParts(d)) p[part.type] = part.value;
    return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second + " " + p.timeZoneName;
  };

  /* The label of the zone times are shown in ("UTC", "GMT+9", "CET"...), for column heads. */
  hf.zoneLabel = function (dagZone) {
    const shown = hf.fmtDate(new Date().toISOString(), dagZone);
    return shown.slice(20) || "UTC";
  };

  /* Server-rendered <time data-ts> elements (and those a live redraw brings) follow the zone;
     data-pinned ones keep the zone the server chose. The UTC time is always on hover. */
  function zoneTimes(root) {
    if (hf.zoneMode() === "utc") return;
    const nodes = root.querySelectorAll ? root.querySelectorAll("time[data-ts]") : [];
    for (const node of nodes) {
      const iso = node.getAttribute("datetime");
      const shown = hf.fmtDate(iso, node.dataset.tz);
      if (shown && node.textContent !== shown) {
        if (!node.title) node.title = new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC";
        node.textContent = shown;
      }
    }
  }
  zoneTimes(document);
  new MutationObserver(function (changes) {
    for (const change of changes) for (const node of change.addedNodes) if (node.nodeType === 1) zoneTimes(node);
  }).observe(document.body, { childList: true, subtree: true });

  const zoneSelect = document.getElementById("tz-select");
  if (zoneSelect) {
    zoneSelect.value = hf.zoneMode();
    zoneSelect.addEventListener("change", function () {
      try { window.localStorage.setItem(ZONE_KEY, zoneSelect.value); } catch (e) { /* private mode */ }
      window.location.reload();  /* every time on the page, scripts' included, in the new zone */
    });
  }

  hf.fmtDuration = function (seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    const m = Math.floor(seconds / 60), s = Math.floor(seconds % 60);
    if (m < 60) return m + "m " + String(s).padStart(2, "0") + "s";
    return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m " + String(s).padStart(2, "0") + "s";
  };

  /* Coalesce a burst of calls into one call of fn, ms after the first of them. Later calls in
     the burst do not push it back: under a steady stream of events (a busy backfill, a wide
     fan-out) the page still redraws every ms instead of waiting for the stream to stop. */
  hf.debounce = function (fn, ms) {
    let timer = null;
    return function () {
      if (timer) return;
      timer = setTimeout(function () { timer = null; fn(); }, ms);
    };
  };

  function setStatus(mode, title) {
    const dot = document.getElementById("live-status");
    if (!dot) return;
    dot.hidden = false;
    dot.classList.remove("on", "off", "poll");
    dot.classList.add(mode);
    dot.title = title;
  }

  /* Join rooms and call onEvents(list) for each batch of state events; call onResync() after
     every (re)connect (events may have been missed meanwhile), every 30 s as a safety net, and
     every 3 s when the server has no live event source. */
  hf.live = function (rooms, onEvents, onResync) {
    let pollTimer = null;
    const poll = function (ms) {
      if (pollTimer) clearInterval(pollTimer);
      pollTimer = setInterval(function () { onResync(); }, ms);
    };
    if (typeof window.io !== "function") {
      setStatus("poll", "live updates unavailable: refreshing every 3 s");
      poll(3000);
      return null;
    }
    const socket = window.io({ transports: ["websocket", "polling"], tryAllTransports: true, reconnectionDelayMax: 5000 });
    socket.on("connect", function () {
      socket.emit("join", { rooms: rooms }, function () { onResync(); });
    });
    socket.on("hello", function (info) {
      if (info && info.live) {
        setStatus("on", "live updates: connected");
        poll(30000);
      } else {
        setStatus("poll", "the server has no event source: refreshing every 3 s");
        poll(3000);
      }
    });
    socket.on("events", function (events) { if (Array.isArray(events)) onEvents(events); });
    socket.on("disconnect", function () { setStatus("off", "live updates: disconnected, reconnecting"); });
    socket.on("connect_error", function () { setStatus("off", "live updates: cannot connect, retrying"); });
    hf.socket = socket;
    return socket;
  };

  /* The banner that says no scheduler is running: checked against /health every 15 s, so it
     appears when the scheduler stops and goes away when it is back, without a reload. */
  const schedulerAlert = document.getElementById("scheduler-alert");
  if (schedulerAlert) {
    const checkScheduler = async function () {
      let report;
      try {
        const response = await fetch("/health", { credentials: "same-origin", headers: { Accept: "application/json" } });
        report = await response.json();
      } catch (e) {
        return;  /* the server is out of reach: the live dot says so */
      }
      const status = report && report.scheduler;
      if (!status || !report.database || !report.database.ok) return;
      if (status.ok) {
        schedulerAlert.hidden = true;
        return;
      }
      schedulerAlert.textContent = status.heartbeat_age === null || status.heartbeat_age === undefined
        ? "No scheduler has run against this metastore yet: nothing is scheduled until `hareflow scheduler` (or `hareflow standalone`) runs."
        : "The scheduler was last heard from " + hf.fmtDuration(status.heartbeat_age) +
          " ago: runs and tasks are not being scheduled. Check `hareflow health scheduler` and the scheduler's log.";
      schedulerAlert.hidden = false;
    };
    setInterval(checkScheduler, 15000);
  }

  /* Forms with data-confirm ask first. */
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
})();
