/* Doorstep dispatch console. Reads the /v1 merchant API with the session cookie (HttpOnly: this script never
   sees it) and sends the session's CSRF token on unsafe requests. Polls every few seconds with If-None-Match
   (304 = nothing new), slower while the tab is hidden, with backoff on errors. Stores nothing in the browser. */
(function () {
  "use strict";

  var body = document.body;
  var API = body.getAttribute("data-api") || "";
  var CONSOLE = body.getAttribute("data-console") || "/console";
  var CSRF = body.getAttribute("data-csrf") || "";
  var LOCALE = body.getAttribute("data-locale") || "en";
  var POLL_MS = (parseInt(body.getAttribute("data-poll-seconds"), 10) || 5) * 1000;
  var MESSAGES = {};
  try { MESSAGES = JSON.parse(body.getAttribute("data-messages") || "{}"); } catch (e) { MESSAGES = {}; }
  var COLOURS = { moving: "#15803d", stopped: "#b45309", offline: "#b91c1c", off_duty: "#6b7280" };

  function t(key, params) {
    var text = MESSAGES[key] || key;
    return text.replace(/\{([a-z_]+)\}/g, function (m, name) {
      return params && params[name] !== undefined ? String(params[name]) : m;
    });
  }
  function word(value) { return MESSAGES["console.word." + value] || String(value).replace(/_/g, " "); }
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  var timeFormat = new Intl.DateTimeFormat(LOCALE, { hour: "2-digit", minute: "2-digit" });
  var dateTimeFormat = new Intl.DateTimeFormat(LOCALE, { month: "short", day: "numeric", hour: "2-digit",
                                                        minute: "2-digit" });
  function time(iso) { return iso ? timeFormat.format(new Date(iso)) : ""; }
  function dateTime(iso) { return iso ? dateTimeFormat.format(new Date(iso)) : ""; }
  function today() {
    var d = new Date();
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate());
  }

  // --- the API -------------------------------------------------------------------------------
  var etags = {};
  function signedOut() {
    setSync(t("console.sync.signed_out"));
    window.location.assign(CONSOLE + "?m=expired");
  }
  /* fetch JSON; resolves {status, data}; data is null on 304 (unchanged) or on an empty answer. */
  function api(method, path, payload, pollKey) {
    var headers = { "Accept": "application/json" };
    if (method !== "GET") { headers["X-CSRF-Token"] = CSRF; }
    if (payload !== undefined) { headers["Content-Type"] = "application/json"; }
    if (pollKey && etags[pollKey]) { headers["If-None-Match"] = etags[pollKey]; }
    return window.fetch(API + path, {
      method: method, headers: headers, credentials: "same-origin", cache: "no-store",
      body: payload !== undefined ? JSON.stringify(payload) : undefined
    }).then(function (res) {
      if (res.status === 401) { signedOut(); throw new Error("signed out"); }
      if (pollKey) {
        var tag = res.headers.get("ETag");
        if (tag && res.ok) { etags[pollKey] = tag; }
      }
      if (res.status === 304 || res.status === 204) { return { status: res.status, data: null }; }
      return res.json().then(function (data) { return { status: res.status, data: data }; },
                             function () { return { status: res.status, data: null }; });
    });
  }
  function errorText(result) {
    var data = result && result.data;
    var detail = data && data.error && data.error.details && data.error.details[0];
    var message = data && data.error ? data.error.message : String(result && result.status);
    return t("console.error", { message: detail ? detail.field + ": " + detail.reason : message });
  }

  function setSync(text) { var s = $("sync"); if (s && s.textContent !== text) { s.textContent = text; } }

  // --- the map -------------------------------------------------------------------------------
  var map = null, markers = {}, fitted = false;
  function initMap() {
    var mapEl = $("map");
    if (!mapEl || !window.L) { return; }
    var L = window.L;
    map = L.map(mapEl, { zoomSnap: 0.5, scrollWheelZoom: true });
    map.setView([20, 0], 2);
    var tiles = body.getAttribute("data-tiles");
    if (tiles) {
      var loaded = 0, failed = 0;
      var layer = L.tileLayer(tiles, { maxZoom: 19, attribution: body.getAttribute("data-attribution") || "" });
      layer.on("tileload", function () { loaded += 1; });
      layer.on("tileerror", function () {
        failed += 1;
        // Unreachable tile server: stop asking it and keep the drivers on the plain grid.
        if (failed >= 3 && loaded === 0 && map.hasLayer(layer)) {
          map.removeLayer(layer); mapEl.classList.add("map--no-tiles");
        }
      });
      layer.addTo(map);
    } else {
      mapEl.classList.add("map--no-tiles");
    }
  }
  function placeDrivers(drivers) {
    if (!map) { return; }
    var L = window.L, seen = {}, points = [];
    drivers.forEach(function (d) {
      if (!d.position || d.state === "off_duty") { return; }
      var pos = [d.position.lat, d.position.lng];
      seen[d.driver_id] = true;
      points.push(pos);
      var colour = COLOURS[d.state] || COLOURS.off_duty;
      var label = d.name + " \u2013 " + t("console.state." + d.state);
      var marker = markers[d.driver_id];
      if (marker) {
        marker.setLatLng(pos);
        marker.setStyle({ fillColor: colour });
        marker.setTooltipContent(label);
      } else {
        marker = L.circleMarker(pos, { radius: 8, weight: 2, color: "#ffffff", fillColor: colour, fillOpacity: 1,
                                       className: "driver driver--" + d.state });
        marker.bindTooltip(label);
        marker.addTo(map);
        markers[d.driver_id] = marker;
      }
      var path = marker.getElement && marker.getElement();
      if (path) { path.setAttribute("class", "leaflet-interactive driver driver--" + d.state); }
    });
    Object.keys(markers).forEach(function (id) {
      if (!seen[id]) { map.removeLayer(markers[id]); delete markers[id]; }
    });
    if (!fitted && points.length) {
      fitted = true;
      if (points.length === 1) { map.setView(points[0], 14); } else {
        map.fitBounds(L.latLngBounds(points), { padding: [30, 30], maxZoom: 15 });
      }
    }
  }

  // --- fleet ---------------------------------------------------------------------------------
  var routeProgress = {};
  function renderFleet(fleet) {
    var list = $("drivers");
    clear(list);
    var onDuty = fleet.drivers.filter(function (d) { return d.on_duty || d.state !== "off_duty"; });
    routeProgress = {};
    fleet.drivers.forEach(function (d) { if (d.route) { routeProgress[d.route.id] = d; } });
    onDuty.forEach(function (d) {
      var li = el("li", "item item--driver");
      li.setAttribute("data-state", d.state);
      li.setAttribute("data-driver", d.driver_id);
      var dot = el("span", "dot dot--" + d.state);
      dot.setAttribute("aria-hidden", "true");
      li.appendChild(dot);
      li.appendChild(el("strong", "item__name", d.name));
      li.appendChild(el("span", "badge badge--" + d.state, t("console.state." + d.state)));
      var facts = [];
      if (d.reason) { facts.push(t("console.reason." + d.reason)); }
      if (d.last_seen_at) { facts.push(t("console.last_seen", { time: time(d.last_seen_at) })); }
      if (d.battery !== null && d.battery !== undefined) { facts.push(t("console.battery", { level: d.battery })); }
      if (d.route) {
        facts.push(t("console.routes.progress", { done: d.route.done, remaining: d.route.remaining }));
        if (d.route.late) { facts.push(t("console.routes.late", { late: d.route.late })); }
      }
      li.appendChild(el("span", "item__facts", facts.join(" \u00b7 ")));
      list.appendChild(li);
    });
    $("fleet-empty").hidden = onDuty.length > 0;
    placeDrivers(onDuty);
  }

  // --- routes --------------------------------------------------------------------------------
  var lastRoutes = null;
  function renderRoutes(page) {
    lastRoutes = page;
    var list = $("routes");
    clear(list);
    page.items.forEach(function (r) {
      var li = el("li", "item item--route");
      li.setAttribute("data-route", r.id);
      var driver = routeProgress[r.id];
      li.appendChild(el("strong", "item__name", driver ? driver.name : r.driver_id));
      li.appendChild(el("span", "badge badge--" + r.status, word(r.status)));
      var progress = driver && driver.route ? driver.route : null;
      var total = r.stops.length;
      var done = progress ? progress.done : (r.status === "completed" ? total : 0);
      var remaining = progress ? progress.remaining : total - done;
      var meter = el("progress", "meter");
      meter.max = Math.max(total, 1);
      meter.value = done;
      meter.setAttribute("aria-label", t("console.routes.progress", { done: done, remaining: remaining }));
      li.appendChild(meter);
      var text = t("console.routes.progress", { done: done, remaining: remaining });
      if (progress && progress.late) { text += " \u00b7 " + t("console.routes.late", { late: progress.late }); }
      li.appendChild(el("span", "item__facts", text));
      list.appendChild(li);
    });
    $("routes-empty").hidden = page.items.length > 0;
  }

  // --- exceptions ----------------------------------------------------------------------------
  var queue = { open: [], acknowledged: [], more: false };
  var pressed = null;  // the exception whose button the keyboard pressed: focus returns to it after the refresh
  function renderQueue() {
    var list = $("exceptions");
    var active = document.activeElement;
    var focused = (active && active.getAttribute && active.getAttribute("data-action-for")) || pressed;
    var focusedAction = active && active.getAttribute ? active.getAttribute("data-action") : null;
    pressed = null;
    clear(list);
    var items = queue.open.concat(queue.acknowledged);
    items.forEach(function (x) {
      var li = el("li", "item item--exception");
      li.setAttribute("data-exception", x.id);
      li.setAttribute("data-state", x.state);
      li.setAttribute("data-kind", x.kind);
      if (x.shipment_id) { li.setAttribute("data-shipment", x.shipment_id); }
      li.appendChild(el("strong", "item__name", t("console.kind." + x.kind)));
      li.appendChild(el("span", "badge badge--" + x.state, word(x.state)));
      li.appendChild(el("span", "item__facts", (x.summary || "") + " \u00b7 " + dateTime(x.opened_at)));
      var actions = el("span", "item__actions");
      if (x.state === "open") { actions.appendChild(actionButton(x, "acknowledge")); }
      actions.appendChild(actionButton(x, "resolve"));
      if (x.shipment_id) {
        var open = el("button", "btn btn--quiet", x.shipment_id);
        open.type = "button";
        open.addEventListener("click", function () { showDetail(x.shipment_id); });
        actions.appendChild(open);
      }
      li.appendChild(actions);
      list.appendChild(li);
    });
    $("queue-empty").hidden = items.length > 0;
    $("queue-count").textContent = items.length ? "(" + items.length + (queue.more ? "+" : "") + ")" : "";
    if (focused) {  // keep the keyboard where it was across a refresh: same button, same item, else the queue
      var id = window.CSS && window.CSS.escape ? window.CSS.escape(focused) : focused;
      var again = (focusedAction && list.querySelector('[data-action-for="' + id + '"][data-action="' +
                                                        focusedAction + '"]')) ||
                  list.querySelector('[data-action-for="' + id + '"]') || list.querySelector("button[data-action]");
      if (again) { again.focus(); } else { $("queue").focus(); }
    }
  }
  function actionButton(x, action) {
    var button = el("button", action === "resolve" ? "btn btn--small btn--quiet" : "btn btn--small",
                    t("console.queue." + action));
    button.type = "button";
    button.setAttribute("data-action", action);
    button.setAttribute("data-action-for", x.id);
    button.setAttribute("aria-label", t("console.queue." + action) + ": " + t("console.kind." + x.kind) +
                        (x.summary ? " \u2013 " + x.summary : ""));
    button.addEventListener("click", function () {
      pressed = x.id;
      button.disabled = true;
      api("POST", "/v1/exceptions/" + encodeURIComponent(x.id) + "/" + action, {}).then(function (result) {
        if (result.status >= 400) {
          setSync(errorText(result)); button.disabled = false; button.focus(); pressed = null; return;
        }
        etags.open = etags.acknowledged = null;
        return pollExceptions();
      }).catch(function () { button.disabled = false; });
    });
    return button;
  }

  // --- search and detail ---------------------------------------------------------------------
  function search(text) {
    var status = $("search-status"), results = $("results");
    status.textContent = t("console.search.searching");
    clear(results);
    api("GET", "/v1/shipments/search?q=" + encodeURIComponent(text)).then(function (result) {
      if (result.status >= 400) { status.textContent = errorText(result); return; }
      var items = result.data.items;
      status.textContent = items.length ? "" : t("console.search.none");
      items.forEach(function (s) {
        var li = el("li", "item");
        var button = el("button", "btn btn--link", (s.external_ref || s.id) + " \u2013 " + s.recipient.name +
                        ", " + s.address.city);
        button.type = "button";
        button.setAttribute("data-shipment", s.id);
        button.addEventListener("click", function () { showDetail(s.id); });
        li.appendChild(button);
        li.appendChild(el("span", "badge badge--" + s.status, word(s.status)));
        results.appendChild(li);
      });
      if (items.length === 1) { showDetail(items[0].id); }
    }).catch(function () { status.textContent = t("console.sync.offline"); });
  }
  function fact(list, label, value) {
    if (value === null || value === undefined || value === "") { return; }
    list.appendChild(el("dt", "", label));
    list.appendChild(el("dd", "", value));
  }
  // The shipment's conversation (recipient, driver, dispatch); text only ever set as textContent.
  var detailId = null;
  function renderConversation(thread) {
    var list = $("detail-messages");
    if (!list) { return; }
    clear(list);
    var messages = (thread && thread.messages) || [];
    if (!messages.length) { list.appendChild(el("li", "empty", list.getAttribute("data-empty"))); }
    messages.forEach(function (m) {
      var li = el("li", "msg " + (m.sender_role === "dispatch" ? "msg--mine" : "msg--theirs"));
      li.appendChild(el("strong", "", m.sender_name + " " + time(m.sent_at)));
      if (m.sender_role === "dispatch" && m.read_by && m.read_by.length) {
        li.appendChild(document.createTextNode(" \u00b7 " + list.getAttribute("data-read")));
      }
      li.appendChild(el("p", "", m.text));
      list.appendChild(li);
    });
  }
  function loadConversation(id) {
    return api("GET", "/v1/shipments/" + encodeURIComponent(id) + "/messages").then(function (r) {
      if (detailId === id) { renderConversation(r.status === 200 ? r.data : null); }
    });
  }
  function showDetail(id) {
    var panel = $("detail"), facts = $("detail-facts"), timeline = $("detail-timeline"), proof = $("detail-proof");
    var path = "/v1/shipments/" + encodeURIComponent(id);
    detailId = id;
    if ($("detail-reply-status")) { $("detail-reply-status").textContent = ""; }
    Promise.all([api("GET", path), api("GET", path + "/timeline"), api("GET", path + "/proof"),
                 loadConversation(id)]).then(function (r) {
      var s = r[0].data;
      if (!s || r[0].status >= 400) { $("search-status").textContent = errorText(r[0]); return; }
      clear(facts); clear(timeline); clear(proof);
      $("detail-h").textContent = t("console.detail.title") + " " + (s.external_ref || s.id);
      fact(facts, t("console.detail.status"), word(s.status));
      fact(facts, t("console.detail.external_ref"), s.external_ref);
      fact(facts, t("console.detail.recipient"), [s.recipient.name, s.recipient.phone, s.recipient.email]
        .filter(Boolean).join(", "));
      fact(facts, t("console.detail.address"), [s.address.line1, s.address.postal_code, s.address.city]
        .filter(Boolean).join(", "));
      if (s.time_window) {
        fact(facts, t("console.detail.window"), dateTime(s.time_window.start) + " \u2013 " + time(s.time_window.end));
      }
      if (s.eta) {
        // Expected before the promised window opens: the recipient's page says so too (geo/day_window.before_window).
        var early = s.time_window && s.eta.expected && Date.parse(s.eta.expected) < Date.parse(s.time_window.start);
        var span = time(s.eta.earliest) + " \u2013 " + time(s.eta.latest);
        fact(facts, t("console.detail.eta"), early ? t("console.detail.eta_early", { eta: span }) : span);
      }
      if (s.rating) {
        fact(facts, t("console.detail.rating"), s.rating.score + "/5" + (s.rating.comment ? " \u2013 " +
             s.rating.comment : ""));
      }
      fact(facts, t("console.detail.route"), s.route_id);
      var events = r[1].data && r[1].data.items ? r[1].data.items : [];
      events.forEach(function (e) {
        var li = el("li", "", dateTime(e.occurred_at) + " \u2013 " + word(e.type) +
                    (e.to_status && e.to_status !== e.type ? " (" + word(e.to_status) + ")" : ""));
        timeline.appendChild(li);
      });
      var images = r[2].status === 200 && r[2].data && r[2].data.images ? r[2].data.images : [];
      if (!images.length) { proof.appendChild(el("p", "empty", t("console.detail.no_proof"))); }
      images.forEach(function (image) {
        if (!/^https?:\/\//.test(image.url)) { return; }
        var img = el("img", "proof");
        img.src = image.url;
        img.alt = t("console.detail.proof") + " (" + image.kind + ")";
        proof.appendChild(img);
      });
      panel.hidden = false;
      panel.focus();
    }).catch(function () { $("search-status").textContent = t("console.sync.offline"); });
  }

  // --- polling -------------------------------------------------------------------------------
  var failures = 0, timer = null, fleetMissing = false, queueMissing = false;
  function pollFleet() {
    if (fleetMissing) { return Promise.resolve(); }
    return api("GET", "/v1/fleet", undefined, "fleet").then(function (result) {
      if (result.status === 404) { fleetMissing = true; $("fleet-empty").textContent = t("console.fleet.unavailable");
                                   $("fleet-empty").hidden = false; return; }
      if (result.data && result.status === 200) { renderFleet(result.data); if (lastRoutes) { renderRoutes(lastRoutes); } }
    });
  }
  function pollRoutes() {
    return api("GET", "/v1/routes?date=" + today() + "&limit=100", undefined, "routes").then(function (result) {
      if (result.data && result.status === 200) { renderRoutes(result.data); }
    });
  }
  function pollExceptions() {
    if (queueMissing) { return Promise.resolve(); }
    return Promise.all([
      api("GET", "/v1/exceptions?state=open", undefined, "open"),
      api("GET", "/v1/exceptions?state=acknowledged", undefined, "acknowledged")
    ]).then(function (r) {
      if (r[0].status === 404) { queueMissing = true; $("queue-missing").hidden = false; return; }
      var changed = false;
      if (r[0].data && r[0].status === 200) {
        queue.open = r[0].data.items; queue.more = Boolean(r[0].data.next_cursor); changed = true;
      }
      if (r[1].data && r[1].status === 200) { queue.acknowledged = r[1].data.items; changed = true; }
      if (changed) { renderQueue(); }
    });
  }
  function tick() {
    timer = null;
    Promise.all([pollFleet(), pollRoutes(), pollExceptions()]).then(function () {
      failures = 0;
      setSync(t("console.sync.live", { time: timeFormat.format(new Date()) }));
      schedule();
    }, function (err) {
      if (err && err.message === "signed out") { return; }
      failures += 1;
      setSync(t("console.sync.offline"));
      schedule();
    });
  }
  function schedule() {
    if (timer) { window.clearTimeout(timer); }
    var delay = document.hidden ? POLL_MS * 6 : POLL_MS;
    if (failures) { delay = Math.min(POLL_MS * Math.pow(2, failures), 60000); }
    timer = window.setTimeout(tick, delay);
  }
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { schedule(); } });

  // --- wiring --------------------------------------------------------------------------------
  $("search").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = $("q").value.trim();
    if (text) { search(text); }
  });
  if ($("detail-reply")) {
    $("detail-reply").addEventListener("submit", function (event) {
      event.preventDefault();
      var text = $("detail-reply-text"), id = detailId;
      if (!id || !text.value.trim()) { return; }
      api("POST", "/v1/shipments/" + encodeURIComponent(id) + "/messages", { text: text.value }).then(function (r) {
        if (r.status === 201) { text.value = ""; }
        $("detail-reply-status").textContent = r.status === 201 ? "" : errorText(r);
        return loadConversation(id);
      }).catch(function () { $("detail-reply-status").textContent = t("console.sync.offline"); });
    });
  }
  $("detail-close").addEventListener("click", function () { $("detail").hidden = true; $("q").focus(); });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !$("detail").hidden) { $("detail").hidden = true; $("q").focus(); }
  });
  initMap();
  tick();
})();
