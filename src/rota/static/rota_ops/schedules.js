/* The schedule editor: cron or structured mode, the fields each 'every' shows.
   A file, not an inline script: the ops UI's Content-Security-Policy runs no inline code. */
(function () {
  var modal = document.getElementById("ops-schedule-modal");
  if (!modal) { return; }
  var mode = modal.querySelector("#sch-mode"), every = modal.querySelector("#sch-every");
  function sync() {
    var cron = mode.value === "cron";
    modal.querySelector("#sch-structured").disabled = cron;
    modal.querySelector("#sch-cron-wrap").disabled = !cron;
    modal.querySelectorAll("[data-every]").forEach(function (fs) {
      fs.disabled = cron || fs.dataset.every.split(" ").indexOf(every.value) < 0;
      fs.classList.toggle("d-none", fs.disabled);
    });
    modal.querySelector("#sch-cron-wrap").classList.toggle("d-none", !cron);
  }
  mode.addEventListener("change", sync);
  every.addEventListener("change", sync);
  modal.addEventListener("ops:filled", function (ev) {
    var v = ev.detail;
    mode.value = v && v.cron_expression && !v.structured ? "cron" : "structured";
    sync();
  });
  window.opsPrepare = window.opsPrepare || {};
  window.opsPrepare.schedule = function (body) {
    if (body.structured && body.structured.days && !body.structured.days.length) { delete body.structured.days; }
    return body;
  };
  sync();
})();
