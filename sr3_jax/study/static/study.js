// One rater's trials: show the pair for display_seconds, hide it, take a left/right choice, post
// it, go on. The server keeps the answers, so a reload resumes at the first unanswered trial.
"use strict";
const rater = new URLSearchParams(location.search).get("rater") || "";
const $ = (id) => document.getElementById(id);
let state = null, order = [], pos = 0, shownAt = 0, open = false, timer = null;

function status(text) { $("status").textContent = text; }

function progress() {
  const done = state.answered.length;
  $("progress").textContent = `Trial ${Math.min(done + 1, state.trials.length)} of ${state.trials.length}` +
    ` · ${done} answered`;
}

function finish() {
  $("pair").hidden = true; $("buttons").hidden = true; $("input-row").hidden = true;
  $("question").textContent = "All done. Thank you!";
  $("progress").textContent = `${state.trials.length} of ${state.trials.length} answered`;
  document.body.dataset.done = "1";
}

function loaded(img) {
  return img.complete && img.naturalWidth > 0 ? Promise.resolve() :
    new Promise((ok) => { img.onload = ok; img.onerror = ok; });
}

async function show() {
  if (pos >= order.length) return finish();
  const t = order[pos];
  open = false;
  document.body.dataset.phase = "loading";
  $("choose-left").disabled = $("choose-right").disabled = true;
  for (const id of ["left", "right", "input"]) $(id).classList.add("hidden-image");
  $("left").src = t.left; $("right").src = t.right;
  if (t.input) { $("input").src = t.input; $("input-row").hidden = false; }
  await Promise.all([loaded($("left")), loaded($("right"))].concat(t.input ? [loaded($("input"))] : []));
  for (const id of ["left", "right", "input"]) $(id).classList.remove("hidden-image");
  document.body.dataset.trial = t.id;
  document.body.dataset.phase = "showing";
  progress();
  shownAt = performance.now();
  timer = setTimeout(() => {
    for (const id of ["left", "right", "input"]) $(id).classList.add("hidden-image");
    $("choose-left").disabled = $("choose-right").disabled = false;
    open = true;
    document.body.dataset.phase = "choosing";
    status("Choose: left or right?");
  }, state.display_seconds * 1000);
}

async function choose(side) {
  if (!open) return;
  open = false;
  document.body.dataset.phase = "saving";
  $("choose-left").disabled = $("choose-right").disabled = true;
  const t = order[pos];
  const body = { rater, trial: t.id, choice: side, rt_ms: Math.round(performance.now() - shownAt) };
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await fetch("/api/answer", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const reply = await r.json();
      if (!r.ok) { status(`The server refused the answer: ${reply.error}`); return; }
      break;
    } catch (e) {  // the server is away: keep the answer and retry
      status("Saving… (waiting for the server)");
      await new Promise((ok) => setTimeout(ok, Math.min(500 * (attempt + 1), 3000)));
    }
  }
  state.answered.push(t.id);
  document.body.dataset.answered = String(state.answered.length);
  status("");
  pos += 1;
  show();
}

document.addEventListener("keydown", (e) => {
  if (e.key === "ArrowLeft" || e.key === "f" || e.key === "F") choose("left");
  if (e.key === "ArrowRight" || e.key === "j" || e.key === "J") choose("right");
});
$("choose-left").addEventListener("click", () => choose("left"));
$("choose-right").addEventListener("click", () => choose("right"));

(async function start() {
  const r = await fetch(`/api/state?rater=${encodeURIComponent(rater)}`);
  const reply = await r.json();
  if (!r.ok) { $("question").textContent = reply.error; return; }
  state = reply;
  const done = new Set(state.answered);
  order = state.trials.filter((t) => !done.has(t.id));
  $("question").textContent = state.question;
  document.body.dataset.resumedAt = String(state.answered.length);
  document.body.dataset.answered = String(state.answered.length);
  show();
})();
