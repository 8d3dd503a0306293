// The models page: every model, its versions with their artifacts, and the jobs that used it.
"use strict";

(() => {
  if (bpj.page !== "models") return;
  const { el } = bpj;

  function versions(model) {
    return el("ul", {}, ...model.versions.map((v) => el(
      "li",
      {},
      `version ${v.versionId}`,
      v.aliases.length ? ` (${v.aliases.join(", ")})` : "",
      ": ",
      el("span", { class: "mono" }, v.artifactUri || "no artifact"),
      el("div", { class: "muted mono" }, v.image),
    )));
  }

  function jobs(model) {
    if (!model.jobs.length) return el("span", { class: "muted" }, "none");
    return el("ul", {}, ...model.jobs.map((j) => el(
      "li",
      {},
      bpj.jobLink({ name: j.name, displayName: j.displayName, id: j.name }),
      " ",
      bpj.state(j.state),
      j.version ? ` version ${j.version}` : "",
    )));
  }

  async function refresh() {
    const data = await bpj.get("/console/api/models");
    const rows = data.models.map((m) => el(
      "tr",
      { "data-name": m.name },
      el("td", {}, m.displayName, el("div", { class: "muted mono" }, m.name)),
      el("td", {}, versions(m)),
      el("td", {}, jobs(m)),
    ));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "no models")));
    document.querySelector("#models tbody").replaceChildren(...rows);
  }

  bpj.session().then(() => bpj.poll(refresh, 3000), (e) => bpj.message(e.message));
})();
