/* The trigger form: the conf is checked as JSON while typing (the server checks it again, and
   checks its keys against the DAG's params). */
(function () {
  "use strict";
  const form = document.getElementById("trigger-form");
  if (!form) return;
  const conf = document.getElementById("conf");
  const error = document.getElementById("conf-error");

  function check() {
    let message = "";
    const text = conf.value.trim();
    if (text) {
      try {
        const value = JSON.parse(text);
        if (value === null || typeof value !== "object" || Array.isArray(value)) message = "conf must be a JSON object";
      } catch (e) {
        message = "conf is not valid JSON: " + e.message;
      }
    }
    error.textContent = message;
    error.hidden = !message;
    conf.classList.toggle("invalid", Boolean(message));
    return !message;
  }

  conf.addEventListener("input", check);
  form.addEventListener("submit", function (event) { if (!check()) event.preventDefault(); });
})();
