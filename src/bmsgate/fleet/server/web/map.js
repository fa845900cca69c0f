// The map of the sites: Leaflet over an offline country outline (world-atlas through topojson-client), a
// tile layer only when the server names a tile URL, one circle marker per site coloured by its state.

import { api } from "./api.js";
import { el, loadScript, siteState, STATE_COLOURS } from "./format.js";
import { onLive } from "./live.js";

let countries = null;

async function countryOutline() {
  if (!countries) {
    const response = await fetch("/vendor/countries-110m.json");
    if (!response.ok) throw new Error(`country outline: HTTP ${response.status}`);
    const topology = await response.json();
    countries = withoutAntimeridianRings(topojson.feature(topology, topology.objects.countries));
  }
  return countries;
}

// world-atlas is spherical: a ring that crosses the antimeridian (Russia's east, Fiji, Antarctica) would be
// drawn by Leaflet as a band across the whole map. Such rings are left out; none is near a site here.
function withoutAntimeridianRings(collection) {
  const crosses = (ring) => ring.some((point, index) => index > 0 && Math.abs(point[0] - ring[index - 1][0]) > 180);
  for (const feature of collection.features) {
    const geometry = feature.geometry;
    if (!geometry) continue;
    if (geometry.type === "Polygon") {
      if (geometry.coordinates.some(crosses)) geometry.coordinates = [];
    } else if (geometry.type === "MultiPolygon") {
      geometry.coordinates = geometry.coordinates.filter((polygon) => !polygon.some(crosses));
    }
  }
  collection.features = collection.features.filter((feature) => feature.geometry && feature.geometry.coordinates.length);
  return collection;
}

export async function renderMap(view, { navigate, session }) {
  const legend = el("div", { class: "toolbar legend" },
    ...Object.entries(STATE_COLOURS).map(([state, colour]) =>
      el("span", {}, el("span", { class: "dot", style: `background:${colour}` }), state)),
    el("span", { id: "marker-count", class: "muted" }));
  const container = el("div", { id: "map" });
  view.replaceChildren(legend, container);

  await Promise.all([loadScript("/vendor/leaflet.js"), loadScript("/vendor/topojson-client.min.js")]);
  const [payload, outline] = await Promise.all([api("/gateways?summary=true"), countryOutline()]);
  const gateways = payload.gateways;
  // Beyond a couple of thousand markers SVG gets slow: draw them on a canvas instead.
  const map = L.map(container, { preferCanvas: gateways.length > 2000, worldCopyJump: true });
  // A view first: Leaflet cannot place vector layers on a map without one.
  map.setView([-29, 24], 5);
  if (session.tile_url) {
    L.tileLayer(session.tile_url, { maxZoom: 18, attribution: session.tile_attribution || "" }).addTo(map);
  }
  L.geoJSON(outline, {
    interactive: false,
    style: { color: "#6b7b8c", weight: 1, fillColor: "#f2efe6", fillOpacity: session.tile_url ? 0 : 1 },
  }).addTo(map);

  const markers = new Map();
  function place(gateway) {
    const location = gateway.location;
    const existing = markers.get(gateway.id);
    if (!location || location.lat === null || location.lat === undefined) {
      if (existing) existing.remove();
      markers.delete(gateway.id);
      return;
    }
    const colour = STATE_COLOURS[siteState(gateway)];
    const style = { radius: 6, color: "#1c2330", weight: 1, fillColor: colour, fillOpacity: 0.9,
      className: `site-marker site-${siteState(gateway)}` };
    if (existing) {
      existing.setLatLng([location.lat, location.lon]).setStyle(style);
      existing.setTooltipContent(gateway.name || gateway.id);
      // Leaflet's setStyle leaves the class alone: keep the state class (tests and CSS read it) current.
      const path = existing.getElement && existing.getElement();
      if (path) path.setAttribute("class", `${style.className} leaflet-interactive`);
      if (siteState(gateway) === "alarm") existing.bringToFront();
      return;
    }
    const marker = L.circleMarker([location.lat, location.lon], style)
      .bindTooltip(gateway.name || gateway.id)
      .on("click", () => navigate(`#/site/${encodeURIComponent(gateway.id)}`))
      .addTo(map);
    markers.set(gateway.id, marker);
  }
  for (const gateway of gateways) place(gateway);
  // Sites with alarms stay on top of their neighbours (a later marker is drawn over an earlier one).
  for (const gateway of gateways) if (siteState(gateway) === "alarm" && markers.has(gateway.id)) markers.get(gateway.id).bringToFront();
  const count = document.getElementById("marker-count");
  const showCount = () => {
    count.textContent = `${markers.size} sites on the map`;
    container.dataset.markers = String(markers.size);
  };
  showCount();

  const points = [...markers.values()].map((marker) => marker.getLatLng());
  if (points.length) map.fitBounds(L.latLngBounds(points).pad(0.2), { maxZoom: 8 });

  const unsubscribe = onLive((message) => {
    if (message.type === "gateway" && message.gateway) place(message.gateway);
    else if (message.type === "gateway_deleted" && markers.has(message.id)) {
      markers.get(message.id).remove();
      markers.delete(message.id);
    }
    showCount();
  });
  document.body.dataset.ready = "map";
  return () => {
    unsubscribe();
    map.remove();
  };
}
