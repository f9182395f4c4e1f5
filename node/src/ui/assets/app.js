// niso registry web UI: enhancements only; every page works without this file.
// Commands get copy buttons. On /peers it refreshes the peer table from /ui/peers.json every two seconds, building
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
  return td;
}

function bytes(n) {
  if (n < 1000) return n + " B";
  const units = ["kB", "MB", "GB", "TB", "PB"];
  let v = n / 1000;
  let i = 0;
  // As niso_protocol::size::human: 999.95 and up is the next unit's 1.0.
  while (v >= 999.95 && i < units.length - 1) { v /= 1000; i++; }
  return v.toFixed(1) + " " + units[i];
}

function emptyRow(cols, text) {
  const tr = document.createElement("tr");
  tr.className = "empty";
  const td = document.createElement("td");
  td.colSpan = cols;
  td.textContent = text;
  tr.appendChild(td);
  return tr;
}

function renderFetches(tbody, fetches) {
  const rows = fetches.map((f) => {
    const tr = document.createElement("tr");
    cell(tr, f.package);
    cell(tr, f.digest.slice(0, 12) + "…", f.digest);
    cell(tr, bytes(f.verified) + " of " + bytes(f.size), f.verified + " of " + f.size + " bytes");
    return tr;
  });
  if (rows.length === 0) rows.push(emptyRow(3, "No blob is being fetched."));
  tbody.replaceChildren(...rows);
}

function renderPeers(tbody, peers) {
  const rows = peers.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.peer = p.peer_id;
    cell(tr, p.peer_id);
    cell(tr, p.blocked ? "blocked" : p.connected ? "connected" : "known");
    cell(tr, p.latency_ms == null ? "—" : p.latency_ms + " ms");
    const behind = cell(tr, p.records_behind == null ? "—" : String(p.records_behind),
      p.records_behind == null ? "" : "synced to " + p.synced_to + " of " + p.log_head + " in its log");
    behind.className = "behind";
    cell(tr, String(p.blobs_pending));
    cell(tr, p.last_sync_ms ? ago(p.last_sync_ms) : "never",
      p.last_sync_ms ? new Date(p.last_sync_ms).toISOString() : "");
    cell(tr, String(p.strikes));
    cell(tr, String(p.records_refused));
    return tr;
  });
  if (rows.length === 0) rows.push(emptyRow(8, "No peers known yet."));
  tbody.replaceChildren(...rows);
}

function livePeers() {
  const tbody = document.querySelector("#peers tbody");
  const fetches = document.querySelector("#fetches tbody");
  const status = document.getElementById("live-status");
  if (!tbody || !fetches || !status) return;
  async function tick() {
    try {
      const r = await fetch("/ui/peers.json", { credentials: "same-origin", cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const state = await r.json();
      renderPeers(tbody, state.peers);
      renderFetches(fetches, state.fetches);
      status.textContent = "Live: updated " + new Date().toLocaleTimeString();
      status.dataset.updates = String(Number(status.dataset.updates || 0) + 1);
    } catch (e) {
      status.textContent = "Live updates paused: " + e.message;
    }
  }
  tick();
  setInterval(tick, 2000);
}

// A "Copy" button beside each command; without a clipboard (plain HTTP off localhost) it
// selects the command so that Ctrl-C copies it.
function copyButtons() {
  for (const code of document.querySelectorAll(".commands code")) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy: " + code.textContent);
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(code.textContent);
        button.textContent = "Copied";
      } catch (e) {
        const range = document.createRange();
        range.selectNodeContents(code);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Selected: press Ctrl-C";
      }
    });
    code.parentElement.after(button);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  copyButtons();
  livePeers();
});
