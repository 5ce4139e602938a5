/* Doorstep tracking page: the conversation with the driver. The section works without this file (form posts);
   this polls the conversation every few seconds while the tab is visible and sends without a reload.
   Message text is only ever set as textContent: never HTML, never a link. Logs nothing. */
(function () {
  "use strict";

  var section = document.getElementById("messages");
  if (!section || !window.fetch) { return; }
  var url = section.getAttribute("data-messages-url");
  var you = section.getAttribute("data-you") || "You";
  var readWord = section.getAttribute("data-read") || "Read";
  var list = section.querySelector('[data-field="messages"]');
  var empty = section.querySelector('[data-field="messages_empty"]');
  var form = section.querySelector("form.compose");
  var lastShown = "";
  var POLL_MS = 2000;

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function render(data) {
    var messages = (data && data.messages) || [];
    var key = JSON.stringify(messages.map(function (m) { return [m.id, m.read_by.length]; }));
    if (key === lastShown) { return; }
    lastShown = key;
    while (list.firstChild) { list.removeChild(list.firstChild); }
    messages.forEach(function (m) {
      var mine = m.sender_role === "recipient";
      var li = document.createElement("li");
      li.className = "msg " + (mine ? "msg--mine" : "msg--theirs");
      var who = document.createElement("span");
      who.className = "msg-who";
      who.textContent = mine ? you : m.sender_name;
      var when = document.createElement("time");
      var at = new Date(m.sent_at);
      when.setAttribute("datetime", m.sent_at);
      when.textContent = pad(at.getHours()) + ":" + pad(at.getMinutes());
      li.appendChild(who);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(when);
      if (mine && m.read_by.length) {
        var read = document.createElement("span");
        read.className = "msg-read";
        read.textContent = " " + readWord;
        li.appendChild(read);
      }
      var text = document.createElement("p");
      text.className = "msg-text";
      text.textContent = m.text;
      li.appendChild(text);
      list.appendChild(li);
    });
    if (empty) { empty.hidden = messages.length > 0; }
    if (form && data && data.open === false) { form.hidden = true; }
  }

  var timer = null;
  function poll() {
    if (timer) { window.clearTimeout(timer); timer = null; }
    if (document.hidden) { timer = window.setTimeout(poll, POLL_MS * 5); return; }
    window.fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { render(data); } })
      .catch(function () { /* offline: try again later */ })
      .then(function () { timer = window.setTimeout(poll, POLL_MS); });
  }

  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = new URLSearchParams();
      var csrf = form.querySelector('input[name="csrf"]');
      var text = form.querySelector('textarea[name="text"]');
      body.set("csrf", csrf ? csrf.value : "");
      var submitter = event.submitter;
      if (submitter && submitter.name === "quick") {
        body.set("quick", submitter.value);
      } else {
        if (!text || !text.value.trim()) { return; }
        body.set("text", text.value);
      }
      window.fetch(url, { method: "POST", credentials: "same-origin", body: body,
                          headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.ok && text && !(submitter && submitter.name === "quick")) { text.value = ""; }
          poll();
        })
        .catch(function () { form.submit(); });
    });
  }
  poll();
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { poll(); } });
}());
