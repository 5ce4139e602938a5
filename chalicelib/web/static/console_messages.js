/* Doorstep console: a driver's thread with dispatch, replies and broadcasts to the drivers on duty, through the
   /v1 merchant API with the console's session cookie and CSRF header. Text is only set as textContent. */
(function () {
  "use strict";

  var panel = document.getElementById("messages-panel");
  var body = document.body;
  if (!panel || !window.fetch) { return; }
  var API = body.getAttribute("data-api") || "";
  var CSRF = body.getAttribute("data-csrf") || "";
  var POLL_MS = 5000;
  var select = document.getElementById("cm-driver");
  var list = document.getElementById("cm-list");
  var status = document.getElementById("cm-status");

  function api(method, path, payload) {
    var headers = { "Accept": "application/json" };
    if (method !== "GET") { headers["X-CSRF-Token"] = CSRF; headers["Content-Type"] = "application/json"; }
    return window.fetch(API + path, {
      method: method, headers: headers, credentials: "same-origin", cache: "no-store",
      body: payload === undefined ? undefined : JSON.stringify(payload)
    }).then(function (r) { return r.json().then(function (d) { return { status: r.status, data: d }; }); });
  }
  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function render(thread) {
    while (list.firstChild) { list.removeChild(list.firstChild); }
    ((thread && thread.messages) || []).forEach(function (m) {
      var li = document.createElement("li");
      li.className = "msg " + (m.sender_role === "dispatch" ? "msg--mine" : "msg--theirs");
      var at = new Date(m.sent_at);
      var who = document.createElement("strong");
      who.textContent = m.sender_name + " " + pad(at.getHours()) + ":" + pad(at.getMinutes());
      li.appendChild(who);
      if (m.sender_role === "dispatch" && m.read_by.length) {
        li.appendChild(document.createTextNode(" \u00b7 " + panel.getAttribute("data-read")));
      }
      var p = document.createElement("p");
      p.textContent = m.text;
      li.appendChild(p);
      list.appendChild(li);
    });
  }

  var timer = null;
  function poll() {
    if (timer) { window.clearTimeout(timer); timer = null; }
    var driver = select.value;
    var next = function () { timer = window.setTimeout(poll, POLL_MS); };
    if (!driver) { render(null); next(); return; }
    api("GET", "/v1/drivers/" + encodeURIComponent(driver) + "/messages").then(function (r) {
      if (r.status === 200 && select.value === driver) { render(r.data); }
    }).catch(function () { /* offline: try again */ }).then(next);
  }

  api("GET", "/v1/drivers?limit=100").then(function (r) {
    ((r.data && r.data.items) || []).forEach(function (d) {
      var option = document.createElement("option");
      option.value = d.id;
      option.textContent = d.name;
      select.appendChild(option);
    });
    poll();
  });
  select.addEventListener("change", poll);
  document.getElementById("cm-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = document.getElementById("cm-text");
    if (!select.value || !text.value.trim()) { return; }
    api("POST", "/v1/drivers/" + encodeURIComponent(select.value) + "/messages", { text: text.value }).then(function (r) {
      if (r.status === 201) { text.value = ""; }
      status.textContent = r.status === 201 ? "" : ((r.data && r.data.error && r.data.error.message) || "");
      poll();
    });
  });
  document.getElementById("cm-broadcast").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = document.getElementById("cm-broadcast-text");
    if (!text.value.trim()) { return; }
    api("POST", "/v1/drivers/messages/broadcast", { text: text.value }).then(function (r) {
      if (r.status === 201) {
        text.value = "";
        status.textContent = panel.getAttribute("data-sent").split("{count}").join(String(r.data.driver_ids.length));
      } else {
        status.textContent = (r.data && r.data.error && r.data.error.message) || "";
      }
      poll();
    });
  });
}());
