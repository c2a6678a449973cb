// Confirmation before a destructive form is sent: <form data-confirm="Delete ...?">.
// A script file rather than inline handlers, which the Content-Security-Policy forbids.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
