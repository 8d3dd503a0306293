// The jobs page: the list newest first, filtered by state and label, refreshed every second.
"use strict";

(() => {
  if (bpj.page !== "jobs") return;
  const { el } = bpj;
  const params = new URLSearchParams(location.search);
  const stateBox = document.getElementById("state");
  const labelBox = document.getElementById("label");
  labelBox.value = params.get("label") || "";
  let statesShown = false;

  function query() {
    const q = new URLSearchParams();
    if (stateBox.value) q.set("state", stateBox.value);
    if (labelBox.value.trim()) q.set("label", labelBox.value.trim());
    return q.toString();
  }

  function row(job) {
    return el(
      "tr",
      { "data-name": job.name, "data-state": job.state },
      el("td", {}, bpj.jobLink(job), el("div", { class: "muted mono" }, job.id)),
      el("td", {}, bpj.state(job.state)),
      el("td", {}, job.modelDisplayName, el("div", { class: "muted mono" }, job.model)),
      el("td", {}, bpj.when(job.createTime)),
      el("td", {}, bpj.when(job.endTime)),
      el("td", { class: "num" }, job.successful),
      el("td", { class: "num" }, job.failed),
      el("td", {}, bpj.progress(job)),
      el("td", {}, ...bpj.labels(job.labels)),
    );
  }

  async function refresh() {
    const q = query();
    const data = await bpj.get("/console/api/jobs" + (q ? "?" + q : ""));
    if (!statesShown) {
      for (const s of data.states) stateBox.append(el("option", { value: s }, s.replace("JOB_STATE_", "")));
      stateBox.value = params.get("state") || "";
      statesShown = true;
    }
    document.querySelector("#jobs tbody").replaceChildren(...data.jobs.map(row));
    document.getElementById("count").textContent = `${data.jobs.length} job(s)`;
  }

  function filtersChanged(event) {
    if (event) event.preventDefault();
    const q = query();
    history.replaceState(null, "", location.pathname + (q ? "?" + q : ""));
    refresh().catch((e) => bpj.message(e.message));
  }

  stateBox.addEventListener("change", filtersChanged);
  labelBox.addEventListener("change", filtersChanged);
  document.getElementById("filters").addEventListener("submit", filtersChanged);
  bpj.session().then(() => bpj.poll(refresh, 1000), (e) => bpj.message(e.message));
})();
