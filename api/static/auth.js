// TaskOverflow web page: the API key. When the operator turns keys on (API_KEYS), writes and
// every job endpoint need "Authorization: Bearer <key>"; app.js and console.js send the key
// set here with each call (PageAuth.headers) and, on a 401, show the API's error with a way
// to the key field (PageAuth.pointAtKey). With keys off nothing here is needed: the field
// stays folded away at the foot of the page and no header is sent.
"use strict";

const PageAuth = (() => {
  const STORE = "taskoverflow.apiKey";
  // What an Authorization header can carry: visible ASCII, no spaces (fetch() refuses the rest).
  const KEY_SHAPE = /^[\x21-\x7e]+$/;
  const $ = (id) => document.getElementById(id);

  // sessionStorage, not localStorage: the key is a credential, and one kept per tab ends with
  // the tab (a shared machine keeps nothing on disk once it is closed) yet survives a reload.
  // The cost: a new tab asks for it again.
  function read() {
    try {
      return sessionStorage.getItem(STORE) || "";
    } catch (err) {
      return ""; // storage blocked by the browser: no key
    }
  }

  // A 401: the API wants a key (none is set, or the one set is not accepted).
  class Unauthorized extends Error {}

  function headers(extra = {}) {
    const key = read();
    return key ? { ...extra, Authorization: "Bearer " + key } : { ...extra };
  }

  function openKeyField() {
    $("settings").open = true;
    $("api-key").focus();
  }

  // After an error shown in `box`: when it was a 401, a button to the key field.
  function pointAtKey(box, err) {
    if (!(err instanceof Unauthorized)) return;
    const go = document.createElement("button");
    go.type = "button";
    go.className = "link";
    go.textContent = "Enter an API key";
    go.addEventListener("click", openKeyField);
    box.append(" ", go);
  }

  function showState(message) {
    const set = Boolean(read());
    $("api-key-state").textContent =
      message || (set ? "A key is set for this tab and sent with every request." : "No key set.");
    $("api-key-forget").hidden = !set;
  }

  // Told to the page's scripts when the key changes (app.js, console.js).
  function changed() {
    document.dispatchEvent(new CustomEvent("taskoverflow:apikey"));
  }

  $("api-key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!KEY_SHAPE.test(key)) {
      showState("An API key is letters, digits and punctuation, without spaces.");
      $("api-key").focus();
      return;
    }
    try {
      sessionStorage.setItem(STORE, key);
    } catch (err) {
      showState("This browser does not let the page keep the key: " + err.message);
      return;
    }
    $("api-key").value = "";
    showState();
    changed();
  });

  $("api-key-forget").addEventListener("click", () => {
    try {
      sessionStorage.removeItem(STORE);
    } catch (err) {
      // nothing was kept
    }
    showState();
    $("api-key").focus();
    changed();
  });

  showState();
  return { headers, hasKey: () => Boolean(read()), Unauthorized, pointAtKey };
})();
