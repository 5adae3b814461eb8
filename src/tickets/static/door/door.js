/* Door check-in: a single-page scanner for door staff.
 *
 * Online, every scan goes to POST /v1/scans and the server's answer is shown. When the network is down
 * (or the server does not answer within a few seconds) the page decides on its own from the offline
 * bundle (GET /v1/galas/{id}/scan-sync): it verifies the code's Ed25519 signature with the gala's public
 * key (WebCrypto), refuses void tickets and superseded versions, remembers what this device admitted, and
 * queues the scan in localStorage. Queued scans are uploaded with POST /v1/scans/batch when the browser
 * comes back online and by a periodic retry; the server's answer says which admission counted.
 *
 * No build step and no framework; the only dependency is the bundled jsQR decoder, loaded when the
 * browser has no BarcodeDetector. Server data is only ever put into the page with textContent.
 */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------------
  // Storage
  const KEYS = {
    apiKey: "door.key",
    device: "door.device",
    gala: "door.gala",
    galaTitle: "door.gala_title",
    gate: "door.gate",
    queue: "door.queue",
    history: "door.history",
    bundle: (galaId) => `door.bundle.${galaId}`,
    admitted: (galaId) => `door.admitted.${galaId}`,
    stats: (galaId) => `door.stats.${galaId}`,
  };

  const store = {
    get(key, fallback) {
      try {
        const raw = localStorage.getItem(key);
        return raw === null ? fallback : JSON.parse(raw);
      } catch (_) {
        return fallback;
      }
    },
    set(key, value) {
      try {
        localStorage.setItem(key, JSON.stringify(value));
        return true;
      } catch (err) {
        console.warn("door: could not save", key, err);
        return false;
      }
    },
    remove(key) {
      localStorage.removeItem(key);
    },
  };

  function randomHex(bytes) {
    const buf = new Uint8Array(bytes);
    crypto.getRandomValues(buf);
    return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function newScanId() {
    return `scn-${Date.now().toString(36)}-${randomHex(8)}`; // well under the 64 characters allowed
  }

  const TIMEOUTS = { scan: 4000, api: 8000, sync: 20000, batch: 15000, probe: 3000 };
  const BATCH_SIZE = 50;
  const RESULT_RESET_MS = 8000;

  const state = {
    apiKey: store.get(KEYS.apiKey, null),
    deviceId: store.get(KEYS.device, null),
    galaId: store.get(KEYS.gala, null),
    galaTitle: store.get(KEYS.galaTitle, ""),
    gate: store.get(KEYS.gate, ""),
    reachable: true,
    bundle: null,
    publicKey: null,
    publicKeyB64: null,
    stats: null,
    statsAsked: 0, // refreshStats requests sent, and the number of the one whose answer is shown
    statsShown: 0,
    lastAdmission: null,
    flushing: false,
    syncing: null,
    chain: Promise.resolve(),
    seq: 0,
    resetTimer: null,
    timers: [],
  };
  if (!state.deviceId) {
    state.deviceId = `door-${randomHex(6)}`;
    store.set(KEYS.device, state.deviceId);
  }

  // ---------------------------------------------------------------------------------------------
  // HTTP
  class ApiError extends Error {
    constructor(status, problem, retryAfter) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.code = problem && problem.code;
      this.problem = problem;
      this.retryAfter = retryAfter;
    }
  }
  class NetworkError extends Error {}

  async function api(method, path, body, timeout = TIMEOUTS.api, key = state.apiKey) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeout);
    const headers = { Accept: "application/json" };
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    let text;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: controller.signal,
        cache: "no-store",
        credentials: "omit",
      });
      text = await response.text();
    } catch (err) {
      setReachable(false);
      throw new NetworkError(err && err.name === "AbortError" ? "The server did not answer in time." : "No connection.");
    } finally {
      clearTimeout(timer);
    }
    setReachable(response.status < 500);
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, data, response.headers.get("Retry-After"));
      if (response.status === 401 && key === state.apiKey && state.apiKey) {
        signOut("This key is no longer accepted (wrong, revoked or expired). Sign in again.");
      }
      throw error;
    }
    return data;
  }

  function online() {
    return navigator.onLine && state.reachable;
  }

  function setReachable(value) {
    if (state.reachable === value) return;
    state.reachable = value;
    renderNet();
    if (value) {
      void flushQueue();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Ticket codes (src/tickets/tickets/codes.py): base32 without padding of
  //   1 byte format version | 20 ticket id chars | 20 gala id chars | 2 bytes version | 64 bytes signature
  // The signature is Ed25519 over the first 43 bytes. The encoding is canonical.
  const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  const CODE_BYTES = 107;
  const SIGNED_BYTES = 43;

  function base32Decode(text) {
    const out = [];
    let value = 0;
    let bits = 0;
    for (const ch of text) {
      const index = B32.indexOf(ch);
      if (index < 0) return null;
      value = (value << 5) | index;
      bits += 5;
      if (bits >= 8) {
        bits -= 8;
        out.push((value >> bits) & 0xff);
      }
      value &= (1 << bits) - 1;
    }
    if (bits >= 5 || value !== 0) return null; // a stray character or stray bits: not canonical
    return new Uint8Array(out);
  }

  function isAlnum(bytes) {
    return bytes.every((b) => (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122));
  }

  function parseCode(code) {
    if (!code || code.length > 400) return { error: "This is not a ticket code." };
    const raw = base32Decode(code);
    if (!raw || raw.length !== CODE_BYTES) return { error: "This is not a ticket code." };
    if (raw[0] !== 1) return { error: "Unknown ticket code format." };
    const ticketPart = raw.slice(1, 21);
    const galaPart = raw.slice(21, 41);
    if (!isAlnum(ticketPart) || !isAlnum(galaPart)) return { error: "Unknown ticket code format." };
    const ascii = (bytes) => String.fromCharCode(...bytes);
    return {
      ticketId: `tkt_${ascii(ticketPart)}`,
      galaId: `gal_${ascii(galaPart)}`,
      version: (raw[41] << 8) | raw[42],
      body: raw.slice(0, SIGNED_BYTES),
      signature: raw.slice(SIGNED_BYTES),
    };
  }

  function base64Bytes(b64) {
    const bin = atob(b64);
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }

  async function importPublicKey(b64) {
    if (!window.crypto || !crypto.subtle) throw new Error("no WebCrypto (the page needs HTTPS)");
    return crypto.subtle.importKey("raw", base64Bytes(b64), { name: "Ed25519" }, false, ["verify"]);
  }

  // ---------------------------------------------------------------------------------------------
  // The offline bundle
  function loadBundle(galaId) {
    return store.get(KEYS.bundle(galaId), null);
  }

  async function useBundle(bundle) {
    state.bundle = bundle;
    if (bundle && bundle.public_key && bundle.public_key !== state.publicKeyB64) {
      try {
        state.publicKey = await importPublicKey(bundle.public_key);
        state.publicKeyB64 = bundle.public_key;
      } catch (err) {
        console.warn("door: cannot import the gala's public key", err);
        state.publicKey = null;
        state.publicKeyB64 = null;
      }
    }
    renderSync();
  }

  function revokedIds(data) {
    const ids = [];
    for (const field of ["void_ticket_ids", "revoked_ticket_ids", "revoked", "void"]) {
      const list = data[field];
      if (Array.isArray(list)) {
        for (const item of list) ids.push(typeof item === "string" ? item : item && item.id);
      }
    }
    return ids.filter(Boolean);
  }

  function syncBundle({ full = false } = {}) {
    if (state.syncing) return state.syncing;
    const galaId = state.galaId;
    if (!galaId || !state.apiKey || !navigator.onLine) return Promise.resolve(false);
    state.syncing = (async () => {
      let bundle = full ? null : loadBundle(galaId);
      let since = bundle ? bundle.next_since : null;
      for (let page = 0; page < 100; page += 1) {
        const query = since ? `?since=${encodeURIComponent(since)}` : "";
        const data = await api("GET", `/v1/galas/${encodeURIComponent(galaId)}/scan-sync${query}`, undefined, TIMEOUTS.sync);
        if (!bundle || !since || (bundle.public_key && data.public_key && data.public_key !== bundle.public_key)) {
          bundle = { gala_id: galaId, public_key: null, tickets: {}, next_since: null };
        }
        bundle.public_key = data.public_key || bundle.public_key;
        for (const ticket of data.tickets || []) bundle.tickets[ticket.id] = ticket;
        bundle.names = bundle.names || {};
        for (const item of [...(data.ticket_types || []), ...(data.sections || [])]) bundle.names[item.id] = item.name;
        for (const id of revokedIds(data)) {
          bundle.tickets[id] = { ...(bundle.tickets[id] || { id }), status: "void" };
        }
        const next = data.next_since === undefined ? null : data.next_since;
        const more = Boolean(data.has_more) && next && next !== since;
        bundle.next_since = next || bundle.next_since;
        since = bundle.next_since;
        if (!more) break;
      }
      bundle.synced_at = new Date().toISOString();
      if (galaId !== state.galaId) return false;
      if (!store.set(KEYS.bundle(galaId), bundle)) {
        $("sync-status").dataset.warning = "storage";
      }
      pruneLocalAdmissions(galaId, bundle);
      await useBundle(bundle);
      return true;
    })();
    return state.syncing
      .catch((err) => {
        if (err instanceof ApiError && err.status === 403) {
          showNotice(`This key may not scan for this gala: ${err.message}`);
        }
        return false;
      })
      .finally(() => {
        state.syncing = null;
        renderSync();
      });
  }

  // Admissions made on this device, by ticket id, until the server's bundle knows them.
  function localAdmissions(galaId = state.galaId) {
    return store.get(KEYS.admitted(galaId), {});
  }

  function rememberAdmission(ticketId, scanId, at, gate) {
    const map = localAdmissions();
    map[ticketId] = { scan_id: scanId, at, gate };
    store.set(KEYS.admitted(state.galaId), map);
  }

  function forgetAdmission(ticketId) {
    const map = localAdmissions();
    delete map[ticketId];
    store.set(KEYS.admitted(state.galaId), map);
  }

  function pruneLocalAdmissions(galaId, bundle) {
    // Forget a local admission once it is uploaded and the server's bundle shows the ticket checked in:
    // from then on the bundle answers "already checked in" by itself. (Conservative on purpose: a local
    // admission the bundle does not confirm yet keeps refusing a second entry on this device.)
    const queued = new Set(loadQueue().map((s) => s.scan_id));
    const map = localAdmissions(galaId);
    for (const [ticketId, entry] of Object.entries(map)) {
      const known = bundle.tickets[ticketId];
      if (!queued.has(entry.scan_id) && known && known.checked_in_at) delete map[ticketId];
    }
    store.set(KEYS.admitted(galaId), map);
  }

  async function verifySignature(parsed) {
    return crypto.subtle.verify({ name: "Ed25519" }, state.publicKey, parsed.signature, parsed.body);
  }

  async function decideOffline(code) {
    const parsed = parseCode(code);
    if (parsed.error) return { result: "invalid", message: parsed.error };
    if (parsed.galaId !== state.galaId) {
      return { result: "wrong_gala", message: "This ticket is for another gala." };
    }
    if (!state.bundle || !state.publicKey) {
      return {
        result: "cannot_check",
        message: state.bundle
          ? "This browser cannot verify ticket signatures offline. Use an up-to-date browser over HTTPS."
          : "No offline list on this device yet. Connect once to download it.",
      };
    }
    let valid = false;
    try {
      valid = await verifySignature(parsed);
    } catch (_) {
      valid = false;
    }
    if (!valid) return { result: "invalid", message: "Forged or damaged code: the signature does not match." };
    const known = state.bundle.tickets[parsed.ticketId];
    const names = state.bundle.names || {};
    const ticket = known
      ? { ...known, ticket_type_name: names[known.ticket_type_id] || null, section_name: names[known.section_id] || null }
      : { id: parsed.ticketId };
    if (known && known.status && known.status !== "valid") {
      return { result: "void", ticket, message: "Ticket void (cancelled, refunded or transferred)." };
    }
    if (known && typeof known.version === "number" && parsed.version < known.version) {
      return { result: "void", ticket, message: "Old code: this ticket was transferred and has a newer code." };
    }
    const mine = localAdmissions()[parsed.ticketId];
    const first = mine
      ? { at: mine.at, gate: mine.gate }
      : known && known.checked_in_at
        ? { at: known.checked_in_at, gate: known.checked_in_gate || known.first_gate || known.gate || null }
        : null;
    if (first) {
      return {
        result: "already_checked_in",
        ticket,
        first_checked_in_at: first.at,
        first_gate: first.gate,
        message: "Already checked in.",
      };
    }
    return {
      result: "admitted",
      ticket,
      message: known ? "Admitted." : "Admitted (ticket issued after the last list refresh).",
    };
  }

  // ---------------------------------------------------------------------------------------------
  // The queue of scans made offline
  function loadQueue() {
    return store.get(KEYS.queue, []);
  }

  function saveQueue(queue) {
    store.set(KEYS.queue, queue);
    renderQueue();
  }

  function enqueue(scan) {
    const queue = loadQueue();
    queue.push(scan);
    saveQueue(queue);
  }

  function dequeue(scanIds) {
    saveQueue(loadQueue().filter((s) => !scanIds.has(s.scan_id)));
  }

  async function flushQueue() {
    if (state.flushing || !state.apiKey || !navigator.onLine) return;
    if (!loadQueue().length) return;
    state.flushing = true;
    renderQueue();
    try {
      let queue = loadQueue();
      const galaIds = [...new Set(queue.map((s) => s.gala_id))];
      for (const galaId of galaIds) {
        const pending = queue.filter((s) => s.gala_id === galaId);
        if (!(await uploadScans(galaId, pending, BATCH_SIZE))) return;
        queue = loadQueue();
      }
    } finally {
      state.flushing = false;
      renderQueue();
    }
    void refreshStats();
  }

  // Upload scans in chunks; returns false when the upload must be retried later.
  async function uploadScans(galaId, scans, size) {
    for (let i = 0; i < scans.length; i += size) {
      const chunk = scans.slice(i, i + size);
      let answer;
      try {
        answer = await api(
          "POST",
          "/v1/scans/batch",
          {
            gala_id: galaId,
            device_id: state.deviceId,
            scans: chunk.map((s) => ({ scan_id: s.scan_id, code: s.code, gate: s.gate, scanned_at: s.scanned_at })),
          },
          TIMEOUTS.batch,
        );
      } catch (err) {
        if (err instanceof ApiError && (err.status === 422 || err.status === 400)) {
          if (chunk.length > 1) {
            if (!(await uploadScans(galaId, chunk, 1))) return false;
            continue;
          }
          // The server refuses this scan whatever we do: drop it, and say so.
          dequeue(new Set([chunk[0].scan_id]));
          updateHistory(chunk[0].scan_id, { status: "refused", final: "invalid" });
          continue;
        }
        return false; // offline, server trouble, busy, rate limited, or no longer allowed: retry later
      }
      const results = (answer && answer.results) || [];
      const done = new Set();
      for (const r of results) {
        done.add(r.scan_id);
        const scan = chunk.find((s) => s.scan_id === r.scan_id);
        const conflict = scan && scan.local_result === "admitted" && !(r.result === "admitted" && r.counted !== false);
        updateHistory(r.scan_id, { status: "uploaded", final: r.result, counted: r.counted, conflict });
        if (conflict) {
          showNotice(
            `Uploaded: a ticket admitted offline (${scan.label || "guest"}) had already been checked in elsewhere.`,
          );
        }
      }
      dequeue(done);
    }
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // Scanning
  function submitCode(raw, source) {
    const code = String(raw || "").replace(/\s+/g, "");
    if (!code) return state.chain;
    state.chain = state.chain.then(() => handleCode(code, source)).catch((err) => console.error("door:", err));
    return state.chain;
  }

  async function handleCode(code, source) {
    if (!state.galaId) return;
    const scan = {
      scan_id: newScanId(),
      code,
      gala_id: state.galaId,
      gate: state.gate,
      scanned_at: new Date().toISOString(),
    };
    showChecking();
    let answer = null;
    let offline = !online();
    if (!offline) {
      const body = { code, gala_id: scan.gala_id, gate: scan.gate, device_id: state.deviceId, scan_id: scan.scan_id };
      try {
        try {
          answer = await api("POST", "/v1/scans", body, TIMEOUTS.scan);
        } catch (err) {
          // Contention on the ticket: one quick retry with the same scan_id (a repeat returns the first answer).
          if (!(err instanceof ApiError && err.status === 409 && err.code === "busy")) throw err;
          const wait = Math.min(1000, 1000 * (Number(err.retryAfter) || 0.3));
          await new Promise((r) => setTimeout(r, wait));
          answer = await api("POST", "/v1/scans", body, TIMEOUTS.scan);
        }
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) return;
        if (err instanceof ApiError && err.status === 403) {
          showAnswer({ result: "not_allowed", message: err.message }, { source });
          return;
        }
        if (err instanceof ApiError && err.status === 422) {
          answer = { result: "invalid", message: "This is not a ticket code." };
        } else {
          offline = true; // no answer in time, server trouble, busy or rate limited: decide here
        }
      }
    }
    if (offline) {
      answer = await decideOffline(code);
      if (answer.result !== "cannot_check") {
        const label = ticketName(answer.ticket) || "";
        enqueue({ ...scan, local_result: answer.result, label });
      }
    }
    const ticketId = (answer.ticket && answer.ticket.id) || parseCode(code).ticketId;
    if (answer.result === "admitted" && ticketId) {
      rememberAdmission(ticketId, answer.scan_id || scan.scan_id, scan.scanned_at, scan.gate);
      state.lastAdmission = { scanId: answer.scan_id || scan.scan_id, ticketId, name: ticketName(answer.ticket) };
    }
    showAnswer(answer, { offline, source });
    addHistory({
      scan_id: answer.scan_id || scan.scan_id,
      at: scan.scanned_at,
      result: answer.result,
      name: ticketName(answer.ticket) || shortCode(code),
      status: offline && answer.result !== "cannot_check" ? "queued" : "online",
    });
    renderUndo();
    renderCount();
    if (!offline) void refreshStats();
  }

  // ---------------------------------------------------------------------------------------------
  // Undo the last admission (a mis-scan)
  let undoArmed = null;
  async function undoLast() {
    const last = state.lastAdmission;
    if (!last) return;
    const button = $("undo");
    if (!undoArmed) {
      button.textContent = "Tap again to undo";
      undoArmed = setTimeout(() => {
        undoArmed = null;
        renderUndo();
      }, 4000);
      return;
    }
    clearTimeout(undoArmed);
    undoArmed = null;
    const queued = loadQueue().find((s) => s.scan_id === last.scanId);
    if (queued) {
      dequeue(new Set([last.scanId]));
    } else {
      if (!online()) {
        showNotice("Connect to the network to undo an admission that was already uploaded.");
        renderUndo();
        return;
      }
      try {
        await api("POST", `/v1/scans/${encodeURIComponent(last.scanId)}/undo`, {
          gala_id: state.galaId,
          reason: "Undone at the door",
        });
      } catch (err) {
        showNotice(`Could not undo: ${err.message}`);
        renderUndo();
        return;
      }
    }
    forgetAdmission(last.ticketId);
    updateHistory(last.scanId, { status: "undone" });
    state.lastAdmission = null;
    showAnswer({ result: "undone", message: `Admission undone${last.name ? ` for ${last.name}` : ""}.` }, {});
    renderUndo();
    renderCount();
    void refreshStats();
  }

  // ---------------------------------------------------------------------------------------------
  // Check-in count
  // Requests for the count can overlap (coming back online asks for it at once and again after the
  // upload): the answer to the latest request wins, and an older one that arrives after it (read before
  // the upload) is dropped instead of putting the count back.
  async function refreshStats() {
    if (!state.galaId || !state.apiKey || !navigator.onLine) return;
    const galaId = state.galaId;
    const asked = ++state.statsAsked;
    try {
      const stats = await api("GET", `/v1/galas/${encodeURIComponent(galaId)}/checkin-stats`);
      if (galaId !== state.galaId || asked < state.statsShown) return;
      state.statsShown = asked;
      state.stats = stats;
      store.set(KEYS.stats(galaId), stats);
    } catch (_) {
      // keep the last known count
    }
    renderCount();
  }

  // ---------------------------------------------------------------------------------------------
  // Camera
  const camera = { stream: null, detect: null, lastCode: null, lastAt: 0, pauseUntil: 0, running: false };

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      if (window.jsQR) return resolve();
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve();
      script.onerror = () => reject(new Error(`could not load ${src}`));
      document.head.appendChild(script);
    });
  }

  async function makeDetector() {
    if ("BarcodeDetector" in window) {
      try {
        const formats = await window.BarcodeDetector.getSupportedFormats();
        if (formats.includes("qr_code")) {
          const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
          const detect = async (video) => {
            const codes = await detector.detect(video);
            return codes.length ? codes[0].rawValue : null;
          };
          detect.kind = "BarcodeDetector";
          return detect;
        }
      } catch (_) {
        // fall through to the bundled decoder
      }
    }
    await loadScript("/door/jsQR.js");
    const canvas = $("frame");
    const context = canvas.getContext("2d", { willReadFrequently: true });
    const detect = async (video) => {
      const w = video.videoWidth;
      const h = video.videoHeight;
      if (!w || !h) return null;
      const scale = Math.min(1, 960 / Math.max(w, h));
      canvas.width = Math.round(w * scale);
      canvas.height = Math.round(h * scale);
      context.drawImage(video, 0, 0, canvas.width, canvas.height);
      const image = context.getImageData(0, 0, canvas.width, canvas.height);
      const found = window.jsQR(image.data, image.width, image.height, { inversionAttempts: "attemptBoth" });
      return found ? found.data : null;
    };
    detect.kind = "jsQR";
    return detect;
  }

  async function startCamera() {
    const status = $("camera-status");
    $("camera").hidden = false;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      status.textContent = "This browser gives no camera access here (the page needs HTTPS). Use a handheld scanner.";
      return;
    }
    try {
      status.textContent = "Starting the camera…";
      camera.stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } },
        audio: false,
      });
      const video = $("video");
      video.srcObject = camera.stream;
      await video.play();
      camera.detect = await makeDetector();
      camera.running = true;
      status.textContent = `Point the camera at a ticket's QR code (${camera.detect.kind}).`;
      status.dataset.decoder = camera.detect.kind;
      $("camera-toggle").textContent = "Stop camera";
      $("camera-toggle").setAttribute("aria-pressed", "true");
      void cameraLoop();
    } catch (err) {
      stopCamera();
      $("camera").hidden = false;
      status.textContent = `Camera unavailable: ${err.message || err.name}. Use a handheld scanner or type the code.`;
    }
  }

  function stopCamera() {
    camera.running = false;
    if (camera.stream) for (const track of camera.stream.getTracks()) track.stop();
    camera.stream = null;
    $("video").srcObject = null;
    $("camera").hidden = true;
    $("camera-toggle").textContent = "Start camera";
    $("camera-toggle").setAttribute("aria-pressed", "false");
  }

  async function cameraLoop() {
    while (camera.running) {
      const now = Date.now();
      if (now >= camera.pauseUntil) {
        let value = null;
        try {
          value = await camera.detect($("video"));
        } catch (_) {
          value = null;
        }
        if (value && camera.running) {
          const repeat = value === camera.lastCode && Date.now() - camera.lastAt < 4000;
          camera.lastCode = value;
          camera.lastAt = Date.now();
          if (!repeat) {
            camera.pauseUntil = Date.now() + 1500;
            await submitCode(value, "camera");
          }
        }
      }
      await new Promise((r) => setTimeout(r, 120));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Feedback: colour, words, a tone and a vibration (never colour alone)
  const WORDS = {
    admitted: "Admitted",
    already_checked_in: "Already checked in",
    invalid: "Invalid",
    wrong_gala: "Wrong gala",
    void: "Void",
    cannot_check: "Cannot check",
    not_allowed: "Not allowed",
    undone: "Undone",
  };

  let audio = null;
  function tone(ok) {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      const notes = ok ? [880] : [220, 180];
      notes.forEach((freq, i) => {
        const osc = audio.createOscillator();
        const gain = audio.createGain();
        osc.frequency.value = freq;
        osc.type = ok ? "sine" : "square";
        gain.gain.value = 0.08;
        osc.connect(gain).connect(audio.destination);
        const start = audio.currentTime + i * 0.18;
        osc.start(start);
        osc.stop(start + (ok ? 0.12 : 0.15));
      });
    } catch (_) {
      // no sound, the colour and words remain
    }
    if (navigator.vibrate) navigator.vibrate(ok ? 60 : [180, 80, 180]);
  }

  function ticketName(ticket) {
    return (ticket && (ticket.attendee_name || ticket.name)) || "";
  }

  function ticketSeat(ticket) {
    if (!ticket) return "";
    const parts = [];
    const type = ticket.ticket_type_name || (ticket.ticket_type && ticket.ticket_type.name) || ticket.ticket_type;
    if (typeof type === "string" && type) parts.push(type);
    if (ticket.seat_label) parts.push(`Seat ${ticket.seat_label}`);
    if (ticket.table && !(ticket.seat_label || "").includes(ticket.table)) parts.push(`Table ${ticket.table}`);
    if (!ticket.seat_label && !ticket.table && ticket.section_name) parts.push(ticket.section_name);
    return parts.join(" · ");
  }

  function shortCode(code) {
    return code.length > 12 ? `${code.slice(0, 6)}…${code.slice(-4)}` : code;
  }

  function formatTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const sameDay = d.toDateString() === new Date().toDateString();
    const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return sameDay ? time : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
  }

  function reasonFor(answer) {
    switch (answer.result) {
      case "admitted":
        return "Let them in.";
      case "already_checked_in": {
        const when = formatTime(answer.first_checked_in_at);
        const gate = answer.first_gate ? ` at ${answer.first_gate} gate` : "";
        return when ? `Already used at ${when}${gate}.` : `Already used${gate}.`;
      }
      case "void":
        return answer.message || "This ticket is void (cancelled, refunded or transferred).";
      case "wrong_gala":
        return answer.message || "This ticket is for another gala.";
      case "invalid":
        return answer.message || "Unknown, damaged or forged code.";
      default:
        return answer.message || "";
    }
  }

  function showChecking() {
    const panel = $("result");
    clearTimeout(state.resetTimer);
    panel.dataset.tone = "busy";
    panel.setAttribute("aria-busy", "true");
  }

  function showAnswer(answer, { offline = false } = {}) {
    const panel = $("result");
    const ok = answer.result === "admitted";
    const neutral = answer.result === "undone";
    state.seq += 1;
    clearTimeout(state.resetTimer);
    panel.removeAttribute("aria-busy");
    panel.dataset.result = answer.result;
    panel.dataset.tone = neutral ? "busy" : ok ? "ok" : "no";
    panel.dataset.offline = offline ? "true" : "false";
    panel.dataset.seq = String(state.seq);
    $("result-word").textContent = WORDS[answer.result] || answer.result;
    $("result-reason").textContent = reasonFor(answer);
    $("result-guest").textContent = ticketName(answer.ticket);
    $("result-seat").textContent = ticketSeat(answer.ticket);
    let note = "";
    if (offline && answer.result !== "cannot_check") note = "Offline: saved on this device, uploads when the network is back.";
    $("result-note").textContent = note;
    if (!neutral) tone(ok);
    const seq = state.seq;
    state.resetTimer = setTimeout(() => {
      if (state.seq !== seq) return;
      panel.dataset.result = "idle";
      panel.dataset.tone = "";
      $("result-word").textContent = "Ready";
      $("result-reason").textContent = "Scan the next ticket.";
      $("result-guest").textContent = "";
      $("result-seat").textContent = "";
      $("result-note").textContent = "";
    }, RESULT_RESET_MS);
  }

  function showNotice(text) {
    $("count-note").textContent = text;
  }

  // ---------------------------------------------------------------------------------------------
  // History of recent scans (this device)
  function addHistory(entry) {
    const history = store.get(KEYS.history, []);
    history.unshift({ ...entry, gala_id: state.galaId });
    store.set(KEYS.history, history.slice(0, 30));
    renderHistory();
  }

  function updateHistory(scanId, changes) {
    const history = store.get(KEYS.history, []);
    const entry = history.find((h) => h.scan_id === scanId);
    if (entry) {
      Object.assign(entry, changes);
      store.set(KEYS.history, history);
      renderHistory();
    }
  }

  function renderHistory() {
    const list = $("history");
    list.replaceChildren();
    for (const h of store.get(KEYS.history, []).filter((x) => x.gala_id === state.galaId).slice(0, 15)) {
      const item = document.createElement("li");
      item.dataset.scanId = h.scan_id;
      item.dataset.status = h.status;
      const who = document.createElement("span");
      who.textContent = `${formatTime(h.at)} ${h.name || ""}`;
      const what = document.createElement("span");
      const final = h.final || h.result;
      let text = WORDS[final] || final;
      if (h.status === "queued") text += " (queued)";
      else if (h.status === "uploaded") text += h.conflict ? " (uploaded: did not count)" : " (uploaded)";
      else if (h.status === "undone") text = "Undone";
      else if (h.status === "refused") text = "Refused by the server";
      what.textContent = text;
      what.className = h.status === "queued" ? "h-wait" : final === "admitted" && !h.conflict ? "h-ok" : "h-no";
      item.append(who, what);
      list.append(item);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Rendering of the status bits
  function renderNet() {
    const pill = $("net");
    let stateName = "online";
    let text = "Online";
    if (!navigator.onLine) {
      stateName = "offline";
      text = "Offline";
    } else if (!state.reachable) {
      stateName = "unreachable";
      text = "No server";
    }
    pill.dataset.state = stateName;
    pill.textContent = text;
    pill.className = `pill ${stateName === "online" ? "pill-online" : "pill-offline"}`;
  }

  function renderQueue() {
    const queue = loadQueue();
    const count = queue.length;
    const pill = $("queue");
    pill.hidden = count === 0;
    pill.dataset.count = String(count);
    pill.textContent = `${count} queued`;
    const status = $("queue-status");
    status.dataset.count = String(count);
    status.textContent =
      count === 0
        ? "Nothing waiting to upload."
        : `${count} scan${count === 1 ? "" : "s"} waiting to upload${state.flushing ? " (uploading…)" : ""}.`;
    $("upload").disabled = count === 0;
    renderCount();
  }

  function renderSync() {
    const status = $("sync-status");
    const bundle = state.bundle;
    if (!bundle) {
      status.textContent = state.syncing ? "Downloading the offline list…" : "No offline list yet.";
      status.dataset.tickets = "0";
      return;
    }
    const n = Object.keys(bundle.tickets).length;
    status.dataset.tickets = String(n);
    let text = `Offline list: ${n} ticket${n === 1 ? "" : "s"}, refreshed ${formatTime(bundle.synced_at)}.`;
    if (!state.publicKey) text += " This browser cannot verify signatures offline.";
    if (status.dataset.warning === "storage") text += " (Device storage is full: the list is kept until reload.)";
    if (state.syncing) text += " Refreshing…";
    status.textContent = text;
  }

  function renderCount() {
    if (!state.galaId) return;
    const stats = state.stats || store.get(KEYS.stats(state.galaId), null);
    const pendingAdmissions = loadQueue().filter(
      (s) => s.gala_id === state.galaId && s.local_result === "admitted",
    ).length;
    const admitted = stats && typeof stats.admitted === "number" ? stats.admitted : null;
    $("count-admitted").textContent = admitted === null ? (pendingAdmissions ? String(pendingAdmissions) : "–") : String(admitted + pendingAdmissions);
    $("count-admitted").dataset.server = admitted === null ? "" : String(admitted);
    $("count-expected").textContent = stats && typeof stats.expected === "number" ? String(stats.expected) : "–";
    const note = $("count-note");
    if (pendingAdmissions) {
      note.textContent = `Includes ${pendingAdmissions} admitted offline, not uploaded yet.`;
    } else if (note.textContent.startsWith("Includes")) {
      note.textContent = "";
    }
  }

  function renderUndo() {
    const button = $("undo");
    button.disabled = !state.lastAdmission;
    button.textContent = state.lastAdmission
      ? `Undo: ${state.lastAdmission.name || "last admission"}`
      : "Undo last admission";
  }

  // ---------------------------------------------------------------------------------------------
  // Screens
  function show(screen) {
    for (const id of ["screen-signin", "screen-setup", "screen-scan"]) $(id).hidden = id !== screen;
    const label = $("gala-label");
    label.hidden = screen !== "screen-scan";
    label.textContent = screen === "screen-scan" ? `${state.galaTitle} · ${state.gate} gate` : "";
    document.body.dataset.screen = screen.replace("screen-", "");
  }

  function signOut(message) {
    const queued = loadQueue().length;
    stopCamera();
    state.apiKey = null;
    store.remove(KEYS.apiKey);
    show("screen-signin");
    $("signin-error").textContent =
      (message || "") + (queued ? ` ${queued} queued scan(s) stay on this device and upload after signing in.` : "");
    $("key").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const key = $("key").value.trim();
    const error = $("signin-error");
    if (!key) {
      error.textContent = "Enter the door key.";
      return;
    }
    error.textContent = "Checking…";
    try {
      const galas = await api("GET", "/v1/galas?limit=200", undefined, TIMEOUTS.api, key);
      state.apiKey = key;
      store.set(KEYS.apiKey, key);
      $("key").value = "";
      error.textContent = "";
      fillGalas(galas.data || []);
      show("screen-setup");
      $("gala").focus();
      void flushQueue();
    } catch (err) {
      error.textContent =
        err instanceof ApiError && err.status === 401
          ? "This key is not accepted."
          : err instanceof NetworkError
            ? "No connection to the server. Try again."
            : `Could not sign in: ${err.message}`;
    }
  }

  async function openSetup() {
    stopCamera();
    show("screen-setup");
    $("setup-error").textContent = "";
    try {
      const galas = await api("GET", "/v1/galas?limit=200");
      fillGalas(galas.data || []);
    } catch (_) {
      if (!$("gala").options.length && state.galaId) fillGalas([{ id: state.galaId, title: state.galaTitle }]);
    }
    $("gala").focus();
  }

  function fillGalas(galas) {
    const select = $("gala");
    select.replaceChildren();
    const order = { on_sale: 0, closed: 1, draft: 2, cancelled: 3 };
    const now = Date.now();
    galas.sort(
      (a, b) =>
        (order[a.status] ?? 1) - (order[b.status] ?? 1) ||
        Math.abs(Date.parse(a.starts_at) - now) - Math.abs(Date.parse(b.starts_at) - now),
    );
    for (const gala of galas) {
      const option = document.createElement("option");
      option.value = gala.id;
      const when = gala.starts_at ? new Date(gala.starts_at).toLocaleDateString() : "";
      const status = gala.status && !["on_sale", "closed"].includes(gala.status) ? ` (${gala.status})` : "";
      option.textContent = `${gala.title}${when ? ` — ${when}` : ""}${status}`;
      option.dataset.title = gala.title;
      select.append(option);
    }
    if (state.galaId && galas.some((g) => g.id === state.galaId)) select.value = state.galaId;
    $("gate").value = state.gate || "Main";
    $("setup-error").textContent = galas.length ? "" : "This key sees no gala.";
  }

  async function startScanning(event) {
    event.preventDefault();
    const select = $("gala");
    const gate = $("gate").value.trim();
    if (!select.value) {
      $("setup-error").textContent = "Choose a gala.";
      return;
    }
    if (!gate) {
      $("setup-error").textContent = "Name the gate (for example Main).";
      $("gate").focus();
      return;
    }
    const changed = select.value !== state.galaId;
    state.galaId = select.value;
    state.galaTitle = select.selectedOptions[0].dataset.title || select.selectedOptions[0].textContent;
    state.gate = gate;
    store.set(KEYS.gala, state.galaId);
    store.set(KEYS.galaTitle, state.galaTitle);
    store.set(KEYS.gate, state.gate);
    if (changed) {
      state.lastAdmission = null;
      state.stats = null;
      state.publicKey = null;
      state.publicKeyB64 = null;
    }
    await enterScanScreen();
  }

  async function enterScanScreen() {
    show("screen-scan");
    renderNet();
    renderQueue();
    renderHistory();
    renderUndo();
    renderCount();
    await useBundle(loadBundle(state.galaId));
    $("code").focus();
    void syncBundle();
    void refreshStats();
    void flushQueue();
  }

  // ---------------------------------------------------------------------------------------------
  // Background work: uploads, list refresh, count, and a probe while the server is unreachable
  function every(ms, fn) {
    state.timers.push(setInterval(fn, ms));
  }

  function startBackground() {
    every(10000, () => {
      if (!state.apiKey || !navigator.onLine) return;
      if (!state.reachable) {
        api("GET", "/healthz", undefined, TIMEOUTS.probe).catch(() => {});
        return;
      }
      void flushQueue();
    });
    every(20000, () => {
      if (document.body.dataset.screen === "scan" && online()) void refreshStats();
    });
    every(60000, () => {
      if (document.body.dataset.screen === "scan" && online()) void syncBundle();
    });
    window.addEventListener("online", () => {
      state.reachable = true;
      renderNet();
      void flushQueue();
      if (document.body.dataset.screen === "scan") {
        void syncBundle();
        void refreshStats();
      }
    });
    window.addEventListener("offline", renderNet);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && navigator.onLine) {
        void flushQueue();
        if (document.body.dataset.screen === "scan") void refreshStats();
      }
    });
    // Another tab of this page changed the queue.
    window.addEventListener("storage", (event) => {
      if (event.key === KEYS.queue) renderQueue();
    });
  }

  function wire() {
    $("signin-form").addEventListener("submit", signIn);
    $("setup-form").addEventListener("submit", startScanning);
    $("scan-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("code");
      const value = input.value;
      input.value = "";
      void submitCode(value, "keyboard");
      input.focus();
    });
    $("camera-toggle").addEventListener("click", () => (camera.running ? stopCamera() : startCamera()));
    $("undo").addEventListener("click", undoLast);
    $("upload").addEventListener("click", () => {
      state.reachable = true;
      void flushQueue();
    });
    $("resync").addEventListener("click", () => {
      void syncBundle({ full: true });
    });
    $("change-gala").addEventListener("click", openSetup);
    $("signout").addEventListener("click", () => signOut(""));
    $("signout-setup").addEventListener("click", () => signOut(""));
    // A handheld scanner types wherever the focus is: send stray keystrokes to the code field.
    document.addEventListener("keydown", (event) => {
      if (document.body.dataset.screen !== "scan" || event.ctrlKey || event.metaKey || event.altKey) return;
      const active = document.activeElement;
      const typing = active && ["INPUT", "SELECT", "TEXTAREA"].includes(active.tagName);
      if (!typing && event.key.length === 1) $("code").focus();
    });
  }

  function registerServiceWorker() {
    if (!("serviceWorker" in navigator) || !window.isSecureContext) return;
    navigator.serviceWorker.register("/door/sw.js", { scope: "/door" }).catch((err) => {
      console.warn("door: no offline copy of the page", err);
    });
  }

  async function boot() {
    wire();
    startBackground();
    renderNet();
    renderQueue();
    registerServiceWorker();
    if (!state.apiKey) {
      show("screen-signin");
      $("key").focus();
    } else if (!state.galaId || !state.gate) {
      await openSetup();
    } else {
      await enterScanScreen();
    }
    document.body.dataset.ready = "true";
  }

  // For tests and for a curious operator's console; nothing on the page depends on it.
  window.doorCheckin = { parseCode, decideOffline, flushQueue, syncBundle, state };

  void boot();
})();
