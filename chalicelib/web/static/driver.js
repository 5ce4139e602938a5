/* Doorstep driver app: today's route, arrived / delivered / failed, and the phone's location.
   Everything the driver does (and every batch of location fixes) first goes into a persistent queue
   (IndexedDB, photos and signatures included), stamped with when it happened on the phone and with an
   Idempotency-Key; the queue is sent strictly in order, whenever the network allows. Network errors,
   5xx, 401, 408 and 429 keep an item (retried with backoff, at once when the browser says it is online);
   only another 4xx drops it, and the driver is told. Logs nothing. */
(function () {
  "use strict";

  var main = document.getElementById("main");
  if (!main) { return; }
  var TOKEN = main.getAttribute("data-token");
  var API = main.getAttribute("data-api") || "";
  var DRIVER = main.getAttribute("data-driver") || "driver";
  var LOCALE = main.getAttribute("data-locale") || "en";
  var PING_MS = 1000 * (parseInt(main.getAttribute("data-ping-seconds"), 10) || 15);
  var PING_BATCH = parseInt(main.getAttribute("data-ping-batch"), 10) || 20;
  var M = {};
  try { M = JSON.parse(main.getAttribute("data-messages") || "{}"); } catch (e) { M = {}; }
  var ACTIONABLE = { out_for_delivery: 1, approaching: 1, arrived: 1 };
  var ROUTE_KEY = "doorstep-route-" + DRIVER;
  var DROPPED_KEY = "doorstep-dropped-" + DRIVER;
  var MIN_FIX_GAP_MS = 2000;
  var MAX_PHOTO_BYTES = 10 * 1024 * 1024;
  var SHRINK_ABOVE_BYTES = 1536 * 1024;
  var SHRINK_TO_PX = 1600;

  function $(id) { return document.getElementById(id); }
  function t(key, params) {
    var text = M[key] || key;
    Object.keys(params || {}).forEach(function (name) { text = text.split("{" + name + "}").join(String(params[name])); });
    return text;
  }
  function plural(key, count) { return t(key + (count === 1 ? ".one" : ".other"), { count: count }); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }
  function uid() {
    if (window.crypto && window.crypto.randomUUID) { return window.crypto.randomUUID(); }
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }
  function statusLabel(status) { return M["driver.status." + status] || t("driver.status.other"); }

  // --- the persistent queue ---------------------------------------------------------------------
  // One object store, auto-increment keys: reading it back gives the items in the order they were made.
  var db = null, memory = [], memorySeq = 0, memoryOnly = false;

  function openDb() {
    return new Promise(function (resolve) {
      if (!window.indexedDB) { resolve(null); return; }
      var request;
      try { request = window.indexedDB.open("doorstep-driver-" + DRIVER, 1); } catch (e) { resolve(null); return; }
      request.onupgradeneeded = function () {
        request.result.createObjectStore("queue", { keyPath: "seq", autoIncrement: true });
      };
      request.onsuccess = function () { resolve(request.result); };
      request.onerror = function () { resolve(null); };
      request.onblocked = function () { resolve(null); };
    });
  }

  function store(mode, work) {
    return new Promise(function (resolve, reject) {
      var tx = db.transaction("queue", mode), result;
      var request = work(tx.objectStore("queue"));
      if (request) { request.onsuccess = function () { result = request.result; }; }
      tx.oncomplete = function () { resolve(result); };
      tx.onerror = tx.onabort = function () { reject(tx.error); };
    });
  }

  // Items that could not be stored (no IndexedDB, or it refused one, say when the phone is full) wait in
  // memory, after the stored ones; their seq is a string so they never collide with the store's keys.
  function memAdd(item) {
    memorySeq += 1;
    item.seq = "m" + memorySeq;
    memory.push(item);
    return Promise.resolve(item.seq);
  }
  function qAdd(item) {
    if (!db) { return memAdd(item); }
    return store("readwrite", function (s) { return s.add(item); }).catch(function () {
      memoryOnly = true;
      return memAdd(item);
    });
  }
  function qPut(item) {
    if (!db || typeof item.seq === "string") { return Promise.resolve(); }
    return store("readwrite", function (s) { return s.put(item); });
  }
  function qDelete(seq) {
    if (!db || typeof seq === "string") {
      memory = memory.filter(function (i) { return i.seq !== seq; });
      return Promise.resolve();
    }
    return store("readwrite", function (s) { return s.delete(seq); });
  }
  function qAll() {
    if (!db) { return Promise.resolve(memory.slice()); }
    return store("readonly", function (s) { return s.getAll(); }).then(function (items) {
      return items.concat(memory);
    });
  }

  var queued = [];  // a mirror of the queue for the screen (order, kinds, statuses)

  function refreshMirror() {
    return qAll().then(function (items) { queued = items; render(); }, function () { render(); });
  }

  function enqueue(item) {
    item.key = item.key || uid();
    item.created = new Date().toISOString();
    return qAdd(item).then(refreshMirror).then(function () { kick(true); });
  }

  // The messages card (driver_messages.js) queues its sends here, so they wait offline like the app's updates.
  window.doorstepQueue = { enqueue: function (item) { return enqueue(item); }, api: function (m, p, b) { return api(m, p, b); } };

  // --- talking to the API and to the bucket ----------------------------------------------------------
  var authBroken = false;

  function api(method, path, body, key) {
    var headers = { "Authorization": "Bearer " + TOKEN, "Accept": "application/json" };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; }
    if (key) { headers["Idempotency-Key"] = key; }
    return fetch(API + path, {
      method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer"
    }).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        return { status: response.status, data: data };
      });
    });
  }

  function firstReason(data) {
    var error = data && data.error;
    if (!error) { return ""; }
    var detail = error.details && error.details[0];
    return detail ? detail.field + ": " + detail.reason : error.message || "";
  }

  // What to do with an answer: done, retry later (kept), or drop (a definitive refusal, shown to the driver).
  function verdict(status, data) {
    if (status >= 200 && status < 300) { return { done: true }; }
    if (status === 401) { authBroken = true; return { retry: true }; }
    if (status === 408 || status === 429 || status >= 500 || status === 0) { return { retry: true }; }
    if (status === 404) { return { drop: t("driver.dropped.gone") }; }
    return { drop: t("driver.dropped.invalid", { reason: firstReason(data) || String(status) }) };
  }

  function uploadFile(item, file) {
    var path = "/v1/driver/shipments/" + encodeURIComponent(item.shipment_id) + "/proof-uploads";
    var size = file.blob.size;
    return api("POST", path, { kind: file.kind, content_type: file.type, size_bytes: size }).then(function (r) {
      var v = verdict(r.status, r.data);
      if (!v.done) { return v; }
      var upload = r.data, form = new FormData();
      Object.keys(upload.fields).forEach(function (name) { form.append(name, upload.fields[name]); });
      form.append("file", file.blob, file.kind + (file.type === "image/png" ? ".png" : ".jpg"));
      return fetch(upload.url, { method: "POST", body: form, credentials: "omit", referrerPolicy: "no-referrer" })
        .then(function (answer) {
          if (answer.ok) {
            file.key = upload.key;
            file.blob = null;  // stored in the bucket: the phone need not keep it
            return qPut(item).then(function () { return { done: true }; });
          }
          // 403: the presigned policy expired while we were away; ask for a new one next time
          if (answer.status === 403 || answer.status >= 500 || answer.status === 408 || answer.status === 429) {
            return { retry: true };
          }
          return { drop: t("driver.dropped.invalid", { reason: "upload " + answer.status }) };
        });
    });
  }

  // A delivery's custody steps go first, each once: the parcels scanned at the door, then the recipient's PIN
  // (checked by the server; a wrong or locked PIN drops the delivery and the driver is told).
  function sendCustody(item) {
    var base = "/v1/driver/shipments/" + encodeURIComponent(item.shipment_id);
    if (item.scans && item.scans.length && !item.scansSent) {
      var scan = { stage: "delivery", barcodes: item.scans, occurred_at: item.body.occurred_at };
      if (item.body.location) { scan.location = item.body.location; }
      return api("POST", base + "/scans", scan).then(function (r) {
        var v = verdict(r.status, r.data);
        if (!v.done) { return v; }
        item.scansSent = true;
        return qPut(item).then(function () { return null; });
      });
    }
    if (item.pin && !item.pinOk) {
      return api("POST", base + "/pin", { pin: item.pin }).then(function (r) {
        if (r.status === 429 && r.data && r.data.error && r.data.error.code === "pin_locked") {
          return { drop: t("driver.dropped.invalid", { reason: firstReason(r.data) }) };
        }
        var v = verdict(r.status, r.data);
        if (!v.done) { return v; }
        item.pinOk = true;
        delete item.pin;  // checked: the phone need not keep it
        return qPut(item).then(function () { return null; });
      });
    }
    return Promise.resolve(null);
  }

  function sendStatus(item) {
    if ((item.scans && item.scans.length && !item.scansSent) || (item.pin && !item.pinOk)) {
      return sendCustody(item).then(function (v) { return v || sendStatus(item); });
    }
    var files = item.files || [];
    var pending = files.filter(function (f) { return !f.key; });
    if (pending.length) {
      return uploadFile(item, pending[0]).then(function (v) { return v.done ? sendStatus(item) : v; });
    }
    var body = item.body;
    if (files.length) { body.proof_keys = files.map(function (f) { return f.key; }); }
    var path = "/v1/driver/shipments/" + encodeURIComponent(item.shipment_id) + "/status";
    return api("POST", path, body, item.key).then(function (r) {
      if (r.status === 409) {
        var match = /current status is (\w+)/.exec(firstReason(r.data));
        if (!match) { return { retry: true }; }  // it changed while we asked: ask again
        if (match[1] === body.status) { return { done: true }; }  // already so (e.g. the geofence saw the arrival)
        return { drop: t("driver.dropped.conflict", { status: statusLabel(match[1]) }) };
      }
      return verdict(r.status, r.data);
    });
  }

  function sendItem(item) {
    if (item.type === "message") {  // from driver_messages.js: a message, sent in order like everything else
      return api("POST", item.path, { text: item.text }, item.key).then(function (r) {
        return verdict(r.status, r.data);
      });
    }
    if (item.type === "pings") {
      return api("POST", "/v1/driver/pings", { pings: item.fixes }, item.key).then(function (r) {
        return verdict(r.status, r.data);
      });
    }
    return sendStatus(item);
  }

  // --- the sender: strictly in order, one item at a time -------------------------------------------
  var sending = false, again = false, timer = null, attempt = 0, lastTryFailed = false, ready = false;

  function kick(now) {
    if (!ready) { return; }  // the queue's database is still opening: it sends everything once open
    if (sending) { again = true; return; }
    if (timer && !now) { return; }
    if (timer) { window.clearTimeout(timer); timer = null; }
    drain();
  }

  function later() {
    attempt += 1;
    var delay = Math.min(60000, 1000 * Math.pow(2, attempt - 1)) * (0.5 + Math.random() / 2);
    timer = window.setTimeout(function () { timer = null; drain(); }, delay);
  }

  function drain() {
    if (sending) { again = true; return Promise.resolve(); }
    sending = true;
    again = false;
    render();
    var sentSomething = false;
    function step() {
      return qAll().then(function (items) {
        queued = items;
        if (!items.length) { return "empty"; }
        var item = items[0];
        return sendItem(item).then(function (v) {
          if (v.done || v.drop) {
            if (v.drop) { remember(item, v.drop); }
            if (v.done && item.type === "status") {
              sentStatus[item.shipment_id] = { status: item.body.status, at: Date.now() };
            }
            return qDelete(item.seq).then(function () {
              attempt = 0; lastTryFailed = false; authBroken = authBroken && !v.done; sentSomething = true;
              queued = queued.filter(function (q) { return q.seq !== item.seq; });
              render();
              return step();
            });
          }
          return "retry";
        }, function () { return "retry"; });  // network error: fetch rejected
      });
    }
    return step().then(function (outcome) {
      sending = false;
      if (outcome === "retry") { lastTryFailed = true; later(); } else { attempt = 0; lastTryFailed = false; }
      if (sentSomething) { loadRoute(); }
      return refreshMirror();
    }, function () {
      sending = false; lastTryFailed = true; later(); render();
    }).then(function () { if (again) { kick(true); } });
  }

  // --- dropped items: kept on the phone until the driver dismisses them ----------------------------
  function dropped() {
    try { return JSON.parse(window.localStorage.getItem(DROPPED_KEY) || "[]"); } catch (e) { return []; }
  }
  function saveDropped(list) {
    try { window.localStorage.setItem(DROPPED_KEY, JSON.stringify(list.slice(-20))); } catch (e) { /* full */ }
  }
  function remember(item, reason) {
    var what = item.type === "pings" ? "GPS" : statusLabel(item.body.status);
    var list = dropped();
    list.push({ id: item.key, text: t("driver.dropped", { what: what, number: stopNumber(item.shipment_id), reason: reason }) });
    saveDropped(list);
  }

  // --- the route -----------------------------------------------------------------------------------
  var route = null, routeIsCached = false, chosen = null, sentStatus = {};
  try { route = JSON.parse(window.localStorage.getItem(ROUTE_KEY) || "null"); routeIsCached = !!route; } catch (e) { route = null; }

  function loadRoute() {
    var asked = Date.now();
    return api("GET", "/v1/driver/route").then(function (r) {
      if (r.status === 200 && r.data) {
        route = r.data;
        routeIsCached = false;
        authBroken = false;
        // what was sent before this answer was asked for is in it; what was sent since may not be yet
        Object.keys(sentStatus).forEach(function (sid) { if (sentStatus[sid].at < asked) { delete sentStatus[sid]; } });
        try { window.localStorage.setItem(ROUTE_KEY, JSON.stringify(route)); } catch (e) { /* full */ }
        // Every stop done: the route completes and ends the shift; ask, so location sharing stops then.
        if (onDuty && stops().length && !currentStop()) { reportStatus(); }
      } else if (r.status === 401) {
        authBroken = true;
      }
      render();
    }, function () { routeIsCached = !!route; render(); });
  }

  // The status the driver sees: what is waiting in the queue wins over what was sent, over the server's.
  function effectiveStatus(stop) {
    var status = sentStatus[stop.shipment_id] ? sentStatus[stop.shipment_id].status : stop.status;
    queued.forEach(function (item) {
      if (item.type === "status" && item.shipment_id === stop.shipment_id) { status = item.body.status; }
    });
    return status;
  }
  function isPending(stop) {
    return queued.some(function (item) { return item.type === "status" && item.shipment_id === stop.shipment_id; });
  }
  function stops() { return route && route.stops ? route.stops : []; }
  function stopNumber(sid) {
    var list = stops();
    for (var i = 0; i < list.length; i += 1) { if (list[i].shipment_id === sid) { return i + 1; } }
    return "?";
  }
  function currentStop() {
    var list = stops(), i;
    if (chosen) {
      for (i = 0; i < list.length; i += 1) {
        if (list[i].shipment_id === chosen && ACTIONABLE[effectiveStatus(list[i])]) { return list[i]; }
      }
      chosen = null;
    }
    for (i = 0; i < list.length; i += 1) { if (ACTIONABLE[effectiveStatus(list[i])]) { return list[i]; } }
    return null;
  }

  var timeFormat = null;
  function clock(iso) {
    try {
      if (!timeFormat) {
        timeFormat = new Intl.DateTimeFormat(LOCALE, { hour: "numeric", minute: "2-digit", timeZone: route.time_zone });
      }
      return timeFormat.format(new Date(iso));
    } catch (e) { return String(iso).slice(11, 16); }
  }
  function span(a, b) { return clock(a) + "–" + clock(b); }

  // --- rendering ---------------------------------------------------------------------------------------
  function renderSync() {
    var sync = $("sync"), text, state;
    var count = queued.length;  // fixes not yet batched are not "waiting": they join the queue every few seconds
    var online = navigator.onLine !== false;
    if (!online) { state = "offline"; text = t("driver.sync.offline") + (count ? " · " + plural("driver.sync.waiting", count) : ""); }
    else if (sending && count) { state = "sending"; text = t("driver.sync.sending"); }
    else if (count) { state = "waiting"; text = plural("driver.sync.waiting", count); }
    else { state = "sent"; text = t("driver.sync.all_sent"); }
    sync.setAttribute("data-state", state);
    sync.setAttribute("data-queue", String(queued.length));
    $("sync-text").textContent = text;
    var detail = [count ? plural("driver.sync.waiting", count) : t("driver.sync.all_sent")];
    if (count && lastTryFailed && online) { detail.push(t("driver.sync.retry")); }
    if (authBroken) { detail.push(t("driver.sync.auth")); }
    if (memoryOnly) { detail.push(t("driver.sync.memory_only")); }
    $("queue-text").textContent = detail.join(" ");
    $("send-now").hidden = !queued.length;
  }

  function renderAlerts() {
    var box = $("alerts");
    box.textContent = "";
    dropped().forEach(function (entry) {
      var row = el("div", "alert");
      row.setAttribute("role", "alert");
      row.appendChild(el("p", "", entry.text));
      var dismiss = el("button", "btn btn--secondary", t("driver.sync.dismiss"));
      dismiss.type = "button";
      dismiss.addEventListener("click", function () {
        saveDropped(dropped().filter(function (d) { return d.id !== entry.id; }));
        renderAlerts();
      });
      row.appendChild(dismiss);
      box.appendChild(row);
    });
  }

  function addressLines(address) {
    var city = [address.postal_code, address.city].filter(Boolean).join(" ");
    return [address.line1, address.line2, city].filter(Boolean);
  }

  function renderNext() {
    var body = $("next-body"), stop = currentStop(), list = stops();
    body.textContent = "";
    $("nav").hidden = $("actions").hidden = !stop;
    if (!route) { body.appendChild(el("p", "", t("driver.next.loading"))); return; }
    if (!stop) {
      body.appendChild(el("p", "", t(list.length ? "driver.next.done" : "driver.next.none")));
      return;
    }
    var status = effectiveStatus(stop);
    body.appendChild(el("p", "muted", t("driver.stop.of", { number: stopNumber(stop.shipment_id), total: list.length })));
    body.appendChild(el("p", "stop-name", stop.recipient_first_name || "—"));
    var addr = el("p", "stop-address");
    addressLines(stop.address).forEach(function (line, i) {
      if (i) { addr.appendChild(document.createElement("br")); }
      addr.appendChild(document.createTextNode(line));
    });
    body.appendChild(addr);
    var facts = el("ul", "stop-facts");
    var badge = el("span", "badge badge--" + status, isPending(stop) ? t("driver.stop.pending", { status: statusLabel(status) }) : statusLabel(status));
    var li = el("li");
    li.appendChild(badge);
    facts.appendChild(li);
    if (stop.time_window) { facts.appendChild(el("li", "", t("driver.stop.window", { window: span(stop.time_window.start, stop.time_window.end) }))); }
    if (stop.eta) {
      // Bounded and same-day on the server (geo/day_window.py); labelled with its zone, or "later today".
      var etaWindow = stop.eta.later_today ? t("driver.stop.eta_later_today")
        : span(stop.eta.earliest, stop.eta.latest) + (stop.eta.zone_label ? " " + stop.eta.zone_label : "");
      // Before the promised window opens: the merchant's early_arrival says whether to deliver or wait.
      facts.appendChild(el("li", "", t(stop.eta.early ? "driver.stop.eta_early" : "driver.stop.eta", { window: etaWindow })));
    }
    body.appendChild(facts);
    var notes = el("ul", "notes"), given = stop.recipient_instructions;
    if (given && given.gate_code) { notes.appendChild(el("li", "", t("driver.stop.gate_code", { code: given.gate_code }))); }
    if (given && given.leave_at_door) { notes.appendChild(el("li", "", t("driver.stop.leave_at_door"))); }
    if (given && given.note) { notes.appendChild(el("li", "", t("driver.stop.recipient_note", { note: given.note }))); }
    if (stop.instructions) { notes.appendChild(el("li", "", t("driver.stop.merchant_note", { note: stop.instructions }))); }
    if (notes.childNodes.length) { body.appendChild(notes); }
    var lat = stop.location.lat, lng = stop.location.lng;
    $("nav-google").href = "https://www.google.com/maps/dir/?api=1&destination=" + lat + "," + lng;
    $("nav-geo").href = "geo:" + lat + "," + lng + "?q=" + lat + "," + lng;
    $("btn-arrived").disabled = status === "arrived";
    main.setAttribute("data-current", stop.shipment_id);
  }

  function renderStops() {
    var list = $("stops"), all = stops(), current = currentStop(), done = 0;
    list.textContent = "";
    all.forEach(function (stop, i) {
      var status = effectiveStatus(stop);
      if (!ACTIONABLE[status] && status !== "assigned") { done += 1; }
      var item = el("li", current && current.shipment_id === stop.shipment_id ? "is-current" : "");
      item.setAttribute("data-shipment", stop.shipment_id);
      var line = el("div", "stop-line");
      line.appendChild(el("span", "", (i + 1) + ". " + (stop.recipient_first_name || "—") + " · " + (stop.address.line1 || "") + " "));
      line.appendChild(el("span", "badge badge--" + status, isPending(stop) ? t("driver.stop.pending", { status: statusLabel(status) }) : statusLabel(status)));
      item.appendChild(line);
      if (ACTIONABLE[status] && !(current && current.shipment_id === stop.shipment_id)) {
        var show = el("button", "btn btn--secondary", String(i + 1));
        show.type = "button";
        show.setAttribute("aria-label", t("driver.stop.show", { number: i + 1 }));
        show.addEventListener("click", function () { chosen = stop.shipment_id; closeForms(); render(); $("next").scrollIntoView(); });
        item.appendChild(show);
      }
      list.appendChild(item);
    });
    var summary = all.length ? t("driver.route.summary", { done: done, total: all.length }) : "";
    if (routeIsCached) { summary = (summary ? summary + " " : "") + t("driver.route.cached"); }
    $("route-summary").textContent = summary;
  }

  function render() {
    renderSync();
    renderAlerts();
    renderNext();
    renderStops();
  }

  var toastTimer = null;
  function toast(text) {
    var box = $("toast");
    box.textContent = text;
    box.hidden = false;
    window.clearTimeout(toastTimer);
    toastTimer = window.setTimeout(function () { box.hidden = true; }, 6000);
  }

  // --- location: batched pings -------------------------------------------------------------------
  var fixes = [], lastFix = null, lastFixMs = 0;

  function round(value, digits) { var f = Math.pow(10, digits); return Math.round(value * f) / f; }

  function onPosition(position) {
    var c = position.coords, at = position.timestamp || Date.now();
    if (at - lastFixMs < MIN_FIX_GAP_MS) { return; }
    lastFixMs = at;
    var fix = { lat: round(c.latitude, 6), lng: round(c.longitude, 6), fix_time: new Date(at).toISOString() };
    if (isFinite(c.accuracy) && c.accuracy >= 0) { fix.accuracy = round(Math.min(c.accuracy, 100000), 1); }
    if (c.speed !== null && isFinite(c.speed) && c.speed >= 0 && c.speed <= 150) { fix.speed = round(c.speed, 2); }
    if (c.heading !== null && isFinite(c.heading) && c.heading >= 0 && c.heading <= 360) { fix.heading = round(c.heading, 1); }
    if (c.altitude !== null && isFinite(c.altitude) && c.altitude > -1000 && c.altitude < 20000) { fix.altitude = round(c.altitude, 1); }
    lastFix = fix;
    fixes.push(fix);
    $("gps-text").textContent = t("driver.gps.ok", { accuracy: Math.round(c.accuracy || 0) });
    gpsOff(null);
    if (fixes.length >= PING_BATCH) { flushFixes(); } else { renderSync(); }
  }

  // Location off (denied or missing): a red header and a banner at the top; cleared by the next fix.
  function gpsOff(messageKey) {
    var alert = $("gps-alert");
    $("bar").setAttribute("data-gps", messageKey ? "off" : "on");
    alert.textContent = messageKey ? t(messageKey) : "";
    alert.hidden = !messageKey;
  }

  function onPositionError(error) {
    var denied = error && error.code === 1;
    $("gps-text").textContent = t(denied ? "driver.gps.denied" : "driver.gps.waiting");
    if (denied) { gpsOff("driver.gps.denied"); }
  }

  // Into the queue (it is sent from there): before any action, so positions keep their order with it.
  function flushFixes() {
    if (!fixes.length) { return Promise.resolve(); }
    var batch = fixes;
    fixes = [];
    return enqueue({ type: "pings", fixes: batch });
  }

  function hereNow() {
    if (!lastFix || Date.now() - lastFixMs > 5 * 60 * 1000) { return undefined; }
    return { lat: lastFix.lat, lng: lastFix.lng };
  }

  // --- actions ---------------------------------------------------------------------------------------
  function queueStatus(stop, body, files, messageKey, custody) {
    body.occurred_at = new Date().toISOString();
    var here = hereNow();
    if (here) { body.location = here; }
    return flushFixes().then(function () {
      var item = { type: "status", shipment_id: stop.shipment_id, body: body, files: files || [] };
      if (custody && custody.pin) { item.pin = custody.pin; }
      if (custody && custody.scans.length) { item.scans = custody.scans; }
      return enqueue(item);
    }).then(function () {
      toast(t(messageKey) + (navigator.onLine === false ? " " + t("driver.queued.offline") : ""));
      chosen = null;
      render();
    });
  }

  function closeForms() {
    stopCamera();
    $("deliver").hidden = true;
    $("fail").hidden = true;
    $("actions").hidden = !currentStop();
  }

  // --- chain of custody: what this stop requires travels with the route (cached), so it is asked offline too ----
  var scanned = {}, scanStream = null, scanTimer = null;

  function needs(stop) { return (stop && stop.requirements) || []; }

  function renderScans(stop) {
    var list = $("scan-list");
    list.textContent = "";
    Object.keys(scanned).forEach(function (code) {
      var ours = (stop.parcels || []).indexOf(code) >= 0;
      var row = el("li", ours ? "" : "error", t(ours ? "driver.custody.scanned" : "driver.custody.not_ours", { code: code }));
      row.setAttribute("data-code", code);
      list.appendChild(row);
    });
  }

  function addScan(code) {
    var stop = currentStop();
    code = String(code || "").trim();
    if (!stop || !code || !/^[\x21-\x7e]{1,64}$/.test(code)) { return; }
    scanned[code] = true;
    renderScans(stop);
  }

  function stopCamera() {
    if (scanTimer) { window.clearInterval(scanTimer); scanTimer = null; }
    if (scanStream) { scanStream.getTracks().forEach(function (track) { track.stop(); }); scanStream = null; }
    $("scan-video").hidden = true;
  }

  // The browser's own barcode reader where there is one (Chrome on Android); elsewhere the driver types it.
  $("scan-camera").addEventListener("click", function () {
    if (scanStream) { stopCamera(); return; }
    var detector = new window.BarcodeDetector();
    navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } }).then(function (stream) {
      scanStream = stream;
      var video = $("scan-video");
      video.srcObject = stream;
      video.hidden = false;
      video.play();
      scanTimer = window.setInterval(function () {
        detector.detect(video).then(function (codes) {
          codes.forEach(function (c) { addScan(c.rawValue); });
        }, function () { /* a frame it cannot read */ });
      }, 400);
    }, function () { stopCamera(); });
  });
  $("scan-add").addEventListener("click", function () { addScan($("scan-manual").value); $("scan-manual").value = ""; });
  $("scan-manual").addEventListener("keydown", function (event) {
    if (event.key === "Enter") { event.preventDefault(); addScan(this.value); this.value = ""; }
  });

  function setupCustody(stop) {
    var wanted = needs(stop);
    scanned = {};
    $("pin-field").hidden = wanted.indexOf("pin") < 0;
    $("age-field").hidden = wanted.indexOf("age_verified") < 0;
    $("scan-field").hidden = wanted.indexOf("parcel_scan") < 0 && !(stop.parcels && stop.parcels.length);
    $("scan-camera").hidden = !("BarcodeDetector" in window && navigator.mediaDevices);
    renderScans(stop);
  }

  // What the stop requires and the form lacks (the server refuses the same with 422, naming it).
  function missingFor(stop, has) {
    return needs(stop).filter(function (name) {
      if (name === "parcel_scan") { return (stop.parcels || []).some(function (p) { return !scanned[p]; }); }
      return !has[name];
    });
  }

  function openForm(id) {
    closeForms();
    $(id).hidden = false;
    $("actions").hidden = true;
    if (id === "deliver") { sizeSignature(); setupCustody(currentStop() || {}); }
    var first = $(id).querySelector("input, select, textarea");
    if (first) { first.focus(); }
  }

  // The photo as taken when it is small enough; otherwise re-encoded at most 1600 px on the long side.
  function preparePhoto(file) {
    return new Promise(function (resolve) {
      var usable = /^image\/(jpeg|png|webp)$/.test(file.type) && file.size >= 100 && file.size <= MAX_PHOTO_BYTES;
      if (usable && file.size <= SHRINK_ABOVE_BYTES) { resolve({ blob: file, type: file.type }); return; }
      var url = URL.createObjectURL(file), img = new Image();
      img.onload = function () {
        var scale = Math.min(1, SHRINK_TO_PX / Math.max(img.naturalWidth, img.naturalHeight));
        var canvas = document.createElement("canvas");
        canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
        canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
        canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
        URL.revokeObjectURL(url);
        canvas.toBlob(function (blob) {
          resolve(blob ? { blob: blob, type: "image/jpeg" } : usable ? { blob: file, type: file.type } : null);
        }, "image/jpeg", 0.85);
      };
      img.onerror = function () { URL.revokeObjectURL(url); resolve(usable ? { blob: file, type: file.type } : null); };
      img.src = url;
    });
  }

  // --- the signature pad -------------------------------------------------------------------------------
  var pad = $("signature"), ink = null, drawing = false, signed = false, last = null;

  function sizeSignature() {
    var box = pad.getBoundingClientRect(), ratio = window.devicePixelRatio || 1;
    pad.width = Math.max(1, Math.round(box.width * ratio));
    pad.height = Math.max(1, Math.round(box.height * ratio));
    ink = pad.getContext("2d");
    ink.setTransform(ratio, 0, 0, ratio, 0, 0);
    clearSignature();
  }
  function clearSignature() {
    if (!ink) { return; }
    ink.fillStyle = "#ffffff";
    ink.fillRect(0, 0, pad.width, pad.height);
    ink.strokeStyle = "#111827";
    ink.lineWidth = 2.5;
    ink.lineCap = ink.lineJoin = "round";
    signed = false;
  }
  function point(event) {
    var box = pad.getBoundingClientRect();
    return { x: event.clientX - box.left, y: event.clientY - box.top };
  }
  pad.addEventListener("pointerdown", function (event) {
    if (!ink) { sizeSignature(); }
    drawing = true;
    last = point(event);
    try { pad.setPointerCapture(event.pointerId); } catch (e) { /* not capturable */ }
    event.preventDefault();
  });
  pad.addEventListener("pointermove", function (event) {
    if (!drawing) { return; }
    var p = point(event);
    ink.beginPath();
    ink.moveTo(last.x, last.y);
    ink.lineTo(p.x, p.y);
    ink.stroke();
    last = p;
    signed = true;
    event.preventDefault();
  });
  ["pointerup", "pointercancel", "pointerleave"].forEach(function (name) {
    pad.addEventListener(name, function () { drawing = false; });
  });
  $("sig-clear").addEventListener("click", clearSignature);

  function signatureBlob() {
    return new Promise(function (resolve) {
      if (!signed) { resolve(null); return; }
      pad.toBlob(function (blob) { resolve(blob); }, "image/png");
    });
  }

  var photoUrl = null;
  $("photo").addEventListener("change", function () {
    var file = this.files && this.files[0], preview = $("photo-preview");
    if (photoUrl) { URL.revokeObjectURL(photoUrl); photoUrl = null; }
    preview.hidden = !file;
    if (file) { photoUrl = URL.createObjectURL(file); preview.src = photoUrl; }
  });

  function resetDeliverForm() {
    $("deliver-form").reset();
    $("photo-preview").hidden = true;
    if (photoUrl) { URL.revokeObjectURL(photoUrl); photoUrl = null; }
    $("deliver-error").hidden = true;
    $("deliver-error").removeAttribute("data-missing");
    scanned = {};
    $("scan-list").textContent = "";
    clearSignature();
  }

  $("btn-arrived").addEventListener("click", function () {
    var stop = currentStop();
    if (stop) { queueStatus(stop, { status: "arrived" }, [], "driver.queued.arrived"); }
  });
  $("btn-delivered").addEventListener("click", function () { openForm("deliver"); });
  $("btn-failed").addEventListener("click", function () { openForm("fail"); });
  Array.prototype.forEach.call(document.querySelectorAll("[data-cancel]"), function (button) {
    button.addEventListener("click", function () { closeForms(); resetDeliverForm(); $("fail-form").reset(); render(); });
  });

  $("deliver-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var stop = currentStop();
    if (!stop) { closeForms(); return; }
    var photo = $("photo").files && $("photo").files[0];
    var name = $("recipient-name").value.trim(), note = $("deliver-note").value.trim();
    var body = { status: "delivered", contactless: $("contactless").checked };
    if (name) { body.recipient_name = name.slice(0, 100); }
    if (note) { body.note = note.slice(0, 500); }
    var pin = $("pin").value.trim(), aged = $("age-verified").checked && needs(stop).indexOf("age_verified") >= 0;
    var missing = missingFor(stop, { photo: !!photo, signature: signed, recipient_name: !!name,
                                     pin: /^[0-9]{6}$/.test(pin), age_verified: aged });
    if (missing.length) {
      $("deliver-error").textContent = t("driver.custody.missing", {
        what: missing.map(function (n) { return t("driver.custody.need." + n); }).join(", ") });
      $("deliver-error").hidden = false;
      $("deliver-error").setAttribute("data-missing", missing.join(" "));
      return;
    }
    if (aged) { body.age_verified = true; }
    var custody = { pin: needs(stop).indexOf("pin") >= 0 ? pin : null, scans: Object.keys(scanned) };
    Promise.all([photo ? preparePhoto(photo) : Promise.resolve(null), signatureBlob()]).then(function (parts) {
      if (photo && !parts[0]) {
        $("deliver-error").textContent = t("driver.photo.unusable");
        $("deliver-error").hidden = false;
        return null;
      }
      var files = [];
      if (parts[0]) { files.push({ kind: "photo", type: parts[0].type, blob: parts[0].blob }); }
      if (parts[1]) { files.push({ kind: "signature", type: "image/png", blob: parts[1] }); }
      closeForms();
      resetDeliverForm();
      return queueStatus(stop, body, files, "driver.queued.delivered", custody);
    });
  });

  $("fail-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var stop = currentStop(), reason = $("fail-reason").value;
    if (!stop) { closeForms(); return; }
    if (!reason) {
      $("fail-error").textContent = t("driver.fail.reason_required");
      $("fail-error").hidden = false;
      $("fail-reason").focus();
      return;
    }
    var body = { status: "failed", reason: reason }, note = $("fail-note").value.trim();
    if (note) { body.note = note.slice(0, 500); }
    $("fail-error").hidden = true;
    $("fail-form").reset();
    closeForms();
    queueStatus(stop, body, [], "driver.queued.failed");
  });

  $("send-now").addEventListener("click", function () { attempt = 0; kick(true); });

  // --- start ---------------------------------------------------------------------------------------
  window.addEventListener("online", function () { attempt = 0; flushFixes(); kick(true); loadRoute(); });
  window.addEventListener("offline", function () { render(); });
  window.setInterval(function () { flushFixes(); }, PING_MS);
  window.setInterval(function () { if (!sending && !queued.length && navigator.onLine !== false) { loadRoute(); } }, 60000);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") { flushFixes(); } else { kick(true); loadRoute(); }
  });

  // --- shift: on duty the app shares its location; off duty (ended, or the route completed) it does not ------
  var watchId = null, onDuty = null;

  function startSharing() {
    if (watchId !== null) { return; }
    if (!(navigator.geolocation && navigator.geolocation.watchPosition)) {
      $("gps-text").textContent = t("driver.gps.unavailable");
      gpsOff("driver.gps.unavailable");
      return;
    }
    $("gps-text").textContent = t("driver.gps.waiting");
    watchId = navigator.geolocation.watchPosition(onPosition, onPositionError,
      { enableHighAccuracy: true, maximumAge: 5000, timeout: 60000 });
  }

  function stopSharing() {
    if (watchId !== null) { navigator.geolocation.clearWatch(watchId); watchId = null; }
    flushFixes();
    gpsOff(null);
    $("gps-text").textContent = t("driver.shift.off");
  }

  function applyDuty(presence) {
    onDuty = !!presence.on_duty;
    var button = $("shift-toggle");
    button.textContent = t(onDuty ? "driver.shift.end" : "driver.shift.start");
    button.setAttribute("aria-pressed", onDuty ? "true" : "false");
    if (onDuty) { startSharing(); } else { stopSharing(); }
  }

  function permissionState() {
    if (!(navigator.permissions && navigator.permissions.query)) { return Promise.resolve(null); }
    return navigator.permissions.query({ name: "geolocation" }).then(function (p) { return p.state; },
      function () { return null; });
  }

  function batteryPercent() {
    if (!navigator.getBattery) { return Promise.resolve(null); }
    return navigator.getBattery().then(function (b) { return Math.round(b.level * 100); }, function () { return null; });
  }

  // What the phone says (battery, location permission, foreground or background): the dispatcher sees why a
  // driver went silent. The answer says whether the driver is on duty; unknown (no answer) keeps sharing.
  function reportStatus() {
    return Promise.all([permissionState(), batteryPercent()]).then(function (found) {
      var body = { app_state: document.visibilityState === "hidden" ? "background" : "foreground" };
      if (found[0] === "granted" || found[0] === "prompt" || found[0] === "denied") { body.location_permission = found[0]; }
      if (found[1] !== null && found[1] >= 0 && found[1] <= 100) { body.battery = found[1]; }
      return api("POST", "/v1/driver/app-status", body);
    }).then(function (r) {
      if (r.status === 200 && r.data) { applyDuty(r.data); } else if (onDuty === null) { startSharing(); }
    }, function () { if (onDuty === null) { startSharing(); } });
  }

  $("shift-toggle").addEventListener("click", function () {
    var action = onDuty ? "end" : "start";
    api("POST", "/v1/driver/shift", { action: action }).then(function (r) {
      if (r.status === 200 && r.data) { applyDuty(r.data); } else { toast(t("driver.shift.failed")); }
    }, function () { toast(t("driver.shift.failed")); });
  });
  document.addEventListener("visibilitychange", function () { reportStatus(); });
  window.setInterval(function () { reportStatus(); }, 300000);
  reportStatus();

  render();
  openDb().then(function (opened) {
    db = opened;
    memoryOnly = !opened;
    // Items queued before the database opened (a quick first tap) move into it, in order.
    var early = memory;
    memory = [];
    return early.reduce(function (chain, item) {
      return chain.then(function () { delete item.seq; return qAdd(item); });
    }, Promise.resolve());
  }).then(function () {
    return refreshMirror();
  }).then(function () {
    ready = true;
    kick(true);
    return loadRoute();
  });
})();
