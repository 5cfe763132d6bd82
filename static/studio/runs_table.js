// The experiment page's runs table: runs picked for comparison, child rows shown and hidden, status links kept
// in step with the table after htmx swaps it (sorting, paging and filtering replace only #runs-table).
(function () {
  "use strict";
  const MIN = 2;
  const MAX = 10;
  const form = document.getElementById("compare-form");
  if (!form) return;
  const button = document.getElementById("compare-button");
  const count = document.getElementById("selected-count");
  const selected = new Set(); // run ids, kept across pages of the table

  function refresh() {
    const n = selected.size;
    button.disabled = n < MIN || n > MAX;
    count.textContent = n === 0 ? `Select ${MIN}–${MAX} runs to compare`
      : n > MAX ? `${n} selected: at most ${MAX}` : `${n} selected`;
  }

  function syncCheckboxes() {
    document.querySelectorAll("input.select-run").forEach((box) => { box.checked = selected.has(box.value); });
  }

  // Nested rows: a child row's indentation is its parent's plus one.
  function indentChildren(root) {
    root.querySelectorAll("tr.child-run").forEach((row) => {
      if (row.style.getPropertyValue("--depth")) return;
      const parent = document.querySelector(`button.expander[data-run="${row.dataset.parent}"]`);
      const parentRow = parent && parent.closest("tr");
      const depth = parentRow ? Number(parentRow.style.getPropertyValue("--depth") || 0) + 1 : 1;
      row.style.setProperty("--depth", depth);
    });
  }

  function setDescendantsHidden(runId, hidden) {
    document.querySelectorAll(`tr.child-run[data-parent="${runId}"]`).forEach((row) => {
      row.hidden = hidden;
      const expander = row.querySelector("button.expander");
      // A child's own children show again only if it was left expanded.
      if (expander) setDescendantsHidden(expander.dataset.run, hidden || expander.getAttribute("aria-expanded") !== "true");
    });
  }

  // Status links are outside #runs-table: keep the table's sort, columns and filters in them.
  function syncStatusLinks() {
    const current = new URLSearchParams(window.location.search);
    ["status", "before", "after", "below", "above", "children_of"].forEach((name) => current.delete(name));
    document.querySelectorAll(".status-filter a[data-status]").forEach((link) => {
      const params = new URLSearchParams(current);
      if (link.dataset.status) params.set("status", link.dataset.status);
      link.href = "?" + params.toString();
    });
  }

  document.addEventListener("change", (event) => {
    const box = event.target;
    if (!box.matches || !box.matches("input.select-run")) return;
    if (box.checked) selected.add(box.value); else selected.delete(box.value);
    refresh();
  });

  document.addEventListener("click", (event) => {
    const expander = event.target.closest && event.target.closest("button.expander");
    if (!expander) return;
    const open = expander.getAttribute("aria-expanded") !== "true";
    expander.setAttribute("aria-expanded", String(open));
    expander.textContent = expander.textContent.replace(/^[▸▾]/, open ? "▾" : "▸");
    setDescendantsHidden(expander.dataset.run, !open); // the first click also loads them (htmx, once)
  });

  // Selected runs on other pages of the table are sent too.
  form.addEventListener("submit", () => {
    form.querySelectorAll("input[data-carried]").forEach((input) => input.remove());
    const visible = new Set(Array.from(document.querySelectorAll("input.select-run:checked"), (box) => box.value));
    selected.forEach((id) => {
      if (visible.has(id)) return;
      const input = document.createElement("input");
      Object.assign(input, { type: "hidden", name: "run", value: id });
      input.dataset.carried = "1";
      form.appendChild(input);
    });
  });

  document.body.addEventListener("htmx:afterSettle", (event) => {
    syncCheckboxes();
    indentChildren(document);
    if (event.detail.target && event.detail.target.id === "runs-table") syncStatusLinks();
  });
  window.addEventListener("pageshow", () => {
    // Back from the compare page: the browser may restore ticked boxes; count them.
    document.querySelectorAll("input.select-run:checked").forEach((box) => selected.add(box.value));
    refresh();
  });
  refresh();
})();
