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
