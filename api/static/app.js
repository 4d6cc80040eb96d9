// TaskOverflow web page: plain JavaScript against the public API (docs/API.md).
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);

// Show an error from the API (its {"error": ...} body) or the network, never swallow it.
function showError(message) {
  const box = $("error");
  box.textContent = message;
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
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new Error("Cannot reach the server: " + err.message);
  }
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("application/json") ? await response.json() : await response.text();
  if (!response.ok) {
    const reason = data && data.error ? data.error : response.status + " " + response.statusText;
    throw new Error(reason);
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
      showError("Could not update the todo: " + err.message);
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
      showError("Could not delete the todo: " + err.message);
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
    showError("Could not load the todos: " + err.message);
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
    showError("Could not add the todo: " + err.message);
  } finally {
    button.disabled = false;
  }
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

$("export").addEventListener("click", async () => {
  clearError();
  const button = $("export");
  const status = $("export-status");
  const download = $("download");
  button.disabled = true;
  download.hidden = true;
  status.className = "";
  try {
    const job = await call("POST", "/todos/ical");
    for (;;) {
      const state = await call("GET", new URL(job.task_url).pathname.slice(API.length));
      status.className = state.task_status;
      status.textContent = "Export " + state.task_status + (state.reason ? ": " + state.reason : "");
      if (state.task_status === "SUCCESS") {
        download.href = state.result_url;
        download.hidden = false;
        download.focus();
        break;
      }
      if (state.task_status === "FAILURE") break;
      await sleep(400);
    }
  } catch (err) {
    status.textContent = "";
    showError("Calendar export failed: " + err.message);
  } finally {
    button.disabled = false;
  }
});

loadTodos();
