// TaskOverflow jobs console: counts, backlog, windows, failures, the job list and one job's
// timeline, with cancel and retry. Plain JavaScript against the public API (docs/API.md);
// server data only ever reaches the page as text (textContent), never as markup.
"use strict";

(() => {
  const API = "/api/v1";
  const REFRESH_MS = 5000;
  const PAGE_SIZE = 10;
  const POLL_MS = 1000; // following a job without its events stream (see follow)
  const FINAL = ["SUCCESS", "FAILURE", "CANCELLED"];
  const $ = (id) => document.getElementById(id);

  // --- talking to the API -----------------------------------------------------------------

  async function api(method, path) {
    let response;
    try {
      // The API key, when one is set (auth.js): every job endpoint needs it when keys are on.
      response = await fetch(path.startsWith("http") ? path : API + path, { method, headers: PageAuth.headers() });
    } catch (err) {
      throw new Error("Cannot reach the server: " + err.message);
    }
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("application/json") ? await response.json() : null;
    if (!response.ok) {
      const reason = data && data.error ? data.error : response.status + " " + response.statusText;
      throw response.status === 401 ? new PageAuth.Unauthorized(reason) : new Error(reason);
    }
    return data;
  }

  // `err`: what was thrown; a 401 also gets a way to the API key field.
  function showError(message, err) {
    const box = $("console-error");
    box.textContent = message;
    PageAuth.pointAtKey(box, err);
    box.hidden = false;
  }

  function clearError() {
    $("console-error").hidden = true;
    $("console-error").textContent = "";
  }

  // --- formatting ---------------------------------------------------------------------------

  // Timestamps are naive UTC on the wire ("2026-11-29T10:00:00.120000"): shown in local time.
  function when(value) {
    if (!value) return "–";
    const date = new Date(value + "Z");
    return isNaN(date) ? value : date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return (ms / 60000).toFixed(1) + " min";
  }

  const number = (value) => (value === null || value === undefined ? "–" : value.toLocaleString());
  const shortId = (id) => id.slice(0, 8);

  // Replace a list's items unless they are the same as shown, keeping keyboard focus on the
  // button of the same job (a refresh every few seconds must not throw the user's place away).
  function replaceItems(container, key, items) {
    if (container.dataset.key === key) return;
    container.dataset.key = key;
    const focused = container.contains(document.activeElement) ? document.activeElement.dataset.jobId : null;
    container.replaceChildren(...items());
    if (focused) {
      const again = Array.from(container.querySelectorAll("button")).find((b) => b.dataset.jobId === focused);
      if (again) again.focus();
    }
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // --- counts, backlog and windows -------------------------------------------------------------

  function showStats(stats) {
    for (const [state, count] of Object.entries(stats.unfinished)) {
      $("count-" + state).textContent = number(count);
    }
    const backlog = stats.backlog;
    $("backlog-ready").textContent = backlog ? number(backlog.ready) : "?";
    $("backlog-in-flight").textContent = backlog ? number(backlog.in_flight) : "?";
    $("backlog-delayed").textContent = backlog ? number(backlog.delayed) : "?";
    if (backlog) {
      const dead = backlog.dead_lettered ? ", " + number(backlog.dead_lettered) + " dead-lettered" : "";
      $("backlog-note").textContent = "Messages on " + backlog.broker + " queue " + backlog.queue + dead + ".";
    } else {
      $("backlog-note").textContent = "The broker could not be read: " + stats.backlog_error;
    }
    const rows = [
      ["Succeeded", (w) => number(w.finished.SUCCESS)],
      ["Failed", (w) => number(w.finished.FAILURE)],
      ["Cancelled", (w) => number(w.finished.CANCELLED)],
      ["Jobs per minute", (w) => w.throughput_per_min.toLocaleString(undefined, { maximumSignificantDigits: 3 })],
      ["Queue wait p50", (w) => duration(w.queue_wait_ms.p50)],
      ["Queue wait p95", (w) => duration(w.queue_wait_ms.p95)],
      ["Run time p50", (w) => duration(w.run_ms.p50)],
      ["Run time p95", (w) => duration(w.run_ms.p95)],
    ];
    $("console-windows").tBodies[0].replaceChildren(
      ...rows.map(([label, value]) => {
        const row = element("tr");
        const head = element("th", "", label);
        head.scope = "row";
        row.append(head, ...stats.windows.map((w) => element("td", "", value(w))));
        return row;
      }),
    );
    replaceItems($("console-failures"), JSON.stringify(stats.recent_failures), () =>
      stats.recent_failures.map((failure) => {
        const item = element("li");
        const open = element("button", "link", "Job " + shortId(failure.id));
        open.type = "button";
        open.dataset.jobId = failure.id;
        open.setAttribute("aria-label", "Show failed job " + failure.id);
        open.addEventListener("click", () => selectJob(failure.id, { focus: true }));
        item.append(open, element("span", "hint", " " + when(failure.finished_at)));
        item.append(element("div", "reason", failure.error || "no reason recorded"));
        return item;
      }),
    );
    $("failures-empty").hidden = stats.recent_failures.length > 0;
    $("console-updated").textContent = "Updated " + when(stats.generated_at);
  }

  // --- the job list -----------------------------------------------------------------------------

  const list = { tokens: [null], index: 0, next: null };

  function jobsPath() {
    const query = new URLSearchParams({ page_size: PAGE_SIZE });
    const status = $("job-status-filter").value;
    if (status) query.set("status", status);
    const token = list.tokens[list.index];
    if (token) query.set("page_token", token);
    return "/jobs?" + query;
  }

  function showJobs(page) {
    replaceItems($("console-jobs"), JSON.stringify([page.jobs, selected.id]), () =>
      page.jobs.map((job) => {
        const item = element("li");
        const open = element("button", "job-row");
        open.type = "button";
        open.dataset.jobId = job.id;
        open.append(
          element("span", "job-id", shortId(job.id)),
          element("span", "badge " + job.status, job.status),
          element("span", "hint", when(job.created_at)),
        );
        open.setAttribute("aria-label", "Job " + job.id + ", " + job.status + ", created " + when(job.created_at));
        if (job.id === selected.id) open.setAttribute("aria-current", "true");
        open.addEventListener("click", () => selectJob(job.id, { focus: true }));
        item.append(open);
        return item;
      }),
    );
    $("jobs-empty").hidden = page.jobs.length > 0;
    list.next = page.next_page_token;
    $("jobs-next").hidden = !list.next;
    $("jobs-first").hidden = list.index === 0;
  }

  async function refresh() {
    try {
      const [stats, page] = await Promise.all([api("GET", "/jobs/stats"), api("GET", jobsPath())]);
      showStats(stats);
      showJobs(page);
      clearError();
    } catch (err) {
      showError("Could not refresh the console: " + err.message, err);
    }
  }

  // --- one job: details, timeline, live updates, actions --------------------------------------

  const selected = { id: null, job: null, attempts: null, stream: null };

  function field(name, value) {
    const group = element("div");
    group.append(element("dt", "", name), element("dd", "", value));
    return group;
  }

  // Created, each attempt (ended ones from /attempts; the running one; the rest lost with
  // their worker), then how it ended.
  function timeline(job, attempts) {
    const items = [["Created", when(job.created_at), ""]];
    const ended = new Map(((attempts && attempts.attempts) || []).map((a) => [a.attempt, a]));
    const count = Math.max(job.attempts, ...ended.keys(), 0);
    for (let n = 1; n <= count; n++) {
      const attempt = ended.get(n);
      if (attempt) {
        const detail = [
          "ran " + duration(attempt.run_ms),
          attempt.worker ? "on " + attempt.worker : "",
          attempt.error || "",
        ].filter(Boolean);
        items.push(["Attempt " + n + ": " + attempt.outcome, when(attempt.started_at), detail.join(" · ")]);
      } else if (n === job.attempts && job.status === "STARTED") {
        const progress = job.progress
          ? job.progress.stage + " " + number(job.progress.done) + (job.progress.total === null ? "" : " of " + number(job.progress.total))
          : "no progress reported yet";
        items.push(["Attempt " + n + ": running", when(job.started_at), progress]);
      } else if (!attempts) {
        items.push(["Attempt " + n, "", "loading…"]);
      } else {
        // Counted when claimed, never recorded as ended: its worker died mid-attempt.
        items.push(["Attempt " + n + ": lost (worker died)", "", "it never reported an end"]);
      }
    }
    if (job.cancel_requested && !FINAL.includes(job.status)) items.push(["Cancel requested", "", "stops at its next progress report"]);
    if (FINAL.includes(job.status)) items.push([job.status, when(job.finished_at), job.error || ""]);
    $("job-timeline").replaceChildren(
      ...items.map(([what, at, detail]) => {
        const item = element("li", "step");
        item.append(element("span", "what", what));
        if (at) item.append(element("span", "hint", " " + at));
        if (detail) item.append(element("div", "detail", detail));
        return item;
      }),
    );
  }

  function showJob(job) {
    const previous = selected.job;
    selected.job = job;
    $("job-detail-heading").textContent = "Job " + job.id;
    // Announced (a live region) only when the status changes, not at every progress report.
    if (!previous || previous.id !== job.id || previous.status !== job.status || previous.cancel_requested !== job.cancel_requested) {
      const cancelling = job.cancel_requested && !FINAL.includes(job.status) ? " (cancel requested)" : "";
      $("job-detail-status").textContent = "Status: " + job.status + cancelling;
      $("job-detail-status").className = "status " + job.status;
    }
    const fields = [
      ["Kind", job.kind],
      ["Attempts", String(job.attempts)],
      ["Created", when(job.created_at)],
      ["Started", when(job.started_at)],
      ["Finished", when(job.finished_at)],
      ["Queue wait", duration(job.queue_wait_ms)],
      ["Run time", duration(job.run_ms)],
    ];
    if (job.error) fields.push(["Reason", job.error]);
    if (job.retry_of) fields.push(["Retry of", job.retry_of]);
    $("job-detail-fields").replaceChildren(...fields.map(([name, value]) => field(name, value)));
    const bar = $("job-detail-progress");
    bar.hidden = !(job.status === "STARTED" && job.progress);
    if (!bar.hidden) {
      if (job.progress.total) {
        bar.max = job.progress.total;
        bar.value = job.progress.done;
      } else {
        bar.removeAttribute("value");
      }
    }
    // Only what the job's links offer (the API decides what its state allows).
    $("job-cancel").hidden = !job.links.cancel;
    $("job-retry").hidden = !job.links.retry;
    timeline(job, selected.attempts);
  }

  // Reads of the attempts can overlap (events come faster than answers): only the latest
  // asked for is shown.
  let attemptsAsked = 0;

  async function loadAttempts(jobId) {
    const asked = ++attemptsAsked;
    const attempts = await api("GET", "/jobs/" + encodeURIComponent(jobId) + "/attempts");
    if (selected.id === jobId && asked === attemptsAsked) {
      selected.attempts = attempts;
      if (selected.job) timeline(selected.job, attempts);
    }
  }

  function stopStream() {
    if (selected.stream) selected.stream.close();
    selected.stream = null;
  }

  // A new state of the followed job (from its events stream or a poll).
  function onJob(jobId, job) {
    if (selected.id !== jobId) return;
    const changed = !selected.job || selected.job.status !== job.status || selected.job.attempts !== job.attempts;
    // An attempt ends with a change of status: until its record is read, the timeline
    // says "loading" rather than call the attempt lost.
    if (changed) selected.attempts = null;
    showJob(job);
    if (changed) loadAttempts(jobId).catch((err) => showError("Could not read the attempts: " + err.message, err));
    if (FINAL.includes(job.status)) {
      stopStream(); // before the server ends it: else the browser would reconnect
      refresh();
    }
  }

  // Follow the selected job until it is final: its events stream (every change of its state
  // and progress), or, with an API key set (an EventSource cannot send it) or no EventSource,
  // the job read every POLL_MS.
  function follow(jobId) {
    stopStream();
    if (PageAuth.hasKey() || typeof EventSource !== "function") {
      poll(jobId);
      return;
    }
    const source = new EventSource(API + "/jobs/" + encodeURIComponent(jobId) + "/events");
    selected.stream = source;
    const onEvent = (event) => onJob(jobId, JSON.parse(event.data));
    source.addEventListener("status", onEvent);
    source.addEventListener("progress", onEvent);
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && selected.stream === source) selected.stream = null;
    });
  }

  function poll(jobId) {
    let timer = null;
    const poller = { close: () => clearTimeout(timer) };
    selected.stream = poller; // stopped as a stream is (stopStream)
    const next = async () => {
      try {
        const job = await api("GET", "/jobs/" + encodeURIComponent(jobId));
        if (selected.stream === poller) onJob(jobId, job);
      } catch (err) {
        if (selected.stream !== poller) return;
        showError("Could not follow job " + jobId + ": " + err.message, err);
        if (err instanceof PageAuth.Unauthorized) return stopStream(); // asking again won't help
      }
      if (selected.stream === poller) timer = setTimeout(next, POLL_MS);
    };
    timer = setTimeout(next, POLL_MS);
  }

  async function selectJob(jobId, { focus = false } = {}) {
    selected.id = jobId;
    selected.job = null;
    selected.attempts = null;
    for (const row of $("console-jobs").querySelectorAll("button.job-row")) {
      if (row.dataset.jobId === jobId) row.setAttribute("aria-current", "true");
      else row.removeAttribute("aria-current");
    }
    $("job-detail").hidden = false;
    try {
      const [job, attempts] = await Promise.all([
        api("GET", "/jobs/" + encodeURIComponent(jobId)),
        api("GET", "/jobs/" + encodeURIComponent(jobId) + "/attempts"),
      ]);
      if (selected.id !== jobId) return;
      selected.attempts = attempts;
      showJob(job);
      clearError();
      if (focus) $("job-detail-heading").focus();
      if (!FINAL.includes(job.status)) follow(jobId);
      else stopStream();
    } catch (err) {
      showError("Could not load job " + jobId + ": " + err.message, err);
    }
  }

  async function act(button, link, done) {
    clearError();
    button.disabled = true;
    try {
      const job = await api("POST", link);
      await done(job);
    } catch (err) {
      showError(button.textContent + " failed: " + err.message, err);
    } finally {
      button.disabled = false;
    }
  }

  $("job-cancel").addEventListener("click", () =>
    act($("job-cancel"), selected.job.links.cancel, async (job) => {
      showJob(job);
      if (FINAL.includes(job.status)) loadAttempts(job.id).catch(() => {});
      else follow(job.id); // running: its worker stops shortly, the stream shows it
      refresh();
    }),
  );

  $("job-retry").addEventListener("click", () =>
    act($("job-retry"), selected.job.links.retry, async (job) => {
      await selectJob(job.id, { focus: true });
      // The state as now shown, not the retry's answer (PENDING): a quick job may have
      // finished before the page read it, and a finished job sends no further event.
      if (selected.id === job.id && selected.job) {
        $("job-detail-status").textContent =
          "Retried as new job " + job.id + ". Status: " + selected.job.status;
      }
      refresh();
    }),
  );

  // --- opening, refreshing, paging ----------------------------------------------------------

  let timer = null;

  function schedule() {
    clearInterval(timer);
    timer = null;
    const open = !$("console-body").hidden;
    // Polling only while someone can see it: open, the tab visible, auto-refresh on.
    if (open && !document.hidden && $("console-auto").checked) timer = setInterval(refresh, REFRESH_MS);
  }

  function setOpen(open) {
    $("console-body").hidden = !open;
    $("console-toggle").setAttribute("aria-expanded", String(open));
    $("console-toggle").textContent = open ? "Close console" : "Open console";
    if (open) refresh();
    else stopStream();
    schedule();
  }

  $("console-toggle").addEventListener("click", () => setOpen($("console-body").hidden));
  $("console-refresh").addEventListener("click", refresh);
  $("console-auto").addEventListener("change", schedule);
  // A key entered (or forgotten): the console shows what it opens to now.
  document.addEventListener("taskoverflow:apikey", () => {
    if (!$("console-body").hidden) refresh();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !$("console-body").hidden) refresh();
    schedule();
  });
  $("job-status-filter").addEventListener("change", () => {
    list.tokens = [null];
    list.index = 0;
    refresh();
  });
  $("jobs-next").addEventListener("click", () => {
    list.tokens = list.tokens.slice(0, list.index + 1).concat([list.next]);
    list.index += 1;
    refresh();
  });
  $("jobs-first").addEventListener("click", () => {
    list.tokens = [null];
    list.index = 0;
    refresh();
  });
  const openFromHash = () => {
    if (location.hash === "#console" && $("console-body").hidden) setOpen(true);
  };
  window.addEventListener("hashchange", openFromHash);
  openFromHash();
})();
