// Keeps the agent console current: polls /agent/state.json every second and updates the
// agent's state, the queue and the screen-pop in place. The note the agent is writing is
// left alone; the note form moves to a new call only when the call changes.
(function () {
  "use strict";
  var root = document.getElementById("console");
  if (!root) { return; }
  var url = root.dataset.stateUrl;
  var shown = null;
  var noteRequest = root.querySelector('input[name="request_id"]');
  var noteText = root.querySelector('textarea[name="note"]');

  function field(name) { return root.querySelector('[data-field="' + name + '"]'); }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function renderState(view) {
    field("state_text").textContent = view.state_text;
    field("pause_reason").textContent = view.pause_reason || "";
    field("pause_reason-line").hidden = !view.pause_reason;
    var until = field("wrap_up_until");
    if (view.wrap_up_until) {
      until.dateTime = view.wrap_up_until;
      until.textContent = new Date(view.wrap_up_until).toLocaleTimeString();
    }
    field("wrap_up-line").hidden = !view.wrap_up_until;
  }

  function renderQueue(queue) {
    var body = field("queue");
    body.textContent = "";
    queue.forEach(function (item) {
      var row = document.createElement("tr");
      row.dataset.subscriber = item.subscriber;
      cell(row, item.display_name);
      cell(row, String(item.waiting));
      cell(row, item.next_due_text || "-");
      cell(row, item.eta_text);
      body.appendChild(row);
    });
    field("queue-table").hidden = queue.length === 0;
    field("queue-empty").hidden = queue.length !== 0;
  }

  function renderCall(call) {
    field("no-call").hidden = !!call;
    field("call").hidden = !call;
    field("note-form").hidden = !call;
    if (!call) { return; }
    ["visitor_name", "visitor_phone", "topic", "page_url"].forEach(function (name) {
      field(name).textContent = call[name] || "-";
    });
    field("subscriber_name").textContent = call.subscriber_name;
    field("status_text").textContent = call.status_text;
    var list = field("attempts");
    list.textContent = "";
    call.attempts.forEach(function (attempt) {
      var item = document.createElement("li");
      var text = attempt.started_at_text + ": " + attempt.outcome_text;
      item.textContent = attempt.agent ? text + " (" + attempt.agent + ")" : text;
      list.appendChild(item);
    });
    if (noteRequest && noteRequest.value !== call.request_id) {
      noteRequest.value = call.request_id;
      noteText.value = call.note || "";
    }
  }

  function render(view) {
    var key = JSON.stringify(view);
    if (key === shown) { return; }
    shown = key;
    renderState(view);
    renderQueue(view.queue);
    renderCall(view.call);
  }

  function poll() {
    fetch(url, { headers: { "Accept": "application/json" }, cache: "no-store",
      credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 401) {
          // Logged out (elsewhere, or a new password): back to the login page.
          window.location.assign(root.dataset.loginUrl);
          return null;
        }
        return response.ok ? response.json() : null;
      })
      .then(function (view) { if (view) { render(view); } })
      .catch(function () { /* offline for a moment: the next poll tries again */ })
      .then(function () { window.setTimeout(poll, 1000); });
  }
  window.setTimeout(poll, 1000);
}());
