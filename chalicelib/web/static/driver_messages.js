/* Doorstep driver app: messages with dispatch and each stop's recipient. Polls the unread counts and the open
   thread every few seconds; sends go through the app's persistent queue (driver.js), so a message written
   offline is sent, in order, once the phone is back online. Text is only ever set as textContent. Logs nothing. */
(function () {
  "use strict";

  var card = document.getElementById("dm");
  var main = document.getElementById("main");
  if (!card || !main || !window.fetch) { return; }
  var TOKEN = main.getAttribute("data-token");
  var API = main.getAttribute("data-api") || "";
  var POLL_MS = 2000;
  var select = document.getElementById("dm-thread");
  var list = document.getElementById("dm-list");
  var form = document.getElementById("dm-form");
  var text = document.getElementById("dm-text");
  var total = document.getElementById("dm-total");
  var words = {
    dispatch: card.getAttribute("data-dispatch"), unread: card.getAttribute("data-unread"),
    you: card.getAttribute("data-you"), read: card.getAttribute("data-read"), queued: card.getAttribute("data-queued")
  };
  var pending = [];  // sent from this screen, not yet seen in the thread (queued, or on its way)

  function get(path) {
    return window.fetch(API + path, {
      headers: { "Authorization": "Bearer " + TOKEN, "Accept": "application/json" },
      cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer"
    }).then(function (r) { return r.ok ? r.json() : null; });
  }
  function threadPath(shipmentId) {
    return shipmentId ? "/v1/driver/shipments/" + encodeURIComponent(shipmentId) + "/messages" : "/v1/driver/messages";
  }
  function unreadLabel(count) { return count ? " · " + words.unread.split("{count}").join(String(count)) : ""; }
  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function renderUnread(data) {
    var chosen = select.value, sum = data.dispatch;
    var options = [{ value: "", label: words.dispatch + unreadLabel(data.dispatch) }];
    data.stops.forEach(function (stop, i) {
      sum += stop.unread;
      options.push({ value: stop.shipment_id, label: (i + 1) + ". " + stopName(stop.shipment_id, i) + unreadLabel(stop.unread) });
      var row = document.querySelector('#stops li[data-shipment="' + stop.shipment_id + '"]');
      if (row) {
        var badge = row.querySelector(".dm-badge");
        if (!badge) { badge = document.createElement("span"); badge.className = "badge dm-badge"; row.appendChild(badge); }
        badge.textContent = stop.unread ? "✉ " + stop.unread : "";
        badge.hidden = !stop.unread;
      }
    });
    var same = select.options.length === options.length && options.every(function (o, i) {
      return select.options[i].value === o.value && select.options[i].textContent === o.label;
    });
    if (!same) {
      while (select.firstChild) { select.removeChild(select.firstChild); }
      options.forEach(function (o) {
        var option = document.createElement("option");
        option.value = o.value;
        option.textContent = o.label;
        select.appendChild(option);
      });
      select.value = chosen;
      if (select.value !== chosen) { select.value = ""; }
    }
    total.textContent = String(sum);
    total.hidden = !sum;
  }
  function stopName(shipmentId, i) {
    var row = document.querySelector('#stops li[data-shipment="' + shipmentId + '"] .stop-line span');
    return row ? row.textContent.replace(/^\d+\.\s*/, "").trim() : "#" + (i + 1);
  }

  var last = null;  // the open thread as last fetched: kept on screen while offline
  function renderThread(data) {
    last = data || last;
    data = last;
    var messages = (data && data.messages) || [];
    var ids = {};
    messages.forEach(function (m) { ids[m.text] = true; });
    pending = pending.filter(function (p) { return !ids[p.text]; });
    while (list.firstChild) { list.removeChild(list.firstChild); }
    messages.concat(pending.filter(function (p) { return p.thread === select.value; })).forEach(function (m) {
      var mine = m.sender_role === "driver";
      var li = document.createElement("li");
      li.className = "msg " + (mine ? "msg--mine" : "msg--theirs");
      var who = document.createElement("span");
      who.className = "msg-who";
      who.textContent = mine ? words.you : m.sender_name;
      li.appendChild(who);
      if (m.sent_at) {
        var at = new Date(m.sent_at), when = document.createElement("time");
        when.textContent = " " + pad(at.getHours()) + ":" + pad(at.getMinutes());
        li.appendChild(when);
      }
      var state = mine ? (m.queued ? words.queued : (m.read_by && m.read_by.length ? words.read : "")) : "";
      if (state) {
        var s = document.createElement("span");
        s.className = "msg-read";
        s.textContent = " " + state;
        li.appendChild(s);
      }
      var p = document.createElement("p");
      p.className = "msg-text";
      p.textContent = m.text;
      li.appendChild(p);
      list.appendChild(li);
    });
    if (form) { form.hidden = data && data.open === false; }
  }

  var timer = null;
  function poll() {
    if (timer) { window.clearTimeout(timer); timer = null; }
    if (document.hidden) { timer = window.setTimeout(poll, POLL_MS * 5); return; }
    var thread = select.value;
    Promise.all([get("/v1/driver/messages/unread"), get(threadPath(thread))]).then(function (answers) {
      if (answers[0]) { renderUnread(answers[0]); }
      if (answers[1] && select.value === thread) { renderThread(answers[1]); }
    }).catch(function () {
      renderThread(null);  // offline: what was shown, and what is queued
    }).then(function () { timer = window.setTimeout(poll, POLL_MS); });
  }

  function send(message) {
    message = (message || "").trim();
    if (!message || !window.doorstepQueue) { return; }
    var thread = select.value;
    pending.push({ sender_role: "driver", text: message, queued: true, thread: thread });
    window.doorstepQueue.enqueue({ type: "message", path: threadPath(thread), text: message, body: { status: "message" } })
      .then(function () { poll(); }, function () { poll(); });
    renderThread(null);
    poll();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    send(text.value);
    text.value = "";
  });
  Array.prototype.forEach.call(card.querySelectorAll(".dm-canned"), function (button) {
    button.addEventListener("click", function () { send(button.getAttribute("data-text")); });
  });
  select.addEventListener("change", function () { last = null; list.textContent = ""; poll(); });
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { poll(); } });
  poll();
}());
