// niso registry web UI: enhancements only; every page works without this file.
// On /peers it refreshes the peer table from /ui/peers.json every two seconds, building
// cells with textContent so that nothing a peer reports can become markup.
"use strict";

function ago(ms) {
  const secs = Math.max(0, Math.floor((Date.now() - ms) / 1000));
  if (secs < 60) return "just now";
  if (secs < 3600) return Math.floor(secs / 60) + " min ago";
  if (secs < 86400) return Math.floor(secs / 3600) + " h ago";
  return Math.floor(secs / 86400) + " days ago";
}

function cell(row, text, title) {
  const td = document.createElement("td");
  td.textContent = text;
  if (title) td.title = title;
  row.appendChild(td);
}

function renderPeers(tbody, peers) {
  const rows = peers.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.peer = p.peer_id;
    cell(tr, p.peer_id);
    cell(tr, p.blocked ? "blocked" : p.connected ? "connected" : "known");
    cell(tr, p.latency_ms == null ? "—" : p.latency_ms + " ms");
    cell(tr, p.synced_to == null ? "—" : String(p.synced_to));
    cell(tr, p.last_sync_ms ? ago(p.last_sync_ms) : "never",
      p.last_sync_ms ? new Date(p.last_sync_ms).toISOString() : "");
    cell(tr, String(p.strikes));
    cell(tr, String(p.records_refused));
    return tr;
  });
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = document.createElement("td");
    td.colSpan = 7;
    td.textContent = "No peers known yet.";
    tr.appendChild(td);
    rows.push(tr);
  }
  tbody.replaceChildren(...rows);
}

function livePeers() {
  const tbody = document.querySelector("#peers tbody");
  const status = document.getElementById("live-status");
  if (!tbody || !status) return;
  async function tick() {
    try {
      const r = await fetch("/ui/peers.json", { credentials: "same-origin", cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      renderPeers(tbody, await r.json());
      status.textContent = "Live: updated " + new Date().toLocaleTimeString();
      status.dataset.updates = String(Number(status.dataset.updates || 0) + 1);
    } catch (e) {
      status.textContent = "Live updates paused: " + e.message;
    }
  }
  tick();
  setInterval(tick, 2000);
}

document.addEventListener("DOMContentLoaded", livePeers);
