// The dashboard's only script: the live log (Server-Sent Events), and re-reading the parts of a
// page that change. Everything it inserts is either text (textContent) or HTML the server
// rendered with autoescaping.
"use strict";

function refresh(element, everyMs, shouldStop) {
  let extra = 30; // polls after the job ended, while its results are collected
  async function tick() {
    try {
      const answer = await fetch(element.dataset.refresh, {credentials: "same-origin", cache: "no-store"});
      if (answer.ok) {
        element.innerHTML = await answer.text();
      }
    } catch (error) { /* the next tick tries again */ }
    const stop = shouldStop(element);
    if (stop === "now" || (stop === "soon" && --extra <= 0)) {
      return;
    }
    window.setTimeout(tick, everyMs);
  }
  window.setTimeout(tick, everyMs);
}

function jobState(panel) {
  const body = panel.querySelector(".panel-body");
  if (!body) return "now";
  if (body.dataset.final === "1") return "now";
  return body.dataset.ended === "1" ? "soon" : null;
}

function streamLog(pre) {
  const status = document.getElementById("log-state");
  const source = new EventSource(pre.dataset.stream);
  source.onopen = () => { status.textContent = "live"; };
  source.onmessage = (event) => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(document.createTextNode(event.data + "\n"));
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  source.addEventListener("end", (event) => {
    let state = "";
    try { state = JSON.parse(event.data).state; } catch (error) { state = ""; }
    status.textContent = "ended" + (state ? " (" + state + ")" : "");
    status.dataset.ended = "1";
    source.close();
  });
  source.onerror = () => {
    if (status.dataset.ended !== "1") status.textContent = "reconnecting…";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const log = document.getElementById("log");
  if (log && log.dataset.stream) streamLog(log);
  const panel = document.getElementById("panel");
  if (panel && jobState(panel) !== "now") refresh(panel, 2000, jobState);
  const list = document.getElementById("jobs");
  if (list) refresh(list, 5000, () => null);
});
