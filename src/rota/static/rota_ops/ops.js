/* rota ops UI: API calls with the session, confirm and form modals, toasts,
   live refresh of lists, the runs table, the live log tail. No framework. */
(function () {
  "use strict";

  var S = JSON.parse((document.getElementById("ops-strings") || {}).textContent || "{}");
  var API_ROOT = document.body.dataset.apiRoot || "/";
  var notyf = window.Notyf ? new window.Notyf({ duration: 4000, position: { x: "right", y: "bottom" } }) : null;

  function t(key) { return S[key] || key; }

  function cookie(name) {
    var m = document.cookie.match("(?:^|; )" + name + "=([^;]*)");
    return m ? decodeURIComponent(m[1]) : "";
  }

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return cookie("csrftoken") || (input ? input.value : "");
  }

  function toast(kind, message) {
    if (notyf) { notyf.open({ type: kind === "error" ? "error" : "success", message: message }); }
  }

  /* A readable text from an error body: {"detail": "..."} or ninja's list. */
  function detailText(body, status) {
    var d = body && body.detail !== undefined ? body.detail : body;
    if (status === 401) { return t("unauthorized"); }
    if (Array.isArray(d)) {
      return d.map(function (e) {
        var loc = (e.loc || []).filter(function (p) { return p !== "body" && p !== "payload"; }).join(".");
        return (loc ? loc + ": " : "") + (e.msg || JSON.stringify(e));
      }).join("\n");
    }
    if (typeof d === "string") { return d; }
    return d ? JSON.stringify(d) : t("failed") + " (" + status + ")";
  }

  /* fetch with the session cookie and the CSRF header; resolves to the JSON
     body, rejects with {status, message}. Relative paths are API paths. */
  function call(method, url, body) {
    var full = /^\//.test(url) ? url : API_ROOT + url;
    var opts = {
      method: method,
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRFToken": csrfToken() }
    };
    if (body !== undefined && body !== null) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(full, opts).then(function (res) {
      return res.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text.slice(0, 500) }; }
        if (!res.ok) { throw { status: res.status, message: detailText(data, res.status) }; }
        return data;
      });
    }, function () { throw { status: 0, message: t("network_error") }; });
  }

  function showError(modal, message) {
    var box = modal.querySelector(".ops-modal-error");
    if (!box) { toast("error", message); return; }
    box.textContent = message;
    box.classList.remove("d-none");
  }

  function clearError(modal) {
    var box = modal.querySelector(".ops-modal-error");
    if (box) { box.textContent = ""; box.classList.add("d-none"); }
  }

  /* -- live refresh ------------------------------------------------------- */

  function refreshOne(el) {
    var url = el.dataset.opsRefresh;
    url += (url.indexOf("?") >= 0 ? "&" : "?") + "fragment=1";
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (res) { return res.ok ? res.text() : null; })
      .then(function (html) {
        if (html !== null && html !== el.dataset.opsLast) {
          el.innerHTML = html;
          el.dataset.opsLast = html;
          el.dispatchEvent(new CustomEvent("ops:refreshed", { bubbles: true }));
        }
      })
      .catch(function () { /* the next tick tries again */ });
  }

  function refreshAll() {
    document.querySelectorAll("[data-ops-refresh]").forEach(refreshOne);
    if (window.opsRunsTable) { window.opsRunsTable.ajax.reload(null, false); }
  }

  function startRefresh() {
    document.querySelectorAll("[data-ops-refresh]").forEach(function (el) {
      var every = parseInt(el.dataset.opsInterval || "5000", 10);
      setInterval(function () {
        if (document.hidden) { return; }
        refreshOne(el);
      }, every);
    });
  }

  /* -- the confirm modal: every operation ---------------------------------- */

  var confirmEl = document.getElementById("ops-confirm");
  var confirmModal = confirmEl && window.bootstrap ? new window.bootstrap.Modal(confirmEl) : null;
  var pending = null;

  function openConfirm(button) {
    var d = button.dataset;
    pending = button;
    clearError(confirmEl);
    confirmEl.querySelector("#ops-confirm-title").textContent = d.title || t("confirm");
    confirmEl.querySelector("#ops-confirm-text").textContent = d.text || "";
    var extra = confirmEl.querySelector("#ops-confirm-extra");
    extra.innerHTML = "";
    if (d.extra) {
      var tpl = document.querySelector(d.extra);
      if (tpl) { extra.appendChild(tpl.content.cloneNode(true)); }
      var values = d.extraValues ? JSON.parse(d.extraValues) : {};
      extra.querySelectorAll("[name]").forEach(function (input) {
        if (values[input.name] !== undefined) { input.value = values[input.name]; }
      });
      extra.querySelectorAll("[data-fill]").forEach(function (el) {
        el.textContent = values[el.dataset.fill] || "";
        el.closest("[data-fill-wrap]") && el.closest("[data-fill-wrap]").classList.toggle("d-none", !values[el.dataset.fill]);
      });
    }
    var go = confirmEl.querySelector("#ops-confirm-go");
    go.textContent = d.confirmLabel || t("confirm");
    go.className = "btn " + (d.danger ? "btn-danger" : "btn-primary");
    go.disabled = false;
    confirmModal.show();
  }

  function extraValues() {
    var out = {};
    confirmEl.querySelectorAll("#ops-confirm-extra [name]").forEach(function (input) {
      out[input.name] = input.value;
    });
    return out;
  }

  function runPending() {
    if (!pending) { return; }
    var d = pending.dataset;
    var body = d.payload ? JSON.parse(d.payload) : null;
    var extra = extraValues();
    if (Object.keys(extra).length) {
      body = Object.assign(body || {}, extra);
      if (extra.params !== undefined) {
        try { body.params = extra.params.trim() ? JSON.parse(extra.params) : {}; }
        catch (e) { showError(confirmEl, t("invalid_json") + ": params"); return; }
      }
    }
    var go = confirmEl.querySelector("#ops-confirm-go");
    go.disabled = true;
    call(d.method || "POST", d.url, body).then(function (data) {
      confirmModal.hide();
      toast("success", d.success || t("ok"));
      if (d.then === "reload") { window.location.reload(); return; }
      if (d.then === "goto" && data && data.run_id && d.runUrl) {
        window.location.href = d.runUrl.replace("RUN_ID", data.run_id); return;
      }
      refreshAll();
    }, function (err) {
      go.disabled = false;
      showError(confirmEl, err.message);
    });
  }

  if (confirmEl) {
    confirmEl.querySelector("#ops-confirm-go").addEventListener("click", runPending);
  }

  /* -- form modals: create and edit --------------------------------------- */

  function setField(form, name, value) {
    var input = form.querySelector("[name='" + name + "']");
    if (!input) { return; }
    var type = input.dataset.type || "str";
    if (input.type === "checkbox") { input.checked = !!value; return; }
    if (input.multiple) {
      Array.prototype.forEach.call(input.options, function (o) { o.selected = (value || []).indexOf(o.value) >= 0; });
      return;
    }
    if (type === "json") { input.value = JSON.stringify(value === undefined ? {} : value, null, 2); return; }
    if (type === "list") { input.value = (value || []).join(", "); return; }
    input.value = value === null || value === undefined ? "" : value;
  }

  function fillForm(form, values) {
    Object.keys(values).forEach(function (key) {
      var v = values[key];
      if (v && typeof v === "object" && !Array.isArray(v) && form.querySelector("[name^='" + key + ".']")) {
        Object.keys(v).forEach(function (sub) { setField(form, key + "." + sub, v[sub]); });
      } else {
        setField(form, key, v);
      }
    });
  }

  function readField(input) {
    var type = input.dataset.type || "str";
    var raw = input.value;
    if (input.type === "checkbox") { return input.checked; }
    if (input.tagName === "SELECT" && input.multiple) {
      return Array.prototype.filter.call(input.options, function (o) { return o.selected; })
        .map(function (o) { return o.value; });
    }
    if (type === "int") { return raw.trim() === "" ? undefined : parseInt(raw, 10); }
    if (type === "float") { return raw.trim() === "" ? undefined : parseFloat(raw); }
    if (type === "list") {
      return raw.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
    }
    if (type === "json") {
      if (!raw.trim()) { return {}; }
      try { return JSON.parse(raw); } catch (e) { throw { field: input.name, message: t("invalid_json") + ": " + input.name }; }
    }
    return raw;
  }

  /* The JSON body of a form: fields in a disabled fieldset are left out,
     "a.b" names nest, data-omit-empty leaves out empty strings. */
  function formBody(form) {
    var body = {};
    form.querySelectorAll("[name]").forEach(function (input) {
      if (input.disabled || input.closest("fieldset[disabled]") || input.name === "csrfmiddlewaretoken") { return; }
      if (input.dataset.skip) { return; }
      var value = readField(input);
      if (value === undefined) { return; }
      if (value === "" && input.dataset.omitEmpty !== undefined) { return; }
      var parts = input.name.split(".");
      var target = body;
      for (var i = 0; i < parts.length - 1; i++) {
        target[parts[i]] = target[parts[i]] || {};
        target = target[parts[i]];
      }
      target[parts[parts.length - 1]] = value;
    });
    return body;
  }

  function openForm(button) {
    var modalEl = document.querySelector(button.dataset.opsForm);
    var form = modalEl.querySelector("form");
    form.reset();
    clearError(modalEl);
    form.dataset.method = button.dataset.method || "POST";
    form.dataset.url = button.dataset.url;
    form.dataset.success = button.dataset.success || t("saved");
    var title = modalEl.querySelector(".modal-title");
    if (title && button.dataset.title) { title.textContent = button.dataset.title; }
    modalEl.querySelectorAll("[data-only-create]").forEach(function (el) {
      el.disabled = form.dataset.method !== "POST";
    });
    var values = button.dataset.values ? JSON.parse(button.dataset.values) : null;
    if (values) { fillForm(form, values); }
    form.dispatchEvent(new CustomEvent("ops:filled", { bubbles: true, detail: values }));
    window.bootstrap.Modal.getOrCreateInstance(modalEl).show();
  }

  function submitForm(form) {
    var modalEl = form.closest(".modal");
    clearError(modalEl);
    var body;
    try {
      body = formBody(form);
      if (form.dataset.prepare && window.opsPrepare && window.opsPrepare[form.dataset.prepare]) {
        body = window.opsPrepare[form.dataset.prepare](body, form);
      }
    } catch (err) { showError(modalEl, err.message || String(err)); return; }
    var submit = form.querySelector("[type=submit]");
    if (submit) { submit.disabled = true; }
    call(form.dataset.method || "POST", form.dataset.url, body).then(function () {
      if (submit) { submit.disabled = false; }
      window.bootstrap.Modal.getOrCreateInstance(modalEl).hide();
      toast("success", form.dataset.success || t("saved"));
      if (form.dataset.then === "reload") { window.location.reload(); return; }
      refreshAll();
    }, function (err) {
      if (submit) { submit.disabled = false; }
      showError(modalEl, err.message);
    });
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.matches("form[data-ops-submit]")) { ev.preventDefault(); submitForm(form); }
  });

  /* -- plain calls whose answer is shown on the page (Ping, GetStatus) ----- */

  function plainCall(button) {
    var out = document.querySelector(button.dataset.output);
    button.disabled = true;
    call(button.dataset.method || "POST", button.dataset.url, null).then(function (data) {
      button.disabled = false;
      if (out) { out.textContent = JSON.stringify(data, null, 2); out.classList.remove("d-none"); }
      toast("success", button.dataset.success || t("ok"));
    }, function (err) {
      button.disabled = false;
      if (out) { out.textContent = err.message; out.classList.remove("d-none"); }
      toast("error", err.message);
    });
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest("[data-ops-confirm], [data-ops-form], [data-ops-call]");
    if (!button) { return; }
    ev.preventDefault();
    if (button.dataset.opsConfirm !== undefined) { openConfirm(button); }
    else if (button.dataset.opsForm !== undefined) { openForm(button); }
    else { plainCall(button); }
  });

  /* -- theme --------------------------------------------------------------- */

  function applyTheme(theme) {
    var link = document.getElementById("ops-dark-css");
    if (link) { link.disabled = theme !== "dark"; }
    document.documentElement.dataset.opsTheme = theme;
  }

  var toggle = document.getElementById("ops-theme-toggle");
  if (toggle) {
    toggle.addEventListener("click", function () {
      var next = cookie("rota_ops_theme") === "dark" ? "light" : "dark";
      document.cookie = "rota_ops_theme=" + next + "; path=/; max-age=31536000; samesite=lax";
      applyTheme(next);
    });
  }
  if (cookie("rota_ops_theme")) { applyTheme(cookie("rota_ops_theme")); }

  /* -- the runs table: server-side DataTables ------------------------------ */

  function esc(s) {
    return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" }[c];
    });
  }

  function when(iso) {
    if (!iso) { return ""; }
    var d = new Date(iso);
    return "<span title=\"" + esc(iso) + "\">" + esc(d.toLocaleString()) + "</span>";
  }

  function countText(n, exact, cap) {
    if (exact) { return n.toLocaleString(); }
    if (n > cap + 1) { return t("about").replace("{n}", n.toLocaleString()); }
    return t("more_than").replace("{n}", cap.toLocaleString());
  }

  function runsTable(el) {
    var runUrl = el.dataset.runUrl;
    var filters = document.getElementById("ops-run-filters");
    var last = {};
    var table = new window.DataTable(el, {
      serverSide: true,
      processing: false,
      stateSave: true,
      stateDuration: 0,
      searchDelay: 400,
      pageLength: parseInt(el.dataset.pageLength || "25", 10),
      lengthMenu: [10, 25, 50, 100],
      order: [[0, "desc"]],
      ajax: {
        url: el.dataset.source,
        data: function (d) {
          if (filters) {
            filters.querySelectorAll("[name]").forEach(function (input) {
              if (input.value) { d[input.name] = input.value; }
            });
          }
        },
        dataSrc: function (json) { last = json; return json.data; },
        error: function (xhr) {
          var msg;
          try { msg = detailText(JSON.parse(xhr.responseText), xhr.status); } catch (e) { msg = t("failed"); }
          toast("error", msg);
        }
      },
      columns: [
        { data: "run_id", render: function (v) { return "<a class=\"ops-mono\" href=\"" + esc(runUrl.replace("RUN_ID", v)) + "\">" + esc(v) + "</a>"; } },
        { data: "job", render: esc },
        { data: "state", render: function (v, _t, row) {
          var badge = "<span class=\"badge ops-badge ops-state-" + esc(v) + "\">" + esc(v) + "</span>";
          // A failed attempt waiting for its next one: say when.
          if (row.retry_at) { badge += " <span class=\"ops-muted small ops-retrying\">" + esc(t("retrying at")) + " " + esc(new Date(row.retry_at).toLocaleTimeString()) + "</span>"; }
          return badge;
        } },
        { data: "worker_id", render: function (v) { return "<span class=\"ops-mono\">" + esc(v) + "</span>"; } },
        { data: "attempt", orderable: false },
        { data: "scheduled_for", render: when },
        { data: "started_at", render: when },
        { data: "finished_at", render: when },
        { data: "error_summary", orderable: false, render: function (v) { return "<span class=\"ops-error-text small\">" + esc(v) + "</span>"; } }
      ],
      infoCallback: function (settings, start, end, max, total) {
        if (!total) { return t("info_empty"); }
        var text = t("info")
          .replace("_START_", start.toLocaleString())
          .replace("_END_", end.toLocaleString())
          .replace("_TOTAL_", countText(total, last.exactFiltered !== false, last.countCap || 10000));
        if (last.recordsTotal !== undefined && last.recordsTotal !== total) {
          text += " " + t("info_filtered").replace("_MAX_", countText(last.recordsTotal, last.exactTotal !== false, last.countCap || 10000));
        }
        return text;
      },
      language: {
        search: t("search"),
        searchPlaceholder: t("search_placeholder"),
        lengthMenu: t("length_menu"),
        zeroRecords: t("zero_records"),
        emptyTable: t("info_empty"),
        loadingRecords: t("loading"),
        processing: t("processing"),
        paginate: { first: t("first"), last: t("last"), next: t("next"), previous: t("previous") }
      }
    });
    window.opsRunsTable = table;
    if (filters) {
      filters.addEventListener("change", function () { table.ajax.reload(); });
      filters.addEventListener("submit", function (ev) { ev.preventDefault(); table.ajax.reload(); });
    }
    var every = parseInt(el.dataset.refresh || "5000", 10);
    /* Live refresh in place: reload(null, false) keeps the page; search and order stay in the table's state. */
    setInterval(function () {
      if (!document.hidden) { table.ajax.reload(null, false); }
    }, every);
    return table;
  }

  /* -- the run page's live log tail (SSE) ---------------------------------- */

  function liveTail(el) {
    if (!el.dataset.tailUrl || !window.EventSource) { return; }
    var outs = { stdout: document.getElementById("ops-stdout"), stderr: document.getElementById("ops-stderr") };
    var badge = document.getElementById("ops-tail-state");
    var started = false;
    var source = new EventSource(el.dataset.tailUrl);
    if (badge) { badge.textContent = t("live_tail"); badge.classList.remove("d-none"); }
    source.addEventListener("log", function (ev) {
      var frame = JSON.parse(ev.data);
      var out = outs[frame.stream];
      if (!out) { return; }
      if (!started) { outs.stdout.textContent = ""; outs.stderr.textContent = ""; started = true; }
      out.textContent += frame.data;
      out.scrollTop = out.scrollHeight;
    });
    source.addEventListener("end", function () {
      source.close();
      if (badge) { badge.textContent = t("tail_ended"); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    startRefresh();
    var runs = document.getElementById("ops-runs-table");
    if (runs) { runsTable(runs); }
    var tail = document.getElementById("ops-logs");
    if (tail) { liveTail(tail); }
  });

  /* Stand-ins for inline handlers, which the Content-Security-Policy does not run:
     a select that submits its form on change, the runs filter's reset button. */
  document.addEventListener("change", function (ev) {
    var el = ev.target;
    if (el && el.matches && el.matches("[data-ops-autosubmit]") && el.form) { el.form.submit(); }
  });
  document.addEventListener("click", function (ev) {
    var el = ev.target && ev.target.closest ? ev.target.closest("[data-ops-reload-runs]") : null;
    if (el) {
      setTimeout(function () { if (window.opsRunsTable) { window.opsRunsTable.ajax.reload(); } }, 0);
    }
  });

  window.ops = { call: call, toast: toast, refreshAll: refreshAll, t: t };
})();
