// Refreshes the status page every few seconds while the operator looks at it. The page is
// whole without this script: it only fetches the same page again and swaps its main part.
"use strict";

const EVERY_MS = 5000;

async function refresh() {
  if (document.hidden) return;
  const editing = document.activeElement && document.activeElement.tagName === "INPUT";
  if (editing) return;
  try {
    const response = await fetch("/", { credentials: "same-origin", cache: "no-store" });
    if (response.redirected || !response.ok) {
      window.location.assign("/login");
      return;
    }
    const next = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = next.querySelector("main");
    const current = document.querySelector("main");
    if (fresh && current) current.replaceWith(fresh);
    document.documentElement.dataset.refreshed = String(Date.now());
  } catch (_) {
    // The next tick tries again; the page on screen stays as it was.
  }
}

setInterval(refresh, EVERY_MS);
