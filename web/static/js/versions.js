/* The version picker of the graph and source pages: choosing a version shows it (the form is
   submitted; without JavaScript its button does the same). */
(function () {
  "use strict";
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", function () { select.form.submit(); });
  }
})();
