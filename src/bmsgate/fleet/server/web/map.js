// The map of the sites: Leaflet over an offline country outline (world-atlas through topojson-client), a
// tile layer only when the server names a tile URL. The server answers each view (GET /api/v1/overview/map
// with its edges and zoom): every site as a circle marker coloured by its state while few are in view,
// else clusters of a grid cell each, drawn as a count coloured by the worst state inside (a click zooms in).
// So the browser never holds more markers than fit on the screen, whatever the fleet size.

import { api } from "./api.js";
import { el, loadScript, STATE_COLOURS } from "./format.js";
import { onLive } from "./live.js";

const REFRESH_MS = { sites: 300, clusters: 3000 };
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

function mapPath(zoom, bounds) {
  const query = new URLSearchParams({ zoom: String(zoom) });
  if (bounds) {
    query.set("south", bounds.getSouth().toFixed(5));
    query.set("west", bounds.getWest().toFixed(5));
    query.set("north", bounds.getNorth().toFixed(5));
    query.set("east", bounds.getEast().toFixed(5));
  }
  return `/overview/map?${query}`;
}

function worstState(cluster) {
  if (cluster.alarm) return "alarm";
  return cluster.online ? "online" : "offline";
}

export async function renderMap(view, { navigate, session }) {
  const legend = el("div", { class: "toolbar legend" },
    ...Object.entries(STATE_COLOURS).map(([state, colour]) =>
      el("span", {}, el("span", { class: "dot", style: `background:${colour}` }), state)),
    el("span", { id: "marker-count", class: "muted" }));
  const container = el("div", { id: "map" });
  view.replaceChildren(legend, container);

  await Promise.all([loadScript("/vendor/leaflet.js"), loadScript("/vendor/topojson-client.min.js")]);
  // The whole fleet at a low zoom first: where the sites are decides the first view.
  const [overall, outline] = await Promise.all([api(mapPath(4)), countryOutline()]);
  const map = L.map(container, { worldCopyJump: true });
  // A view first: Leaflet cannot place vector layers on a map without one.
  map.setView([-29, 24], 5);
  if (session.tile_url) {
    L.tileLayer(session.tile_url, { maxZoom: 18, attribution: session.tile_attribution || "" }).addTo(map);
  }
  L.geoJSON(outline, {
    interactive: false,
    style: { color: "#6b7b8c", weight: 1, fillColor: "#f2efe6", fillOpacity: session.tile_url ? 0 : 1 },
  }).addTo(map);
  const layer = L.layerGroup().addTo(map);
  const count = document.getElementById("marker-count");

  function siteMarker(site) {
    return L.circleMarker([site.lat, site.lon], {
      radius: 6, color: "#1c2330", weight: 1, fillColor: STATE_COLOURS[site.state], fillOpacity: 0.9,
      // SVG paths: at most the server's map_max_points (1,500) sites come as themselves.
      className: `site-marker site-${site.state}`,
    }).bindTooltip(site.name || site.id).on("click", () => navigate(`#/site/${encodeURIComponent(site.id)}`));
  }

  function clusterMarker(cluster) {
    const state = worstState(cluster);
    const size = Math.round(26 + 8 * Math.log10(cluster.count));
    const label = el("span", { text: cluster.count >= 10000 ? `${Math.round(cluster.count / 1000)}k` : String(cluster.count) });
    const icon = L.divIcon({ html: label, className: `site-cluster cluster-${state}`, iconSize: [size, size] });
    const title = `${cluster.count} sites: ${cluster.alarm} with alarms, ${cluster.offline} offline, ${cluster.online} online`;
    return L.marker([cluster.lat, cluster.lon], { icon, title, keyboard: false })
      .on("click", () => map.setView([cluster.lat, cluster.lon], Math.min(map.getZoom() + 2, 18)));
  }

  function draw(answer) {
    layer.clearLayers();
    for (const cluster of answer.clusters) layer.addLayer(clusterMarker(cluster));
    // Sites with alarms last: a later marker is drawn over an earlier one.
    const ordered = [...answer.sites].sort((a, b) => (a.state === "alarm") - (b.state === "alarm"));
    for (const site of ordered) layer.addLayer(siteMarker(site));
    count.textContent = answer.clustered
      ? `${answer.in_view} sites in view, in ${answer.clusters.length} clusters and ${answer.sites.length} single sites`
      : `${answer.in_view} sites on the map`;
    container.dataset.markers = String(answer.sites.length);
    container.dataset.clusters = String(answer.clusters.length);
    container.dataset.inView = String(answer.in_view);
    container.dataset.clustered = String(answer.clustered);
  }

  let asked = 0;
  let current = null;
  async function refresh() {
    const ticket = ++asked;
    const answer = await api(mapPath(map.getZoom(), map.getBounds()));
    if (ticket !== asked) return; // the view moved again meanwhile
    current = answer;
    draw(answer);
    document.body.dataset.mapDrawn = String(ticket);
  }

  if (overall.extent) {
    const [south, west, north, east] = overall.extent;
    map.fitBounds(L.latLngBounds([south, west], [north, east]).pad(0.2), { maxZoom: 8, animate: false });
  }
  await refresh();
  map.on("moveend", () => refresh().catch((error) => { count.textContent = `map: ${error.detail || error.message}`; }));

  let timer = null;
  const unsubscribe = onLive((message) => {
    if (message.type !== "gateway" && message.type !== "gateways" && message.type !== "gateway_deleted" && message.type !== "resync") return;
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      refresh().catch(() => {});
    }, current && current.clustered ? REFRESH_MS.clusters : REFRESH_MS.sites);
  });
  document.body.dataset.ready = "map";
  return () => {
    unsubscribe();
    clearTimeout(timer);
    map.remove();
  };
}
