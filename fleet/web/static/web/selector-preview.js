// Live preview of the clusters a label selector matches, on the group editor.
(function () {
  const script = document.currentScript;
  const input = document.querySelector("[name=selector_text]");
  if (!input) return;
  const count = document.getElementById("preview-count");
  const list = document.getElementById("preview-list");
  const error = document.getElementById("preview-error");
  let timer = null;
  function refresh() {
    fetch(script.dataset.url + "?selector=" + encodeURIComponent(input.value), { credentials: "same-origin" })
      .then((r) => r.json().then((body) => ({ ok: r.ok, body })))
      .then(({ ok, body }) => {
        error.textContent = ok ? "" : body.error;
        if (!ok) return;
        count.textContent = body.count;
        list.replaceChildren(...body.clusters.map((name) => {
          const span = document.createElement("span");
          span.className = "label";
          span.textContent = name;
          return span;
        }));
      });
  }
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 250); });
  refresh();
})();
