// Enrol by tap: arm a capture at the chosen door, wait for the card, keep only its id.
"use strict";
(function () {
  const button = document.getElementById("tap-button");
  if (!button) return;
  const csrf = document.body.dataset.csrf;
  const state = document.getElementById("tap-state");
  const texts = document.getElementById("tap-texts").content.firstElementChild.dataset;
  const capture = document.getElementById("capture");
  const typed = document.getElementById("card-uid");

  async function poll(id, deadline) {
    while (Date.now() < deadline) {
      const reply = await fetch(`/api/v1/captures/${encodeURIComponent(id)}?wait_s=20`, { credentials: "same-origin" });
      if (!reply.ok) break;
      const body = await reply.json();
      if (body.state === "captured") {
        capture.value = body.id;
        typed.value = "";
        typed.disabled = true;
        state.textContent = `${texts.done}: ${body.masked}`;
        state.className = "ok";
        return;
      }
      if (body.state === "expired") break;
    }
    state.textContent = texts.expired;
    state.className = "bad";
    button.disabled = false;
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    capture.value = "";
    typed.disabled = false;
    state.textContent = texts.waiting;
    state.className = "";
    const door = document.getElementById("tap-door").value;
    const reply = await fetch("/api/v1/captures", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ door }),
    });
    if (!reply.ok) {
      const owner = reply.status === 409 ? (await reply.json()).detail.owner : null;
      state.textContent = owner ? `${texts.busy}: ${owner}` : texts.expired;
      state.className = "bad";
      button.disabled = false;
      return;
    }
    const body = await reply.json();
    await poll(body.id, Date.parse(body.expires_at) || Date.now() + 60000);
  });
})();
