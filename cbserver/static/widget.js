/*
 * cbserver "Call me back" widget. A business pastes, anywhere in its page:
 *
 *   <script src="https://cb.example.com/widget.js" data-subscriber="acme" async></script>
 *
 * It shows a "Call me back" button in the corner; the button opens a small form that posts to
 * this server's JSON API (/api/v1/callbacks). Everything lives in a shadow root with its own
 * styles: the page's CSS cannot restyle the widget and the widget's CSS cannot touch the page.
 * No globals, no libraries, no modules. Every text is set with textContent.
 *
 * The page's origin must be one of the subscriber's allowed origins (CORS). A page with a
 * Content-Security-Policy must allow this server in script-src and connect-src.
 */
(function () {
  "use strict";

  var TEXT = {
    launcher: "Call me back",
    title: "We will call you back",
    intro: "Leave your number and we will call you back as soon as possible.",
    phone: "Your phone number",
    phoneHint: "With the country code if you are abroad, e.g. +44 20 7946 0018.",
    name: "Your name (optional)",
    topic: "What would you like to talk about? (optional)",
    submit: "Send",
    sending: "Sending\u2026",
    close: "Close",
    phoneMissing: "Please enter your phone number.",
    thanks: "Thank you \u2014 we will call you.",
    follow: "Follow your call-back",
    unreachable: "Could not reach the call-back service. Please try again.",
    failed: "Something went wrong on our side. Please try again."
  };
  var FIELDS = ["phone", "name", "topic"];
  var TIMEOUT_MS = 20000;

  var CSS = [
    // The page's rules do reach the host element; !important ones declared here win over them.
    ":host { all: initial !important; display: block !important; position: fixed !important;",
    "  right: 20px !important; bottom: 20px !important; left: auto !important;",
    "  top: auto !important; z-index: 2147483000 !important; }",
    "@media print { :host { display: none !important; } }",
    "*, *::before, *::after { box-sizing: border-box; }",
    "[hidden] { display: none !important; }",
    ".root { font: 400 16px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, Arial,",
    "  sans-serif; color: #1a1a1a; text-align: left; letter-spacing: normal; }",
    "button { font: inherit; font-weight: 600; margin: 0; border: 0; border-radius: 6px;",
    "  cursor: pointer; display: inline-block; line-height: 1.25; text-transform: none; }",
    "button:disabled { cursor: default; opacity: .65; }",
    "button:focus-visible, input:focus-visible, textarea:focus-visible, a:focus-visible {",
    "  outline: 3px solid #f2a900; outline-offset: 2px; }",
    ".launcher { padding: 12px 20px; background: #0b5cad; color: #fff;",
    "  border-radius: 999px; box-shadow: 0 4px 14px rgba(0, 0, 0, .25); }",
    ".launcher:hover { background: #094c8f; }",
    "dialog { width: min(92vw, 380px); max-height: 92vh; overflow: auto; margin: auto;",
    "  padding: 20px; border: 0; border-radius: 10px; background: #fff; color: #1a1a1a;",
    "  box-shadow: 0 12px 40px rgba(0, 0, 0, .35); font: inherit; }",
    "dialog::backdrop { background: rgba(16, 24, 32, .45); }",
    ".head { display: flex; align-items: flex-start; justify-content: space-between;",
    "  gap: 12px; margin: 0 0 8px; }",
    "h2 { font-size: 20px; line-height: 1.25; font-weight: 700; margin: 0; color: #1a1a1a; }",
    ".x { flex: none; width: 32px; height: 32px; padding: 0; background: transparent;",
    "  color: #4a4f57; font-size: 22px; line-height: 32px; text-align: center; }",
    ".x:hover { background: #eef0f3; }",
    "p { margin: 0 0 12px; }",
    ".intro, .hint { color: #4a4f57; font-size: 14px; }",
    ".field { margin: 0 0 14px; }",
    "label { display: block; font-weight: 600; margin: 0 0 4px; }",
    ".hint { margin: 0 0 4px; }",
    "input, textarea { display: block; width: 100%; font: inherit; color: #1a1a1a;",
    "  background: #fff; padding: 8px 10px; margin: 0; border: 1px solid #8a8f98;",
    "  border-radius: 6px; }",
    "textarea { min-height: 72px; resize: vertical; }",
    "[aria-invalid=true] { border: 2px solid #a4161a; }",
    ".error { color: #a4161a; font-weight: 600; font-size: 14px; margin: 4px 0 0; }",
    ".form-error { margin: 0 0 12px; }",
    ".send { width: 100%; padding: 12px 16px; background: #0b5cad; color: #fff; }",
    ".send:hover:enabled { background: #094c8f; }",
    ".done p { font-size: 18px; font-weight: 600; }",
    ".done a { color: #0b5cad; text-decoration: underline; font-weight: 600; }",
    ".done .again { margin-top: 16px; width: 100%; padding: 10px 16px; background: #eef0f3;",
    "  color: #1a1a1a; }"
  ].join("\n");

  function findScript() {
    var current = document.currentScript;
    if (current && current.hasAttribute("data-subscriber")) { return current; }
    // Not set when run from a callback or a loader: the last widget tag not yet taken.
    var scripts = document.querySelectorAll("script[data-subscriber]");
    for (var i = scripts.length - 1; i >= 0; i -= 1) {
      var src = (scripts[i].src || "").split(/[?#]/)[0];
      if (/\/widget\.js$/.test(src) && !scripts[i].hasAttribute("data-cbserver-widget")) {
        return scripts[i];
      }
    }
    return null;
  }

  function el(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      if (name === "text") {
        node.textContent = attributes[name];
      } else {
        node.setAttribute(name, attributes[name]);
      }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function randomKey() {
    var cryptoApi = window.crypto;
    if (cryptoApi && typeof cryptoApi.randomUUID === "function") {
      return "widget-" + cryptoApi.randomUUID();
    }
    var bytes = new Uint8Array(16);
    cryptoApi.getRandomValues(bytes); // available on http:// pages too, unlike randomUUID
    return "widget-" + Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  function addStyles(shadow) {
    // A constructed sheet also works under a page's CSP without 'unsafe-inline' styles.
    try {
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      shadow.adoptedStyleSheets = [sheet];
      return;
    } catch (e) { /* an older browser: an inline <style> */ }
    shadow.appendChild(el("style", { text: CSS }));
  }

  function mount(script) {
    script.setAttribute("data-cbserver-widget", "");
    var subscriber = script.getAttribute("data-subscriber");
    var endpoint = new URL("api/v1/callbacks", script.src).href;

    var host = document.createElement("cbserver-callback");
    var shadow = host.attachShadow({ mode: "open" });
    addStyles(shadow);

    var launcher = el("button", {
      type: "button", "class": "launcher", "aria-haspopup": "dialog", text: TEXT.launcher
    });
    var closeButton = el("button", {
      type: "button", "class": "x", "aria-label": TEXT.close, text: "\u00d7"
    });
    var formError = el("div", { "class": "form-error" });
    var inputs = {
      phone: el("input", {
        id: "cb-phone", name: "phone", type: "tel", autocomplete: "tel", inputmode: "tel",
        required: "", "aria-required": "true", "aria-describedby": "cb-phone-hint",
        maxlength: "40"
      }),
      name: el("input", {
        id: "cb-name", name: "name", type: "text", autocomplete: "name", maxlength: "100"
      }),
      topic: el("textarea", { id: "cb-topic", name: "topic", maxlength: "500", rows: "3" })
    };
    var hints = { phone: "cb-phone-hint" };
    var fieldBoxes = {};
    var fields = FIELDS.map(function (name) {
      var box = el("div", { "class": "field" }, [
        el("label", { "for": "cb-" + name, text: TEXT[name] })
      ]);
      if (hints[name]) {
        box.appendChild(el("p", { "class": "hint", id: hints[name], text: TEXT.phoneHint }));
      }
      box.appendChild(inputs[name]);
      fieldBoxes[name] = box;
      return box;
    });
    var submit = el("button", { type: "submit", "class": "send", text: TEXT.submit });
    var form = el("form", { novalidate: "" }, [
      el("p", { "class": "intro", text: TEXT.intro }),
      formError
    ].concat(fields, [submit]));
    var link = el("a", { target: "_blank", rel: "noopener", text: TEXT.follow });
    var thanks = el("p", { tabindex: "-1", text: TEXT.thanks });
    var again = el("button", { type: "button", "class": "again", text: TEXT.close });
    var done = el("div", { "class": "done", hidden: "" }, [
      thanks, el("p", {}, [link]), again
    ]);
    var dialog = el("dialog", { "aria-labelledby": "cb-title" }, [
      el("div", { "class": "head" }, [el("h2", { id: "cb-title", text: TEXT.title }), closeButton]),
      form,
      done
    ]);
    shadow.appendChild(el("div", { "class": "root", lang: "en" }, [launcher, dialog]));

    var key = null;
    var sent = false;
    var sending = false;

    function clearErrors() {
      formError.textContent = "";
      FIELDS.forEach(function (name) {
        var input = inputs[name];
        input.removeAttribute("aria-invalid");
        if (hints[name]) {
          input.setAttribute("aria-describedby", hints[name]);
        } else {
          input.removeAttribute("aria-describedby");
        }
        var old = fieldBoxes[name].querySelector(".error");
        if (old) { old.parentNode.removeChild(old); }
      });
    }

    // A fresh element with role=alert is announced by screen readers as it appears.
    function showError(message, field) {
      if (FIELDS.indexOf(field) < 0) {
        formError.appendChild(el("p", { "class": "error", role: "alert", text: message }));
        formError.setAttribute("tabindex", "-1");
        formError.focus();
        return;
      }
      var input = inputs[field];
      var id = "cb-" + field + "-error";
      fieldBoxes[field].appendChild(el("p", {
        "class": "error", id: id, role: "alert", text: message
      }));
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", (hints[field] ? hints[field] + " " : "") + id);
      input.focus();
    }

    function setSending(on) {
      sending = on;
      submit.disabled = on;
      submit.textContent = on ? TEXT.sending : TEXT.submit;
      form.setAttribute("aria-busy", on ? "true" : "false");
    }

    function showDone(statusUrl) {
      var url = null;
      try { url = new URL(statusUrl, endpoint); } catch (e) { /* no link then */ }
      if (url && (url.protocol === "https:" || url.protocol === "http:")) {
        link.href = url.href;
      } else {
        link.hidden = true;
      }
      form.hidden = true;
      done.hidden = false;
      thanks.focus();
    }

    function open() {
      if (!dialog.open) {
        if (done.hidden) { key = randomKey(); sent = false; }
        if (typeof dialog.showModal === "function") {
          dialog.showModal();
        } else {
          dialog.setAttribute("open", "");
        }
      }
      if (done.hidden) { inputs.phone.focus(); } else { thanks.focus(); }
    }

    function close() {
      if (typeof dialog.close === "function" && dialog.open) {
        dialog.close(); // "close" brings the focus back
      } else {
        dialog.removeAttribute("open");
        launcher.focus();
      }
    }

    function send(event) {
      event.preventDefault();
      if (sending) { return; }
      clearErrors();
      var body = { subscriber: subscriber, when: "asap", page_url: location.href };
      FIELDS.forEach(function (name) { body[name] = inputs[name].value.trim(); });
      if (!body.phone) {
        showError(TEXT.phoneMissing, "phone");
        return;
      }
      sent = true;
      setSending(true);
      var controller = typeof AbortController === "function" ? new AbortController() : null;
      var timer = controller && window.setTimeout(function () { controller.abort(); }, TIMEOUT_MS);
      fetch(endpoint, {
        method: "POST",
        mode: "cors",
        credentials: "omit",
        cache: "no-store",
        headers: {
          "Content-Type": "application/json",
          "Accept": "application/json",
          "Idempotency-Key": key
        },
        body: JSON.stringify(body),
        signal: controller ? controller.signal : undefined
      }).then(function (response) {
        return response.json().catch(function () { return null; }).then(function (answer) {
          if (response.ok && answer && typeof answer.status_url === "string") {
            showDone(answer.status_url);
          } else if (answer && answer.error && typeof answer.error.message === "string") {
            showError(answer.error.message, answer.error.field);
          } else {
            showError(TEXT.failed, null);
          }
        });
      }, function () {
        showError(TEXT.unreachable, null);
      }).catch(function () {
        showError(TEXT.failed, null);
      }).then(function () {
        if (timer) { window.clearTimeout(timer); }
        setSending(false);
      });
    }

    launcher.addEventListener("click", open);
    closeButton.addEventListener("click", close);
    again.addEventListener("click", close);
    form.addEventListener("submit", send);
    // Typed something new after a request went out: that is another request, with its own key.
    form.addEventListener("input", function () {
      if (sent) { key = randomKey(); sent = false; }
    });
    dialog.addEventListener("close", function () { launcher.focus(); });
    // A modal <dialog> closes on Escape by itself; without showModal, by this.
    dialog.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && typeof dialog.showModal !== "function") { close(); }
    });
    // A click on the dimmed page around the dialog closes it.
    dialog.addEventListener("click", function (event) {
      if (event.target !== dialog) { return; }
      var box = dialog.getBoundingClientRect();
      var inside = event.clientX >= box.left && event.clientX <= box.right &&
        event.clientY >= box.top && event.clientY <= box.bottom;
      if (!inside) { close(); }
    });

    (document.body || document.documentElement).appendChild(host);
  }

  var script = findScript();
  if (!script) { return; }
  if (!script.getAttribute("data-subscriber")) {
    if (window.console) { window.console.error("cbserver widget: data-subscriber is missing"); }
    return;
  }
  // The business's language: labels from /widget/<slug>.json; English if they do not come.
  function withTexts(then) {
    var url = new URL("widget/" + encodeURIComponent(script.getAttribute("data-subscriber")) +
      ".json", script.src).href;
    var done = false;
    function finish() { if (!done) { done = true; then(); } }
    window.setTimeout(finish, 3000);
    fetch(url, { credentials: "omit" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (found) {
        if (found && found.text) {
          Object.keys(TEXT).forEach(function (key) {
            if (typeof found.text[key] === "string") { TEXT[key] = found.text[key]; }
          });
        }
      })
      .catch(function () { /* English it is */ })
      .then(finish);
  }

  function start() { withTexts(function () { mount(script); }); }
  if (document.body) {
    start();
  } else {
    document.addEventListener("DOMContentLoaded", start);
  }
}());
