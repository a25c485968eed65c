// Elements made from data, never from HTML strings: nothing an alert or a device says can
// become markup.

import { t } from "./i18n.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key in el && typeof value !== "string") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : value);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function message(kind, text) {
  return h("p", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// Run `fn` at most once per `ms`, trailing call kept.
export function throttle(fn, ms) {
  let timer = null;
  let pending = false;
  return () => {
    if (timer) { pending = true; return; }
    fn();
    timer = setTimeout(function again() {
      timer = null;
      if (pending) { pending = false; fn(); timer = setTimeout(again, ms); }
    }, ms);
  };
}

// An ApiError as a sentence for the page, with the API's own reason.
export function describe(exc) {
  if (exc.status === 0) return t("error.network");
  if (exc.status === 403) return t("error.forbidden", { reason: exc.detail });
  if (exc.status === 404) return t("error.notfound", { reason: exc.detail });
  return exc.detail || String(exc);
}
