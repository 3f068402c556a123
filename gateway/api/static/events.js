// Live events: the server's event stream prepends rows to the table as doors are used.
"use strict";
(function () {
  const table = document.getElementById("events");
  if (!table || table.dataset.live !== "1" || !window.EventSource) return;
  const body = table.tBodies[0];
  const texts = document.getElementById("event-texts").dataset;
  const shown = 200;
  const camel = (key) => key.replace(/[._-](.)/g, (_, c) => c.toUpperCase());
  const label = (type) => texts[camel(type)] || type;
  const rule = (name) => texts[camel("rule-" + name)] || name;

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    return td;
  }

  function add(event) {
    if (body.querySelector(`tr[data-seq="${event.seq}"]`)) return;
    const row = body.insertRow(0);
    row.dataset.seq = event.seq;
    row.className = "fresh" + (event.data.result === "deny" || event.type === "door.alarm" ? " bad" : "");
    cell(row, event.ts.slice(0, 19).replace("T", " "));
    cell(row, label(event.type));
    cell(row, event.door);
    let result = event.data.alarm || "";
    if (event.data.result === "allow") result = texts.allow;
    else if (event.data.result === "deny") result = `${texts.deny} ${event.data.reason || ""}`;
    else if (event.data.rule) result = rule(event.data.rule);
    cell(row, result);
    const who = cell(row, "");
    const masked = (event.data.credential && event.data.credential.masked) || event.data.id_masked || "";
    if (event.person) {
      const link = document.createElement("a");
      link.href = `/ui/tenants/${encodeURIComponent(event.person)}`;
      link.textContent = masked || "→";
      who.appendChild(link);
    } else {
      who.textContent = masked;
    }
    while (body.rows.length > shown) body.deleteRow(body.rows.length - 1);
  }

  const source = new EventSource("/api/v1/events/stream");
  const types = ["access.decision", "device.status", "door.unlocked", "door.alarm", "alert.raised", "alert.cleared", "registration.captured", "gateway.alarm"];
  for (const type of types) {
    source.addEventListener(type, (message) => add(JSON.parse(message.data)));
  }
  const badge = document.getElementById("live-state");
  source.onopen = () => { if (badge) badge.className = "pill ok"; };
  source.onerror = () => { if (badge) badge.className = "pill bad"; };
})();
