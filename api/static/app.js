// TaskOverflow web page: plain JavaScript against the public API (docs/API.md).
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);

// Show an error from the API (its {"error": ...} body) or the network, never swallow it.
// `err`: what was thrown; a 401 also gets a way to the API key field.
function showError(message, err) {
  const box = $("error");
  box.textContent = message;
  PageAuth.pointAtKey(box, err);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function call(method, path, body) {
  let response;
  try {
    response = await fetch(API + path, {
      method,
      // The API key, when one is set (auth.js): writes and jobs need it when keys are on.
      headers: PageAuth.headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new Error("Cannot reach the server: " + err.message);
  }
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("application/json") ? await response.json() : await response.text();
  if (!response.ok) {
    const reason = data && data.error ? data.error : response.status + " " + response.statusText;
    throw response.status === 401 ? new PageAuth.Unauthorized(reason) : new Error(reason);
  }
  return data;
}

// Deadlines are naive UTC on the wire ("2024-04-19T14:00:00"); show them in local time.
function formatDeadline(value) {
  const when = new Date(value + "Z");
  return isNaN(when) ? value : when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function renderTodo(todo) {
  const item = document.createElement("li");
  item.className = "todo" + (todo.completed ? " done" : "");
  item.dataset.id = todo.id;

  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = todo.completed;
  box.id = "done-" + todo.id;
  box.addEventListener("change", async () => {
    clearError();
    box.disabled = true;
    try {
      const updated = await call("PUT", "/todos/" + todo.id, { completed: box.checked });
      item.replaceWith(renderTodo(updated));
    } catch (err) {
      box.checked = !box.checked;
      showError("Could not update the todo: " + err.message, err);
      box.disabled = false;
    }
  });

  const title = document.createElement("label");
  title.className = "title";
  title.htmlFor = box.id;
  title.textContent = todo.title;

  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "delete";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", "Delete " + todo.title);
  remove.addEventListener("click", async () => {
    clearError();
    remove.disabled = true;
    try {
      await call("DELETE", "/todos/" + todo.id);
      item.remove();
      updateEmpty();
    } catch (err) {
      showError("Could not delete the todo: " + err.message, err);
      remove.disabled = false;
    }
  });

  item.append(box, title, remove);
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = todo.deadline_at ? "Due " + formatDeadline(todo.deadline_at) : "No deadline";
  item.append(meta);
  if (todo.description) {
    const description = document.createElement("div");
    description.className = "description";
    description.textContent = todo.description;
    item.append(description);
  }
  return item;
}

function updateEmpty() {
  $("empty").hidden = $("todos").children.length > 0;
}

async function loadTodos() {
  try {
    const todos = await call("GET", "/todos");
    $("todos").replaceChildren(...todos.map(renderTodo));
    updateEmpty();
  } catch (err) {
    showError("Could not load the todos: " + err.message, err);
  }
}

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const title = $("title").value;
  if (!title.trim()) {
    showError("A todo needs a title.");
    $("title").focus();
    return;
  }
  const body = { title, description: $("description").value };
  if ($("deadline").value) {
    // datetime-local is the user's local time; the API stores UTC.
    body.deadline_at = new Date($("deadline").value).toISOString();
  }
  const button = event.submitter || event.target.querySelector("button");
  button.disabled = true;
  try {
    const todo = await call("POST", "/todos", body);
    $("todos").prepend(renderTodo(todo));
    updateEmpty();
    event.target.reset();
    $("title").focus();
  } catch (err) {
    showError("Could not add the todo: " + err.message, err);
  } finally {
    button.disabled = false;
  }
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A job stays in one of these for good.
const FINAL = ["SUCCESS", "FAILURE", "CANCELLED"];

// Thrown when a job's events stream cannot be had: the page polls the job instead.
class StreamUnavailable extends Error {}

// A job's state as the page shows it, from the jobs resource (the events stream's data).
function fromJob(job) {
  return { status: job.status, reason: job.error, progress: job.progress, resultUrl: job.links.result };
}

// Follow a job through its events stream (GET /api/v1/jobs/{id}/events), which pushes each
// change of its state and progress, until it is final. Rejects with StreamUnavailable when
// there is no stream to be had: an error before its first event (a proxy that buffers or
// blocks streams), or the browser giving up reconnecting. A stream cut later is reconnected
// by the browser itself, and the new stream opens with the job's state as it is then.
function streamJob(jobId, onState) {
  return new Promise((resolve, reject) => {
    const source = new EventSource(API + "/jobs/" + encodeURIComponent(jobId) + "/events");
    let heard = false;
    const onEvent = (event) => {
      heard = true;
      const state = fromJob(JSON.parse(event.data));
      onState(state);
      if (FINAL.includes(state.status)) {
        source.close(); // before the server ends it: else the browser would reconnect
        resolve(state);
      }
    };
    source.addEventListener("status", onEvent);
    source.addEventListener("progress", onEvent);
    source.addEventListener("error", () => {
      if (!heard || source.readyState === EventSource.CLOSED) {
        source.close();
        reject(new StreamUnavailable("no events stream"));
      }
    });
  });
}

// Follow a job by asking the course's status URL every 400 ms until it is final.
async function pollJob(taskUrl, onState) {
  for (;;) {
    const body = await call("GET", new URL(taskUrl).pathname.slice(API.length));
    const state = {
      status: body.job_status || body.task_status, // job_status: what task_status cannot say
      reason: body.reason,
      progress: body.progress,
      resultUrl: body.result_url,
    };
    onState(state);
    if (FINAL.includes(state.status)) return state;
    await sleep(400);
  }
}

async function followJob(task, onState) {
  // An EventSource cannot send the API key: with a key set the page polls instead.
  if (typeof EventSource === "function" && !PageAuth.hasKey()) {
    try {
      return await streamJob(task.task_id, onState);
    } catch (err) {
      if (!(err instanceof StreamUnavailable)) throw err;
    }
  }
  return pollJob(task.task_url, onState);
}

// "rendering: 1,200 of 300,000" (the total is unknown at first).
function describeProgress(progress) {
  const done = progress.done.toLocaleString();
  const total = progress.total === null ? "" : " of " + progress.total.toLocaleString();
  return progress.stage + ": " + done + total;
}

function showExport(state) {
  const status = $("export-status");
  status.className = state.status;
  status.textContent = "Export " + state.status + (state.reason ? ": " + state.reason : "");
  const bar = $("export-progress");
  const detail = $("export-progress-text");
  const running = state.status === "STARTED" && Boolean(state.progress);
  bar.hidden = detail.hidden = !running;
  if (!running) return;
  detail.textContent = describeProgress(state.progress);
  if (state.progress.total) {
    bar.max = state.progress.total;
    bar.value = state.progress.done;
  } else {
    bar.removeAttribute("value"); // indeterminate until the total is known
  }
}

// Where the download link points for a finished job's result. With an API key set, the link
// could not send it: the page fetches the file itself and links to its copy (a blob: URL).
let resultCopy = null;

async function downloadUrl(resultUrl) {
  if (resultCopy) URL.revokeObjectURL(resultCopy);
  resultCopy = null;
  if (!PageAuth.hasKey()) return resultUrl;
  const text = await call("GET", new URL(resultUrl).pathname.slice(API.length));
  resultCopy = URL.createObjectURL(new Blob([text], { type: "text/calendar" }));
  return resultCopy;
}

$("export").addEventListener("click", async () => {
  clearError();
  const button = $("export");
  const status = $("export-status");
  const download = $("download");
  button.disabled = true;
  download.hidden = true;
  status.className = "";
  try {
    const task = await call("POST", "/todos/ical");
    const state = await followJob(task, showExport);
    if (state.status === "SUCCESS") {
      download.href = await downloadUrl(state.resultUrl);
      download.hidden = false;
      download.focus();
    }
  } catch (err) {
    status.textContent = "";
    $("export-progress").hidden = $("export-progress-text").hidden = true;
    showError("Calendar export failed: " + err.message, err);
  } finally {
    button.disabled = false;
  }
});

// A key entered after a 401: that error no longer stands.
document.addEventListener("taskoverflow:apikey", clearError);

loadTodos();
