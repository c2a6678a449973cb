// Confirmation before a destructive form is sent: <form data-confirm="Delete ...?">.
// A script file rather than inline handlers, which the Content-Security-Policy forbids.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// A button that destroys asks first: <button data-confirm-button="Delete ...?">.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-confirm-button]");
  if (button && !window.confirm(button.dataset.confirmButton)) {
    event.preventDefault();
  }
});

// The study list's selection: "select all on this page" and how many are ticked.
document.addEventListener("change", (event) => {
  const form = event.target.closest("form#study-selection");
  if (!form) return;
  const boxes = form.querySelectorAll("input[name=uid]");
  if (event.target.id === "select-all") {
    boxes.forEach((box) => { box.checked = event.target.checked; });
  }
  const count = form.querySelectorAll("input[name=uid]:checked").length;
  form.querySelector("#selected-count").textContent = `Selected: ${count}`;
});

// The navigation on a narrow screen: the Menu button opens and closes it.
document.addEventListener("click", (event) => {
  const button = event.target.closest("#menu-button");
  if (!button) return;
  const nav = document.getElementById(button.getAttribute("aria-controls"));
  const open = nav.classList.toggle("open");
  button.setAttribute("aria-expanded", String(open));
});

// The day planner: blocks placed on the time grid from their data (minutes from the grid's
// first hour, duration), here because the Content-Security-Policy forbids inline styles; and
// the grid fetched again every few seconds and swapped in, so that typed filters and the
// scroll position stay (no page reload).
const PIXELS_PER_MINUTE = 1.2;

function placePlanner(root) {
  const grid = root.querySelector(".planner");
  if (!grid) return;
  const height = Number(grid.dataset.height || 0) * PIXELS_PER_MINUTE;
  grid.querySelectorAll(".lane").forEach((lane) => { lane.style.height = `${height}px`; });
  grid.querySelectorAll("[data-top]").forEach((item) => {
    item.style.top = `${Number(item.dataset.top) * PIXELS_PER_MINUTE}px`;
    if (item.dataset.height) {
      item.style.height = `${Math.max(Number(item.dataset.height) * PIXELS_PER_MINUTE, 18)}px`;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const planner = document.getElementById("planner");
  if (!planner) return;
  placePlanner(planner);
  const seconds = Number(planner.dataset.refresh || 0);
  if (!seconds) return;
  const refresh = async () => {
    if (document.hidden) return;
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) return;
      const html = await response.text();
      if (html !== planner.dataset.last) {
        planner.innerHTML = html;
        planner.dataset.last = html;
        placePlanner(planner);
      }
      planner.dataset.updated = new Date().toISOString();
    } catch (error) {
      // offline for a moment: the next round tries again
    }
  };
  window.setInterval(refresh, seconds * 1000);
  planner.refreshNow = refresh;  // for tests and impatient people
});
