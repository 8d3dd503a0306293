// bpj local console: helpers shared by the pages. Every value shown comes from the JSON API and is user data
// (job names, labels, errors, predictions): it goes into the DOM as text nodes only, never as HTML.
"use strict";

const bpj = (() => {
  let csrf = null;
  // One page holds the three views; the path says which one shows.
  const page = { "/console/job": "job", "/console/models": "models" }[location.pathname] || "jobs";
  document.getElementById(`${page}-page`).hidden = false;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function message(text) {
    document.getElementById("message").textContent = text || "";
  }

  async function answer(response) {
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const why = data && data.error ? data.error.message : response.statusText;
      const error = new Error(`${response.status}: ${why}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  async function get(url) {
    return answer(await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }));
  }

  async function post(url, body) {
    if (csrf === null) await session();
    const headers = { "Content-Type": "application/json", Accept: "application/json", "X-BPJ-CSRF": csrf || "" };
    return answer(await fetch(url, { method: "POST", credentials: "same-origin", headers, body: JSON.stringify(body) }));
  }

  async function session() {
    const data = await get("/console/api/session");
    csrf = data.csrf;
    document.getElementById("parent").textContent = data.parent;
    return data;
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function state(name) {
    return el("span", { class: `state ${name}` }, name.replace("JOB_STATE_", ""));
  }

  function jobLink(job) {
    return el("a", { href: "/console/job?name=" + encodeURIComponent(job.name) }, job.displayName || job.id);
  }

  // A bar for running jobs: the share of instances done when the input's size is known, else an
  // indeterminate bar next to the count.
  function progress(job) {
    const done = Number(job.successful) + Number(job.failed);
    if (job.terminal) return el("span", { class: "muted" }, "ended");
    const bar = el("progress", { "data-done": done });
    const total = Number(job.total || 0);
    if (total > 0) {
      bar.max = total;
      bar.value = Math.min(done, total);
      return el("span", {}, bar, ` ${done} / ${total}`);
    }
    return el("span", {}, bar, ` ${done}`);
  }

  function labels(map) {
    return Object.entries(map || {}).map(([k, v]) => el("span", { class: "label" }, v === "" ? k : `${k}=${v}`));
  }

  // Call fn now and then every `ms` milliseconds while keepGoing() says so; errors are shown, not fatal.
  function poll(fn, ms, keepGoing) {
    async function tick() {
      try {
        await fn();
        message("");
      } catch (e) {
        message(e.message);
      }
      if (!keepGoing || keepGoing()) setTimeout(tick, ms);
    }
    tick();
  }

  return { page, el, message, get, post, session, when, state, jobLink, progress, labels, poll };
})();
