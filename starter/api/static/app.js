// The job details page: live refresh, countdown, tabs, and the operations (confirm, call the API,
// show the outcome). Plain JavaScript on purpose: no build step, and the server renders all HTML.
"use strict";

// A job whose workflow does not answer: Terminate and Delete go out as signals (see unanswered.html).
(function () {
  const root = document.getElementById("unanswered");
  if (!root) return;
  const dialog = document.getElementById("signal-dialog");
  const outcome = document.getElementById("outcome");
  let operation = null;
  document.querySelectorAll("[data-signal-operation]").forEach((button) => {
    button.addEventListener("click", () => {
      operation = button.dataset.signalOperation;
      document.getElementById("signal-title").textContent = button.textContent;
      document.getElementById("signal-text").textContent =
        `Send ${operation} as a signal: Temporal records it now; the job carries it out when its worker runs again.`;
      document.getElementById("signal-reason").value = "";
      dialog.returnValue = "";
      dialog.showModal();
    });
  });
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "ok" || !operation) return;
    const reason = document.getElementById("signal-reason").value.trim();
    let response, body = {};
    try {
      response = await fetch(`${root.dataset.signal}/${operation}`, {
        method: "POST", credentials: "same-origin",
        headers: { "X-Requested-With": "canary-web", "Content-Type": "application/json" },
        body: JSON.stringify(reason ? { reason } : {}),
      });
      try { body = await response.json(); } catch (err) { body = { message: response.statusText }; }
    } catch (err) {
      response = { ok: false, status: 0 };
      body = { message: "the server cannot be reached" };
    }
    outcome.hidden = false;
    outcome.className = "outcome " + (response.ok ? "ok" : "error");
    outcome.textContent = response.ok ? `${operation}: ${body.message}`
      : `${operation} refused (${response.status}): ${body.message || "failed"}`;
  });
  // Look again now and then: once the worker runs, the job's own page comes back.
  setInterval(() => { if (!dialog.open && outcome.hidden) location.reload(); }, 8000);
})();

