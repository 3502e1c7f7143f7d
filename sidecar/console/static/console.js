// memsidecar console: progressive enhancement only; every view works without this file.
"use strict";

function refreshJobs(table) {
  fetch("/console/adapters/jobs.json", { credentials: "same-origin" })
    .then((response) => (response.ok ? response.json() : null))
    .then((body) => {
      if (!body) return;
      let running = false;
      for (const job of body.data) {
        const row = table.querySelector(`tr[data-job-id="${CSS.escape(job.id)}"]`);
        if (!row) continue;
        row.querySelector(".status").textContent = job.status;
        const bar = row.querySelector("progress");
        if (job.progress) {
          bar.max = job.progress.total;
          bar.value = job.progress.step;
          if (job.progress.loss !== null) row.querySelector(".loss").textContent = job.progress.loss.toFixed(3);
        }
        row.querySelector(".result").textContent = job.result ? job.result.adapter : job.error || "";
        running = running || job.status === "queued" || job.status === "running";
      }
      if (running) setTimeout(() => refreshJobs(table), 1000);
    })
    .catch(() => setTimeout(() => refreshJobs(table), 5000));
}

document.addEventListener("DOMContentLoaded", () => {
  const jobs = document.getElementById("jobs");
  if (jobs) refreshJobs(jobs);
  const auto = document.getElementById("auto-refresh");
  if (auto) {
    auto.checked = sessionStorage.getItem("memsidecar-auto-refresh") === "1";
    const tick = () => { if (auto.checked) window.location.reload(); };
    let timer = auto.checked ? setInterval(tick, 15000) : null;
    auto.addEventListener("change", () => {
      sessionStorage.setItem("memsidecar-auto-refresh", auto.checked ? "1" : "0");
      clearInterval(timer);
      timer = auto.checked ? setInterval(tick, 15000) : null;
    });
  }
  for (const form of document.querySelectorAll("form")) {
    const danger = form.querySelector("button.danger");
    if (danger) form.addEventListener("submit", (event) => { if (!window.confirm("Delete this memory?")) event.preventDefault(); });
  }
});
