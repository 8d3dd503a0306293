// One job's page: configuration, state history, errors, a preview of its outputs; cancel and delete.
"use strict";

(() => {
  if (bpj.page !== "job") return;
  const { el } = bpj;
  const name = new URLSearchParams(location.search).get("name") || "";
  let job = null;
  let gone = false;

  function fill(id, rows) {
    document.querySelector(`#${id} tbody`).replaceChildren(...rows);
  }

  function fact(term, ...value) {
    return [el("dt", {}, term), el("dd", {}, ...value)];
  }

  function numbered(rows, note) {
    if (!rows.length) return [el("tr", {}, el("td", { colspan: 2, class: "muted" }, note || "none"))];
    return rows.map((text, i) => el("tr", {}, el("td", { class: "num" }, i + 1), el("td", { class: "mono" }, text)));
  }

  function render(data) {
    job = data;
    document.title = `${data.displayName} · bpj local console`;
    document.getElementById("title").replaceChildren(data.displayName, " ", bpj.state(data.state));
    const stats = `${data.successful} succeeded, ${data.failed} failed` + (Number(data.incomplete) ? `, ${data.incomplete} incomplete` : "");
    document.getElementById("facts").replaceChildren(
      ...fact("Name", el("span", { class: "mono" }, data.name)),
      ...fact("Model", data.modelDisplayName ? `${data.modelDisplayName} ` : "", el("span", { class: "mono" }, data.model), data.modelVersionId ? ` (version ${data.modelVersionId})` : ""),
      ...fact("Created", bpj.when(data.createTime)),
      ...fact("Started", bpj.when(data.startTime)),
      ...fact("Ended", bpj.when(data.endTime)),
      ...fact("Instances", stats),
      ...fact("Progress", bpj.progress(data)),
      ...fact("Labels", ...bpj.labels(data.labels)),
    );
    const error = document.getElementById("error");
    if (data.error) error.replaceChildren(el("pre", { class: "error" }, `${data.error.code}: ${data.error.message}`));
    else error.replaceChildren(el("span", { class: "muted" }, "none"));
    fill("history", data.history.map((h) => el("tr", {}, el("td", {}, bpj.state(h.state)), el("td", {}, bpj.when(h.time)))));
    fill("failures", data.partialFailures.length
      ? data.partialFailures.map((f) => el("tr", {}, el("td", {}, f.code), el("td", { class: "mono" }, f.message)))
      : [el("tr", {}, el("td", { colspan: 2, class: "muted" }, "none"))]);
    fill("errors", numbered(data.errors, data.previewNote));
    fill("predictions", numbered(data.predictions, data.previewNote));
    document.getElementById("preview-note").textContent = data.previewNote;
    const files = data.files.map((f) => el("tr", {}, el("td", {}, `file, ${f.size} bytes`), el("td", { class: "mono" }, el(
      "a",
      { href: `/console/api/download?job=${encodeURIComponent(name)}&uri=${encodeURIComponent(f.uri)}`, download: true },
      f.uri,
    ))));
    fill("outputs", [...data.outputs.map((o) => el("tr", {}, el("td", {}, o.what), el("td", { class: "mono" }, o.uri))), ...files]);
    document.getElementById("config").textContent = data.config;
    document.getElementById("cancel").disabled = !data.cancellable;
    document.getElementById("delete").disabled = !data.deletable;
  }

  async function refresh() {
    try {
      render(await bpj.get("/console/api/job?name=" + encodeURIComponent(name)));
    } catch (e) {
      if (e.status === 404 || e.status === 400) gone = true; // no such job (any more): stop asking
      throw e;
    }
  }

  async function act(what) {
    try {
      await bpj.post(`/console/api/${what}`, { name });
      if (what === "delete") {
        gone = true;
        location.assign("/console/");
        return;
      }
      await refresh();
    } catch (e) {
      bpj.message(e.message);
    }
  }

  document.getElementById("cancel").addEventListener("click", () => act("cancel"));
  document.getElementById("delete").addEventListener("click", () => {
    if (confirm(`Delete the job ${job ? job.displayName : name}? Its outputs stay.`)) act("delete");
  });
  bpj.session().then(
    () => bpj.poll(refresh, 1000, () => !gone && !(job && job.terminal)),
    (e) => bpj.message(e.message),
  );
})();