(function () {
  const job = document.getElementById("job");
  if (!job) return;

  const API = job.dataset.api;
  const LIVE = job.dataset.live;
  const outcome = document.getElementById("outcome");
  const connection = document.getElementById("connection");
  let tab = "main";
  let deadline = null; // when the current timed pause ends, in this browser's clock
  let timer = null;

  // -- the API, as the signed-in user (the session cookie counts only with this header) ---------

  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { "X-Requested-With": "canary-web" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      return { ok: false, status: 0, body: { code: "network", message: "the server cannot be reached" } };
    }
    let data = null;
    try { data = await response.json(); } catch (err) { data = { message: response.statusText }; }
    return { ok: response.ok, status: response.status, body: data };
  }

  function show(ok, text) {
    outcome.hidden = false;
    outcome.className = "outcome " + (ok ? "ok" : "error");
    outcome.textContent = text;
  }

  // Phases the job passes through on its way somewhere: the banner waits for the job to leave them.
  const MOVING = new Set(["initializing", "progressing", "promoting", "rolling-back"]);

  function where(d) {
    // What the banner says the job is doing: its phase, and the step it stands at.
    const step = d.current_step !== null && d.current_step !== undefined && d.steps && d.steps[d.current_step]
      ? ` at step ${d.current_step + 1} (${d.steps[d.current_step].description})` : "";
    return `${d.phase}${step}`;
  }

  function signature(d) {
    return JSON.stringify([d.phase, d.current_step, d.canary && d.canary.revision, d.weight,
      (d.steps || []).map((s) => s.status), d.events && d.events.length ? d.events[d.events.length - 1].at : null]);
  }

  async function settled(before) {
    // The update returns once the job accepted the operation; what it does next takes a moment.
    // Read the job again until it has moved and rests, or a few seconds have passed.
    const until = Date.now() + 6000;
    let last = null;
    while (Date.now() < until) {
      const result = await api("GET", API);
      if (result.ok) {
        last = result.body;
        if (signature(last) !== before && !MOVING.has(last.phase)) return { job: last, resting: true };
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    return { job: last, resting: false };
  }

  async function operate(operation, body) {
    const before = await api("GET", API);
    const result = await api("POST", `${API}/${operation}`, body);
    if (result.ok) {
      show(true, `${operation}: ${result.body.message}; taking effect…`);
      const { job: after, resting } = await settled(before.ok ? signature(before.body) : "");
      const now = after ? (resting ? `now ${where(after)}` : `still ${where(after)}`) : `status ${result.body.phase}`;
      show(true, `${operation}: ${result.body.message}; ${now}`);
    } else {
      const b = result.body || {};
      show(false, `${operation} refused (${result.status} ${b.code || "error"}): ${b.message || "failed"}`);
    }
    refresh(true);
    return result.ok;
  }

  // -- live part ---------------------------------------------------------------------------------

  function applyActions() {
    // The live part says what each toolbar button may do now; a button that cannot act is
    // disabled, and its tooltip says why, instead of a refusal after the confirm dialog.
    document.querySelectorAll("#action-state [data-operation]").forEach((state) => {
      const button = document.querySelector(`.actions [data-action="${state.dataset.operation}"]`);
      if (!button) return;
      const why = state.dataset.why;
      button.disabled = Boolean(why);
      button.title = why || button.dataset.roleTitle;
    });
  }

  let openSteps = new Set(); // the releases whose step records the user opened

  function keepOpen() {
    document.querySelectorAll("details.release-steps").forEach((d) => {
      if (d.open) openSteps.add(d.id); else openSteps.delete(d.id);
    });
  }

  function reopen() {
    openSteps.forEach((id) => { const d = document.getElementById(id); if (d) d.open = true; });
  }

  document.addEventListener("toggle", (event) => {
    if (event.target.matches && event.target.matches("details.release-steps")) keepOpen();
  }, true);

  function applyTab() {
    document.querySelectorAll("[data-tab]").forEach((b) => {
      b.classList.toggle("active", b.dataset.tab === tab);
      b.setAttribute("aria-selected", b.dataset.tab === tab ? "true" : "false");
    });
    document.querySelectorAll("[data-panel]").forEach((p) => { p.hidden = p.dataset.panel !== tab; });
  }

  function startCountdown() {
    // The server says when the pause ends and what time it was: the difference, counted from now
    // on this browser's clock, is immune to a browser whose clock is off.
    const el = document.getElementById("countdown");
    deadline = el ? Date.now() + (Number(el.dataset.endsAt) - Number(el.dataset.serverNow)) : null;
    tick();
  }

  function tick() {
    const el = document.getElementById("countdown");
    if (!el || deadline === null) return;
    const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    el.textContent = (h ? `${h}h ` : "") + (h || m ? `${m}m ` : "") + `${s}s`;
  }

  function schedule() {
    const root = document.getElementById("live-root");
    const active = root && root.dataset.active === "true";
    clearTimeout(timer);
    timer = setTimeout(() => refresh(false), active ? 1000 : 3000);
  }

  async function refresh(now) {
    if (!now && document.hidden) { schedule(); return; }
    try {
      const response = await fetch(LIVE, { credentials: "same-origin", headers: { "X-Requested-With": "canary-web" } });
      if (response.ok) {
        document.getElementById("live").innerHTML = await response.text();
        connection.hidden = true;
        reopen();
        applyActions();
        applyTab();
        startCountdown();
      } else {
        let message = response.statusText;
        try { message = (await response.json()).message || message; } catch (err) { /* not JSON */ }
        connection.hidden = false;
        connection.textContent = `cannot refresh (${response.status}): ${message}` + (response.status === 503
          ? " (reload the page for what to do, and for the operations that still reach the job)" : "");
      }
    } catch (err) {
      connection.hidden = false;
      connection.textContent = "cannot refresh: the server cannot be reached";
    }
    schedule();
  }

  // -- confirmation dialog -----------------------------------------------------------------------

  const confirmDialog = document.getElementById("confirm-dialog");
  let pending = null;

  function confirmThen(title, text, { reason = false, skipSteps = false } = {}, action) {
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-reason-label").hidden = !reason;
    document.getElementById("confirm-reason").value = "";
    document.getElementById("confirm-skip-label").hidden = !skipSteps;
    document.getElementById("confirm-skip-steps").checked = false;
    pending = action;
    confirmDialog.returnValue = "";
    confirmDialog.showModal();
  }

  confirmDialog.addEventListener("close", () => {
    const action = pending;
    pending = null;
    if (confirmDialog.returnValue === "ok" && action) {
      action({
        reason: document.getElementById("confirm-reason").value.trim() || undefined,
        skipSteps: document.getElementById("confirm-skip-steps").checked,
      });
    }
  });

  const TEXTS = {
    continue: ["Continue", "End the current pause: the release goes on with the next step.", false],
    promote: ["Promote", "Skip the remaining steps and promote the canary to stable now.", false],
    terminate: ["Terminate", "Stop the release: all traffic goes back to the stable version.", true],
  };

  // continue and promote act on the gate the page showed when clicked: if the job has moved on
  // since, the API refuses (409) rather than passing whatever gate the job waits at now.
  const GATED = new Set(["continue", "promote"]);

  function shownGate() {
    const root = document.getElementById("live-root");
    const gate = {};
    if (root && root.dataset.release) gate.release = Number(root.dataset.release);
    if (root && root.dataset.step) gate.step = Number(root.dataset.step);
    return gate;
  }

  document.querySelectorAll("[data-operation]").forEach((button) => {
    button.addEventListener("click", () => {
      const operation = button.dataset.operation;
      const [title, text, reason] = TEXTS[operation];
      const gate = GATED.has(operation) ? shownGate() : {};
      confirmThen(title, text, { reason },
        (v) => operate(operation, { ...gate, ...(v.reason ? { reason: v.reason } : {}) }));
    });
  });

  document.addEventListener("click", (event) => {
    const tabButton = event.target.closest("[data-tab]");
    if (tabButton) { tab = tabButton.dataset.tab; applyTab(); return; }
    const rollback = event.target.closest("[data-rollback]");
    if (rollback) {
      const revision = Number(rollback.dataset.rollback);
      confirmThen(`Roll back to revision ${revision}`,
        `Write revision ${revision}'s pod template back into the Deployment: a release of it starts.`,
        { skipSteps: true }, (v) => operate("rollback", { revision, skipSteps: v.skipSteps }));
    }
  });

  // -- update version ----------------------------------------------------------------------------

  const versionDialog = document.getElementById("version-dialog");
  document.getElementById("action-update-version").addEventListener("click", () => {
    const select = document.getElementById("version-container");
    const root = document.getElementById("live-root");
    const containers = root && root.dataset.containers ? root.dataset.containers.split(",") : [];
    select.replaceChildren();
    containers.forEach((name) => select.add(new Option(name, name)));
    if (containers.length > 1) select.add(new Option("all containers", "*"));
    document.getElementById("version-image").value = "";
    versionDialog.returnValue = "";
    versionDialog.showModal();
  });
  versionDialog.addEventListener("close", () => {
    if (versionDialog.returnValue !== "ok") return;
    const image = document.getElementById("version-image").value.trim();
    const container = document.getElementById("version-container").value || undefined;
    operate("update-version", { image, container });
  });

  // -- update delivery job (the steps) -----------------------------------------------------------

  const rulesDialog = document.getElementById("rules-dialog");
  const stepList = document.getElementById("rules-steps");
  let currentRules = null;

  // Steps this editor has a field for; any other (analysis, setHeaderRoute, ...) is kept as it
  // is, shown read-only, so saving the dialog never changes or drops a step it cannot edit.
  const EDITABLE = ["setWeight", "pause", "setCanaryScale"];

  function addStep(kind, value, kept) {
    const row = document.getElementById("step-row").content.firstElementChild.cloneNode(true);
    const select = row.querySelector(".step-kind");
    const input = row.querySelector(".step-value");
    if (kept) {
      select.add(new Option(`${kind} (kept as it is)`, kind));
      select.disabled = input.readOnly = true;
      row.dataset.kept = JSON.stringify(kept);
    }
    select.value = kind;
    input.value = value;
    row.querySelector(".step-remove").addEventListener("click", () => row.remove());
    stepList.append(row);
  }

  function stepToRow(step) {
    if ("setWeight" in step) return ["setWeight", String(step.setWeight)];
    if ("pause" in step) return ["pause", step.pause && step.pause.duration ? step.pause.duration : ""];
    const scale = step.setCanaryScale;
    if (scale && Object.keys(step).length === 1) {
      if (scale.replicas !== undefined && scale.replicas !== null) return ["setCanaryScale", String(scale.replicas)];
      if (scale.percent !== undefined && scale.percent !== null) return ["setCanaryScale", `${scale.percent}%`];
    }
    const kind = Object.keys(step).find((key) => !EDITABLE.includes(key)) || Object.keys(step)[0] || "step";
    return [kind, JSON.stringify(step[kind] === undefined ? step : step[kind]), step];
  }

  function rowToStep(row) {
    if (row.dataset.kept) return JSON.parse(row.dataset.kept);
    const kind = row.querySelector(".step-kind").value;
    const value = row.querySelector(".step-value").value.trim();
    if (kind === "setWeight") return { setWeight: value === "" ? value : Number(value) };
    if (kind === "pause") return { pause: value ? { duration: value } : {} };
    return { setCanaryScale: value.endsWith("%") ? { percent: Number(value.slice(0, -1)) }
      : { replicas: Number(value) } };
  }

  document.getElementById("rules-add").addEventListener("click", () => addStep("setWeight", ""));
  document.getElementById("action-update-rules").addEventListener("click", async () => {
    const result = await api("GET", API);
    if (!result.ok) {
      show(false, `cannot load the delivery rules (${result.status}): ${result.body.message}`);
      return;
    }
    currentRules = result.body.rules;
    stepList.replaceChildren();
    currentRules.steps.forEach((step) => addStep(...stepToRow(step)));
    document.getElementById("rules-deadline").value = currentRules.progressDeadline || "";
    rulesDialog.returnValue = "";
    rulesDialog.showModal();
  });
  rulesDialog.addEventListener("close", () => {
    if (rulesDialog.returnValue !== "ok" || !currentRules) return;
    const rules = { ...currentRules, steps: [...stepList.children].map(rowToStep) };
    const deadline = document.getElementById("rules-deadline").value.trim();
    if (deadline) rules.progressDeadline = deadline;
    operate("update-rules", { rules });
  });

  applyActions();
  applyTab();
  startCountdown();
  setInterval(tick, 250);
  schedule();
})();
