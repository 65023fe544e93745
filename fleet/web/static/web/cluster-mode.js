// The cluster form: in pull mode the API URL and credential fields are not asked (the server refuses them).
(function () {
  const radios = document.querySelectorAll("[name=connection_mode]");
  if (!radios.length) return;
  function refresh() {
    const checked = document.querySelector("[name=connection_mode]:checked");
    const pull = checked && checked.value === "pull";
    document.querySelectorAll(".push-only").forEach((el) => { el.hidden = pull; });
    document.querySelectorAll(".pull-only").forEach((el) => { el.hidden = !pull; });
  }
  radios.forEach((radio) => radio.addEventListener("change", refresh));
  refresh();
})();
