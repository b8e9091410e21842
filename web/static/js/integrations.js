/* Connections: the form's hints follow the chosen type; the list's Test button shows its result in
   the row (the form post it replaces is the fallback without JavaScript). */
(function () {
  "use strict";

  const typeSelect = document.getElementById("conn_type");
  if (typeSelect) {
    const showHints = function () {
      const option = typeSelect.selectedOptions[0];
      let hints = {};
      try { hints = JSON.parse((option && option.dataset.hints) || "{}"); } catch (e) { hints = {}; }
      const fields = option && option.dataset.fields ? option.dataset.fields.split(",") : null;
      for (const node of document.querySelectorAll("[data-hint-for]")) {
        const hint = hints[node.dataset.hintFor];
        // A hint that only repeats the field's name ("host" for Host) says nothing.
        node.textContent = hint && hint.toLowerCase() !== node.dataset.hintFor ? "(" + hint + ")" : "";
      }
      for (const node of document.querySelectorAll("#connection-form [data-field]")) {
        node.hidden = fields !== null && !fields.includes(node.dataset.field);
      }
    };
    typeSelect.addEventListener("change", showHints);
    showHints();
  }

  for (const form of document.querySelectorAll("form.conn-test")) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const connId = form.dataset.conn;
      const out = document.querySelector('.test-result[data-result-for="' + CSS.escape(connId) + '"]');
      const button = form.querySelector("button");
      button.disabled = true;
      out.className = "test-result small muted";
      out.textContent = "testing…";
      try {
        const result = await window.hf.api("/connections/" + window.hf.enc(connId) + "/test", { method: "POST" });
        out.className = "test-result small " + (result.ok ? "test-ok" : "test-failed");
        out.textContent = (result.ok ? "✓ " : "✗ ") + result.message + " (" + result.seconds.toFixed(2) + " s)";
        out.dataset.ok = String(result.ok);
      } catch (error) {
        out.className = "test-result small test-failed";
        out.textContent = "✗ " + error.message;
        out.dataset.ok = "false";
      } finally {
        button.disabled = false;
      }
    });
  }
})();
