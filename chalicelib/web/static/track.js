/* Doorstep tracking page: live updates and the map. The page is complete without this file.
   Polls the status JSON with If-None-Match (304 = nothing new), slower while the tab is hidden
   and with exponential backoff on errors. Logs nothing. */
(function () {
  "use strict";

  var LIVE = { out_for_delivery: 1, approaching: 1, arrived: 1 };
  var FINAL = { delivered: 1, returned: 1, cancelled: 1 };
  var main = document.getElementById("main");
  if (!main) { return; }

  function field(name) { return main.querySelector('[data-field="' + name + '"]'); }
  function setText(el, text) { if (el && el.textContent !== text) { el.textContent = text; } }
  function show(el, visible) { if (el) { el.hidden = !visible; } }
  function group(status) { return LIVE[status] ? "live" : status; }
  function point(text) {
    if (!text) { return null; }
    var parts = String(text).split(",");
    var lat = parseFloat(parts[0]), lng = parseFloat(parts[1]);
    return isFinite(lat) && isFinite(lng) ? [lat, lng] : null;
  }
  function cssVar(name, fallback) {
    var value = window.getComputedStyle(document.documentElement).getPropertyValue(name);
    return value && value.trim() ? value.trim() : fallback;
  }

  // --- map ---------------------------------------------------------------------------
  var map = null, driverMarker = null, route = null, dest = null, userMoved = false;
  var mapEl = document.getElementById("map");

  function fit() {
    if (!map || userMoved) { return; }
    var driver = driverMarker ? driverMarker.getLatLng() : null;
    if (driver && dest) {
      map.fitBounds(window.L.latLngBounds([driver, dest]), { padding: [40, 40], maxZoom: 16 });
    } else if (driver || dest) {
      map.setView(driver || dest, 15);
    }
  }

  function setDriver(pos) {
    if (!map) { return; }
    var L = window.L;
    if (!pos) {
      if (driverMarker) { map.removeLayer(driverMarker); driverMarker = null; }
      if (route) { map.removeLayer(route); route = null; }
      return;
    }
    if (driverMarker) {
      driverMarker.setLatLng(pos);
    } else {
      driverMarker = L.circleMarker(pos, {
        radius: 10, weight: 3, color: "#ffffff", fillColor: cssVar("--brand-ink", "#1d4ed8"),
        fillOpacity: 1, interactive: false, className: "driver-marker"
      }).addTo(map);
    }
    if (dest) {
      if (route) { route.setLatLngs([pos, dest]); } else {
        route = L.polyline([pos, dest], {
          color: cssVar("--brand-ink", "#1d4ed8"), weight: 2, opacity: 0.6, dashArray: "4 6", interactive: false
        }).addTo(map);
        route.bringToBack();
      }
    }
    if (userMoved && !map.getBounds().contains(pos)) { map.panTo(pos); }
  }

  function noTiles() {
    mapEl.classList.add("map--no-tiles");
    var text = mapEl.getAttribute("data-no-tiles");
    if (text && !document.getElementById("map-status")) {
      var p = document.createElement("p");
      p.id = "map-status";
      p.className = "map-status";
      p.textContent = text;
      mapEl.parentNode.insertBefore(p, mapEl.nextSibling);
    }
  }

  function initMap() {
    if (!mapEl || !window.L) { return; }
    var L = window.L;
    var fallback = mapEl.querySelector(".map-fallback");
    if (fallback) { fallback.parentNode.removeChild(fallback); }
    dest = point(mapEl.getAttribute("data-dest"));
    var driver = point(mapEl.getAttribute("data-driver"));
    map = L.map(mapEl, { attributionControl: false, scrollWheelZoom: false, zoomSnap: 0.5 });
    // A view first, so that layers render as they are added (and can be ordered).
    map.setView(driver || dest || [0, 0], driver || dest ? 15 : 2);
    var tiles = mapEl.getAttribute("data-tiles");
    if (tiles) {
      var loaded = 0, failed = 0;
      var layer = L.tileLayer(tiles, { maxZoom: 19 });
      layer.on("tileload", function () { loaded += 1; });
      layer.on("tileerror", function () {
        failed += 1;
        // Unreachable tile server: stop asking it and keep the markers on a plain grid.
        if (failed >= 3 && loaded === 0 && map.hasLayer(layer)) { map.removeLayer(layer); noTiles(); }
      });
      layer.addTo(map);
    } else {
      mapEl.classList.add("map--no-tiles");
    }
    if (dest) {
      L.circleMarker(dest, {
        radius: 9, weight: 3, color: "#ffffff", fillColor: cssVar("--accent-ink", "#0f766e"),
        fillOpacity: 1, interactive: false, className: "dest-marker"
      }).addTo(map);
    }
    setDriver(driver);
    fit();
    map.on("dragstart", function () { userMoved = true; });
  }

  // --- live updates ------------------------------------------------------------------
  var statusUrl = main.getAttribute("data-status-url");
  var status = main.getAttribute("data-status") || "";
  var version = main.getAttribute("data-version") || "";
  var pollMs = Math.max(5, parseInt(main.getAttribute("data-poll"), 10) || 15) * 1000;
  var details = {};
  var detailEl = field("status_detail");
  try { details = JSON.parse(detailEl && detailEl.getAttribute("data-details") || "{}"); } catch (e) { details = {}; }

  function apply(data) {
    if (!data || typeof data !== "object" || data.version === version) { return; }
    if (data.status !== status && group(data.status) !== group(status)) {
      // The server renders different sections (map, forms, proof): fetch the page again.
      stopped = true;
      window.location.reload();
      return;
    }
    version = data.version;
    status = data.status;
    setText(field("status_label"), data.status_label || "");
    if (data.status_detail || details[status]) { setText(detailEl, data.status_detail || details[status]); }
    show(field("eta"), !!data.eta);
    setText(field("eta_text"), data.eta ? data.eta.text : "");
    show(field("stops_before_text"), data.stops_before_text != null);
    setText(field("stops_before_text"), data.stops_before_text || "");
    var list = field("timeline");
    if (list && Array.isArray(data.timeline)) {
      var items = document.createDocumentFragment();
      data.timeline.forEach(function (entry) {
        var li = document.createElement("li");
        var label = document.createElement("span");
        label.className = "tl-label";
        label.textContent = entry.label;
        var time = document.createElement("span");
        time.className = "tl-time";
        time.textContent = entry.at_text;
        li.appendChild(label);
        li.appendChild(document.createTextNode(" "));
        li.appendChild(time);
        items.appendChild(li);
      });
      list.textContent = "";
      list.appendChild(items);
    }
    var driver = data.driver && isFinite(data.driver.lat) && isFinite(data.driver.lng)
      ? [data.driver.lat, data.driver.lng] : null;
    show(field("driver_legend"), !!driver);
    setDriver(driver);
    fit();
    if (FINAL[status]) { stopped = true; }
  }

  var etag = null, errors = 0, timer = null, inflight = false, stopped = false, lastPoll = 0;

  function delay() {
    var ms = document.hidden ? Math.max(60000, pollMs * 4) : pollMs;
    if (errors) { ms = Math.min(300000, ms * Math.pow(2, errors)); }
    return ms + Math.floor(Math.random() * ms * 0.1);
  }

  function schedule(ms) {
    if (timer) { window.clearTimeout(timer); }
    timer = stopped ? null : window.setTimeout(poll, ms);
  }

  function poll() {
    if (inflight || stopped) { return; }
    inflight = true;
    lastPoll = Date.now();
    var headers = { Accept: "application/json" };
    if (etag) { headers["If-None-Match"] = etag; }
    window.fetch(statusUrl, { headers: headers, cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 304) { return null; }
        if (response.status === 404 || response.status === 410) { stopped = true; return null; }
        if (!response.ok) { throw new Error("status " + response.status); }
        var tag = response.headers.get("ETag");
        if (tag) { etag = tag; }
        return response.json();
      })
      .then(function (data) { errors = 0; if (data) { apply(data); } },
            function () { errors = Math.min(errors + 1, 5); })
      .then(function () { inflight = false; schedule(delay()); });
  }

  document.addEventListener("visibilitychange", function () {
    if (stopped || inflight) { return; }
    if (!document.hidden && Date.now() - lastPoll >= pollMs) { schedule(0); } else { schedule(delay()); }
  });

  try { initMap(); } catch (e) { map = null; }
  if (statusUrl && window.fetch && !FINAL[status]) {
    lastPoll = Date.now();
    schedule(delay());
  }
}());
