// The upload page: each dropped or chosen file is sent to STOW-RS (POST /dicomweb/studies,
// one multipart/related request per file, the login session and its CSRF token), four at a
// time, and its own result is shown: stored, stored with a warning, or refused and why.
(() => {
  const zone = document.getElementById("drop-zone");
  if (!zone) return;
  const url = zone.dataset.stowUrl;
  const rows = document.querySelector("#upload-results tbody");
  const summary = document.getElementById("upload-summary");
  const bar = document.getElementById("upload-progress");
  const csrf = (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || "";
  const REASONS = {
    0xa700: "out of resources", 0xa900: "belongs to another study",
    0xc000: "not a DICOM file the archive can read", 0x0110: "processing failure",
    0x0122: "SOP class not supported", 0x0124: "not allowed",
  };
  let counts = { stored: 0, warned: 0, failed: 0, skipped: 0 };
  let total = 0;
  let done = 0;

  function show() {
    summary.textContent = `${done} of ${total} done: ${counts.stored} stored, ` +
      `${counts.warned} with a warning, ${counts.failed} refused, ${counts.skipped} skipped`;
    bar.hidden = total === 0;
    bar.max = Math.max(total, 1);
    bar.value = done;
  }

  function row(name, result, kind, study) {
    const tr = document.createElement("tr");
    tr.className = `upload-${kind}`;
    for (const text of [name, result]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    const td = document.createElement("td");
    if (study) {
      const a = document.createElement("a");
      a.href = `/studies/${encodeURIComponent(study)}/`;
      a.textContent = "open";
      td.appendChild(a);
    }
    tr.appendChild(td);
    rows.appendChild(tr);
  }

  function first(answer, tag) {
    const item = answer[tag];
    return item && item.Value && item.Value.length ? item.Value : [];
  }

  async function upload(file, name) {
    if (file.name.toUpperCase() === "DICOMDIR") {
      counts.skipped += 1;
      row(name, "skipped: a DICOMDIR is an index of the other files", "skipped", "");
      return;
    }
    const boundary = `portal-${Math.random().toString(16).slice(2)}`;
    const body = new Blob([`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file,
                           `\r\n--${boundary}--\r\n`]);
    try {
      const response = await fetch(url, {
        method: "POST", body, credentials: "same-origin",
        headers: {
          "Content-Type": `multipart/related; type="application/dicom"; boundary=${boundary}`,
          "Accept": "application/dicom+json", "X-CSRFToken": csrf,
        },
      });
      const why = (response.headers.get("Warning") || "").replace(/^299 portal: "|"$/g, "");
      let answer = {};
      try { answer = await response.json(); } catch (e) { answer = {}; }
      const stored = first(answer, "00081199");
      const failed = first(answer, "00081198");
      if (stored.length) {
        const ref = (first(stored[0], "00081190")[0] || "").match(/studies\/([^/]+)/);
        const warned = first(stored[0], "00081196").length > 0;
        counts[warned ? "warned" : "stored"] += 1;
        row(name, warned ? `stored, with a warning: ${why}` : "stored", warned ? "warned" : "stored",
            ref ? ref[1] : "");
      } else if (failed.length) {
        const code = first(failed[0], "00081197")[0];
        counts.failed += 1;
        row(name, `refused: ${REASONS[code] || "failure"} (0x${(code || 0).toString(16)})` +
            (why ? `: ${why}` : ""), "failed", "");
      } else {
        counts.failed += 1;
        row(name, `refused: ${response.status} ${answer.detail || response.statusText}`, "failed", "");
      }
    } catch (error) {
      counts.failed += 1;
      row(name, `not sent: ${error}`, "failed", "");
    }
  }

  async function run(files) {
    total += files.length;
    show();
    const queue = files.slice();
    const worker = async () => {
      while (queue.length) {
        const [file, name] = queue.shift();
        await upload(file, name);
        done += 1;
        show();
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  // a dropped folder's files, at any depth (the File and Directory Entries API)
  function entries(entry, prefix) {
    return new Promise((resolve) => {
      if (entry.isFile) {
        entry.file((file) => resolve([[file, prefix + file.name]]), () => resolve([]));
        return;
      }
      const reader = entry.createReader();
      const found = [];
      const more = () => reader.readEntries(async (batch) => {
        if (!batch.length) {
          const nested = await Promise.all(found.map((e) => entries(e, `${prefix}${entry.name}/`)));
          resolve(nested.flat());
          return;
        }
        found.push(...batch);
        more();
      }, () => resolve([]));
      more();
    });
  }

  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const items = [...event.dataTransfer.items].map((i) => i.webkitGetAsEntry()).filter(Boolean);
    const files = (await Promise.all(items.map((e) => entries(e, "")))).flat();
    await run(files);
  });
  for (const id of ["pick-files", "pick-folder"]) {
    document.getElementById(id).addEventListener("change", async (event) => {
      const files = [...event.target.files].map((f) => [f, f.webkitRelativePath || f.name]);
      event.target.value = "";
      await run(files);
    });
  }
})();
