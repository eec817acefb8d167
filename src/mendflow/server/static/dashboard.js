// mendflow dashboard: the token box and the action buttons. The pages are read-only; actions
// call the JSON API with `Authorization: Bearer <token>` and show the API's answer in #status.
(function () {
  "use strict";
  var KEY = "mendflow.token";
  var FLASH = "mendflow.flash";
  var api = document.body.getAttribute("data-api") || "/api";
  var status = document.getElementById("status");

  function show(text, kind) {
    status.textContent = text;
    status.setAttribute("data-kind", kind);
  }

  function stored() {
    try { return window.localStorage.getItem(KEY) || ""; } catch (e) { return ""; }
  }

  function showToken() {
    var state = document.getElementById("token-state");
    var set = stored() !== "";
    state.textContent = set ? "token set" : "read-only";
    state.setAttribute("data-set", set ? "yes" : "no");
  }

  async function post(path, body) {
    var headers = { "Content-Type": "application/json", "Accept": "application/json" };
    var token = stored();
    if (token) { headers.Authorization = "Bearer " + token; }
    var response;
    try {
      response = await fetch(api + path, {
        method: "POST", headers: headers, body: JSON.stringify(body),
        credentials: "same-origin", cache: "no-store",
      });
    } catch (err) {
      show("failed: the service did not answer (" + err.message + ")", "error");
      return null;
    }
    var data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) {
      var word = response.status === 401 || response.status === 403 ? "refused" : "failed";
      var why = (data && data.error) || response.statusText;
      var hint = response.status === 401 && !token ? " (type the API token above)" : "";
      show(word + ": " + response.status + " " + why + hint, "error");
      return null;
    }
    return data;
  }

  function pipelinePath(button) {
    return "/pipelines/" + encodeURIComponent(button.getAttribute("data-pipeline"));
  }

  function picked() {
    var boxes = document.querySelectorAll("input.pick:checked");
    return Array.prototype.map.call(boxes, function (box) { return Number(box.value); });
  }

  function replayed(data) {
    var text = "replayed: " + data.loaded + " loaded, " + data.failed + " failed, " +
      data.skipped + " skipped, " + data.poison + " poison";
    if (data.blocked && data.blocked.length) { text += "; blocked: " + data.blocked.join("; "); }
    return text;
  }

  async function replay(button, ids) {
    if (ids !== null && ids.length === 0) {
      show("nothing selected: tick the dead letters to replay", "error");
      return;
    }
    var data = await post(pipelinePath(button) + "/dead-letters/replay",
                          ids === null ? {} : { ids: ids });
    if (data === null) { return; }
    var text = replayed(data);
    var kind = data.failed || data.skipped || data.poison ? "error" : "ok";
    show(text, kind);
    // Reload so the list shows what is left; the answer stays on screen through the reload.
    try { window.sessionStorage.setItem(FLASH, JSON.stringify({ text: text, kind: kind })); }
    catch (e) { return; }
    window.setTimeout(function () { window.location.reload(); }, 700);
  }

  async function run(button) {
    var data = await post(pipelinePath(button) + "/run", {});
    if (data === null) { return; }
    var job = data.job || null;
    var name = button.getAttribute("data-pipeline");
    show(job ? "queued: a run of " + name + (job.job_id ? " (job " + job.job_id + ")" : "")
             : "queued already: a run of " + name + " is waiting for a worker", "ok");
  }

  async function act(button) {
    var action = button.getAttribute("data-action");
    button.disabled = true;
    try {
      if (action === "run") { await run(button); }
      else if (action === "replay") { await replay(button, [Number(button.getAttribute("data-ids"))]); }
      else if (action === "replay-selected") { await replay(button, picked()); }
      else if (action === "replay-all") { await replay(button, null); }
    } finally {
      button.disabled = false;
    }
  }

  document.getElementById("token-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = document.getElementById("token");
    var value = input.value.trim();
    if (value) {
      try { window.localStorage.setItem(KEY, value); } catch (e) { show("failed: this browser keeps no token", "error"); }
    }
    input.value = "";
    showToken();
    show(value ? "token saved in this browser" : "type a token first", value ? "ok" : "error");
  });
  document.getElementById("token-forget").addEventListener("click", function () {
    try { window.localStorage.removeItem(KEY); } catch (e) { /* nothing stored */ }
    showToken();
    show("token forgotten: the dashboard is read-only", "ok");
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (button) { act(button); }
  });

  showToken();
  try {
    var flash = window.sessionStorage.getItem(FLASH);
    if (flash) {
      window.sessionStorage.removeItem(FLASH);
      var saved = JSON.parse(flash);
      show(saved.text, saved.kind);
    }
  } catch (e) { /* no session storage */ }
})();
