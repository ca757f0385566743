// Label errors: "all" ticks every row; the bulk form posts the ticked images (move to any group, or delete).
(function () {
  "use strict";
  const all = document.getElementById("errors-all");
  if (!all) return;
  const boxes = () => [...document.querySelectorAll("input.error-pick")];
  all.addEventListener("change", () => boxes().forEach((b) => { b.checked = all.checked; }));
})();
