// plumb's console: chat with a served model and watch the server.
//
// Everything the page shows that came from a model or a request is put in
// as text (textContent, text nodes): never as HTML. Markdown is rendered by
// building elements, so model output cannot become markup or code; the
// server's Content-Security-Policy forbids inline scripts besides.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = 'plumb.key';      // sessionStorage: this tab only
  const CHAT_STORE = 'plumb.chat';    // localStorage: the conversation and settings
  const POLL_MS = 2000;
  const HISTORY = 90;                 // chart samples kept (3 minutes)

  let apiKey = sessionStorage.getItem(KEY_STORE) || '';

  // ---- small helpers ----

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === 'text') e.textContent = v;
        else if (k === 'className') e.className = v;
        else e.setAttribute(k, v);
      }
    }
    for (const c of children) e.append(c);
    return e;
  }

  function showError(node, text) {
    node.textContent = text || '';
    node.hidden = !text;
  }

  async function errorMessage(r) {
    try {
      const j = await r.json();
      if (j && j.error && j.error.message) return j.error.message;
      return JSON.stringify(j);
    } catch (e) {
      return `HTTP ${r.status}`;
    }
  }

  function fmtNum(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return '–';
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + 'M';
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    return Number.isInteger(n) ? String(n) : n.toFixed(2);
  }

  function fmtBytes(b) {
    if (b === null || b === undefined) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
  }

  function fmtDuration(s) {
    if (s === null || s === undefined) return '–';
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  // ---- the API key ----

  let keyPrompt = null; // {resolve, reject} while the dialog is open

  function askKey(why) {
    const dialog = $('key-dialog');
    $('key-why').textContent = 'This server needs an API key.';
    showError($('key-error'), why);
    $('key-input').value = '';
    if (!dialog.open) dialog.showModal();
    $('key-input').focus();
    if (!keyPrompt) {
      let resolve, reject;
      const p = new Promise((res, rej) => { resolve = res; reject = rej; });
      keyPrompt = { p, resolve, reject };
    }
    return keyPrompt.p;
  }

  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const k = $('key-input').value.trim();
    if (!k) { showError($('key-error'), 'Enter a key.'); return; }
    apiKey = k;
    sessionStorage.setItem(KEY_STORE, k);
    $('key-dialog').close();
    if (keyPrompt) { const kp = keyPrompt; keyPrompt = null; kp.resolve(); }
  });
  $('key-cancel').addEventListener('click', () => {
    $('key-dialog').close();
    if (keyPrompt) { const kp = keyPrompt; keyPrompt = null; kp.reject(new Error('no API key given')); }
  });
  $('key-button').addEventListener('click', () => {
    askKey('').then(() => { loadModels(); if (!$('dash-page').hidden) startDashboard(); }, () => {});
  });

  // fetch with the key; a 401 asks for one (again) and retries
  async function api(path, opts = {}) {
    for (;;) {
      const headers = Object.assign({}, opts.headers || {});
      if (opts.body) headers['Content-Type'] = 'application/json';
      if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
      const r = await fetch(path, Object.assign({}, opts, { headers }));
      if (r.status !== 401) return r;
      $('key-button').hidden = false;
      const why = apiKey ? await errorMessage(r) : '';
      await askKey(why); // throws when cancelled
    }
  }

  // ---- server state (no key needed) ----

  async function pollReady() {
    const s = $('server-state');
    try {
      const r = await fetch('/ready');
      s.textContent = r.ok ? 'ready' : 'draining';
      s.className = r.ok ? 'state ok' : 'state bad';
    } catch (e) {
      s.textContent = 'unreachable';
      s.className = 'state bad';
    }
  }

  // ---- tabs ----

  function showTab(name) {
    const chat = name === 'chat';
    $('chat-page').hidden = !chat;
    $('dash-page').hidden = chat;
    $('tab-chat').classList.toggle('active', chat);
    $('tab-dash').classList.toggle('active', !chat);
    if (chat) stopDashboard(); else startDashboard();
  }
  $('tab-chat').addEventListener('click', () => showTab('chat'));
  $('tab-dash').addEventListener('click', () => showTab('dash'));

  // ---- markdown, as elements ----

  // inline: `code`, **bold**, *italic*, [text](http(s)://...)
  function inline(text) {
    const frag = document.createDocumentFragment();
    const re = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s\n][^*\n]*\*)|(\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\))/g;
    let last = 0, m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) frag.append(text.slice(last, m.index));
      if (m[1]) frag.append(el('code', { text: m[1].slice(1, -1) }));
      else if (m[2]) frag.append(el('strong', { text: m[2].slice(2, -2) }));
      else if (m[3]) frag.append(el('em', { text: m[3].slice(1, -1) }));
      else frag.append(el('a', { href: m[6], text: m[5], rel: 'noopener noreferrer', target: '_blank' }));
      last = re.lastIndex;
    }
    if (last < text.length) frag.append(text.slice(last));
    return frag;
  }

  function markdown(text) {
    const frag = document.createDocumentFragment();
    const lines = text.split('\n');
    let para = [], list = null, code = null;
    const flushPara = () => {
      if (para.length) frag.append(el('p', null, inline(para.join('\n'))));
      para = [];
    };
    const flushList = () => { if (list) frag.append(list); list = null; };
    for (const line of lines) {
      if (code) {
        if (/^\s*```/.test(line)) { frag.append(el('pre', null, el('code', { text: code.join('\n') }))); code = null; }
        else code.push(line);
        continue;
      }
      if (/^\s*```/.test(line)) { flushPara(); flushList(); code = []; continue; }
      const h = /^(#{1,6})\s+(.*)$/.exec(line);
      const li = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(line);
      if (h) {
        flushPara(); flushList();
        frag.append(el(`h${Math.min(h[1].length + 2, 6)}`, null, inline(h[2])));
      } else if (li) {
        flushPara();
        const ordered = /\d/.test(li[1][0]);
        if (!list || (list.tagName === 'OL') !== ordered) { flushList(); list = el(ordered ? 'ol' : 'ul'); }
        list.append(el('li', null, inline(li[2])));
      } else if (!line.trim()) {
        flushPara(); flushList();
      } else {
        flushList();
        para.push(line);
      }
    }
    if (code) frag.append(el('pre', null, el('code', { text: code.join('\n') }))); // still streaming
    flushPara(); flushList();
    return frag;
  }

  // ---- the conversation ----

  const saved = (() => {
    try { return JSON.parse(localStorage.getItem(CHAT_STORE) || '{}'); } catch (e) { return {}; }
  })();
  const chat = { messages: Array.isArray(saved.messages) ? saved.messages : [], settings: saved.settings || {} };
  const settingIds = ['model', 'system', 'temperature', 'top_p', 'max_tokens', 'seed', 'extra'];
  let controller = null; // the answer streaming now

  function save() {
    for (const id of settingIds) chat.settings[id] = $(id).value;
    localStorage.setItem(CHAT_STORE, JSON.stringify({ messages: chat.messages, settings: chat.settings }));
  }

  function messageNode(m, i) {
    const node = el('div', { className: `msg ${m.role}` });
    node.append(el('div', { className: 'who', text: m.role === 'user' ? 'you' : (m.model || 'assistant') }));
    if (m.reasoning) {
      const d = el('details', { className: 'reasoning' }, el('summary', { text: 'reasoning' }),
        el('div', { text: m.reasoning }));
      node.append(d);
    }
    node.append(el('div', { className: 'content' }, m.role === 'user' ? el('p', { text: m.content }) : markdown(m.content)));
    if (m.note) node.append(el('div', { className: 'note', text: m.note }));
    if (m.role === 'assistant' && !m.streaming) {
      const tools = el('div', { className: 'tools' });
      const copy = el('button', { type: 'button', className: 'copy', text: 'Copy' });
      copy.addEventListener('click', () => copyText(m.content, copy));
      tools.append(copy);
      if (i === chat.messages.length - 1) {
        const regen = el('button', { type: 'button', className: 'regenerate', text: 'Regenerate' });
        regen.addEventListener('click', regenerate);
        tools.append(regen);
      }
      node.append(tools);
    }
    if (m.streaming) node.classList.add('streaming');
    return node;
  }

  function render() {
    const box = $('messages');
    box.replaceChildren(...chat.messages.map(messageNode));
    box.scrollTop = box.scrollHeight;
  }

  function renderLast() {
    const box = $('messages');
    const i = chat.messages.length - 1;
    const node = messageNode(chat.messages[i], i);
    if (box.lastElementChild && box.children.length === chat.messages.length) box.lastElementChild.replaceWith(node);
    else box.append(node);
    box.scrollTop = box.scrollHeight;
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) { // no clipboard permission: the old way
      const t = el('textarea');
      t.value = text;
      document.body.append(t);
      t.select();
      document.execCommand('copy');
      t.remove();
    }
    button.textContent = 'Copied';
    setTimeout(() => { button.textContent = 'Copy'; }, 1500);
  }

  function requestBody() {
    const body = { model: $('model').value || undefined, stream: true, messages: [] };
    const system = $('system').value.trim();
    if (system) body.messages.push({ role: 'system', content: system });
    for (const m of chat.messages) if (!m.streaming && !m.error) body.messages.push({ role: m.role, content: m.content });
    for (const [id, parse] of [['temperature', parseFloat], ['top_p', parseFloat], ['max_tokens', (v) => parseInt(v, 10)],
      ['seed', (v) => parseInt(v, 10)]]) {
      const v = $(id).value.trim();
      if (v !== '' && !Number.isNaN(parse(v))) body[id] = parse(v);
    }
    const extra = $('extra').value.trim();
    if (extra) {
      let x;
      try { x = JSON.parse(extra); } catch (e) { throw new Error(`More request fields: not JSON (${e.message})`); }
      if (!x || typeof x !== 'object' || Array.isArray(x)) throw new Error('More request fields: a JSON object, please');
      Object.assign(body, x);
    }
    return body;
  }

  function setBusy(busy) {
    $('send').disabled = busy;
    $('stop').hidden = !busy;
    $('model').disabled = busy;
  }

  // one SSE event's data: a chunk of the answer
  function takeChunk(m, data) {
    const j = JSON.parse(data);
    if (j.error) throw new Error(j.error.message || 'the server reported an error');
    const c = j.choices && j.choices[0];
    if (!c) return;
    if (j.model) m.model = j.model;
    if (c.delta) {
      if (typeof c.delta.content === 'string') m.content += c.delta.content;
      if (typeof c.delta.reasoning_content === 'string') m.reasoning = (m.reasoning || '') + c.delta.reasoning_content;
    }
    if (c.finish_reason) m.finish = c.finish_reason;
  }

  async function answer() {
    showError($('chat-error'), '');
    showError($('extra-error'), '');
    let body;
    try { body = requestBody(); } catch (e) { showError($('extra-error'), e.message); return; }
    const m = { role: 'assistant', content: '', streaming: true, model: body.model };
    chat.messages.push(m);
    renderLast();
    setBusy(true);
    controller = new AbortController();
    try {
      const r = await api('/v1/chat/completions', { method: 'POST', body: JSON.stringify(body), signal: controller.signal });
      if (!r.ok) throw new Error(await errorMessage(r));
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const event = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          for (const line of event.split('\n')) {
            if (!line.startsWith('data:')) continue;
            const data = line.slice(5).trim();
            if (data && data !== '[DONE]') takeChunk(m, data);
          }
        }
        renderLast();
      }
      if (m.finish === 'length') m.note = 'stopped at the token limit';
    } catch (e) {
      if (e.name === 'AbortError') {
        m.note = 'stopped';
      } else {
        m.error = true;
        m.note = `error: ${e.message}`;
        showError($('chat-error'), e.message);
      }
    } finally {
      m.streaming = false;
      controller = null;
      setBusy(false);
      render();
      save();
    }
  }

  function send() {
    const text = $('input').value;
    if (!text.trim() || controller) return;
    chat.messages.push({ role: 'user', content: text });
    $('input').value = '';
    render();
    save();
    answer();
  }

  function regenerate() {
    if (controller) return;
    while (chat.messages.length && chat.messages[chat.messages.length - 1].role === 'assistant') chat.messages.pop();
    render();
    answer();
  }

  $('composer').addEventListener('submit', (ev) => { ev.preventDefault(); send(); });
  $('input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); send(); }
  });
  $('stop').addEventListener('click', () => { if (controller) controller.abort(); });
  $('new-chat').addEventListener('click', () => {
    if (controller) controller.abort();
    chat.messages = [];
    render();
    save();
  });
  for (const id of settingIds) $(id).addEventListener('change', save);

  async function loadModels() {
    const sel = $('model');
    const want = sel.value || chat.settings.model;
    let r;
    try { r = await api('/v1/models'); } catch (e) { showError($('chat-error'), e.message); return; }
    if (!r.ok) { showError($('chat-error'), await errorMessage(r)); return; }
    const j = await r.json();
    sel.replaceChildren(...j.data.map((m) => el('option', { value: m.id, text: m.id })));
    if (want && j.data.some((m) => m.id === want)) sel.value = want;
    showError($('chat-error'), '');
  }

  // ---- the dashboard ----

  let dashTimer = null, slowTimer = null, prev = null;
  const series = { tps: [], ttft: [], itl: [], kv: [] };

  function push(name, v) {
    series[name].push(v);
    if (series[name].length > HISTORY) series[name].shift();
  }

  function drawChart(canvas, values, color) {
    const ctx = canvas.getContext('2d');
    const w = canvas.width, h = canvas.height, pad = 18;
    ctx.clearRect(0, 0, w, h);
    const finite = values.filter((v) => v !== null && Number.isFinite(v));
    const max = Math.max(1e-9, ...finite) * 1.15;
    ctx.strokeStyle = '#dde1e8';
    ctx.fillStyle = '#687083';
    ctx.font = '10px system-ui, sans-serif';
    ctx.beginPath();
    ctx.moveTo(0, h - pad + 0.5);
    ctx.lineTo(w, h - pad + 0.5);
    ctx.stroke();
    ctx.fillText(finite.length ? fmtNum(max / 1.15) : 'no data yet', 2, 10);
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) { started = false; return; }
      // the newest sample at the right edge
      const x = w - ((values.length - 1 - i) / (HISTORY - 1)) * w, y = h - pad - (v / max) * (h - pad - 12);
      if (started) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      started = true;
    });
    ctx.stroke();
  }

  function fillTable(table, header, rows) {
    table.tHead.replaceChildren(el('tr', null, ...header.map((h) => el('th', { text: h }))));
    table.tBodies[0].replaceChildren(...rows.map((r) => el('tr', null, ...r.map((c) =>
      el('td', { text: c === null || c === undefined ? '–' : String(c), className: typeof c === 'number' ? 'num' : '' })))));
  }

  function meanOver(now, before, name) {
    if (!before) return null;
    const dn = now[name].count - before[name].count;
    return dn > 0 ? (now[name].sum - before[name].sum) / dn : null;
  }

  async function modelAction(id, action) {
    const r = await api(`/v1/plumb/models/${encodeURIComponent(id)}/${action}`, { method: 'POST', body: '{}' });
    if (!r.ok) showError($('dash-error'), await errorMessage(r));
    pollStatus();
  }

  function showModels(status, detail) {
    const table = $('models-table');
    if (detail) { // the server loads models on demand: their states
      fillTable(table, ['model', 'state', 'memory', 'slots busy', 'queued', 'idle', 'unloads in', ''], []);
      table.tBodies[0].replaceChildren(...detail.models.map((m) => {
        const row = el('tr', null, el('td', { text: m.id }), el('td', { text: m.state }),
          el('td', { className: 'num', text: fmtBytes(m.memory_bytes) }),
          el('td', { className: 'num', text: `${m.slots_busy ?? 0} / ${m.slots ?? '–'}` }),
          el('td', { className: 'num', text: fmtNum(m.queued ?? 0) }),
          el('td', { text: m.idle_s === null || m.idle_s === undefined ? '–' : fmtDuration(m.idle_s) }),
          el('td', { text: m.expires_in_s === null || m.expires_in_s === undefined ? '–' : fmtDuration(m.expires_in_s) }));
        const b = el('button', { type: 'button', text: m.state === 'unloaded' ? 'Load' : 'Unload' });
        b.addEventListener('click', () => modelAction(m.id, m.state === 'unloaded' ? 'load' : 'unload'));
        row.append(el('td', null, b));
        return row;
      }));
      return;
    }
    fillTable(table, ['model', 'running', 'waiting', 'KV cache', 'generated tokens'],
      status.models.map((m) => [m.id, m.running, m.waiting, `${(m.kv_usage * 100).toFixed(1)} %`,
        m.generated_tokens ?? 0]));
  }

  async function pollStatus() {
    let r;
    try { r = await api('/v1/plumb/status'); } catch (e) { showError($('dash-error'), e.message); return; }
    if (r.status === 403) {
      showError($('dash-error'), 'The dashboard needs an admin key (a line "ID KEY admin" in the server\'s key file). ' +
        'Use another key with the "API key" button.');
      $('key-button').hidden = false;
      return;
    }
    if (!r.ok) { showError($('dash-error'), await errorMessage(r)); return; }
    const s = await r.json();
    showError($('dash-error'), '');
    const total = s.requests.reduce((a, q) => a + q.count, 0);
    $('dash-ready').textContent = s.ready ? 'ready' : 'draining';
    $('dash-uptime').textContent = fmtDuration(s.uptime_s);
    $('dash-requests').textContent = fmtNum(total);
    $('dash-generated').textContent = fmtNum(s.generated_tokens);
    $('dash-slots').textContent = `${s.slots_active} / ${s.slots}`;
    $('dash-queue').textContent = fmtNum(s.queue_depth);
    $('dash-kv').textContent = `${(s.kv_usage * 100).toFixed(1)} %`;
    if (prev && s.time > prev.time) {
      const dt = s.time - prev.time;
      const tps = (s.generated_tokens - prev.generated_tokens) / dt;
      $('dash-tps').textContent = fmtNum(tps);
      push('tps', tps);
      const ttft = meanOver(s, prev, 'ttft'), itl = meanOver(s, prev, 'itl');
      push('ttft', ttft);
      push('itl', itl === null ? null : itl * 1000);
      push('kv', s.kv_usage * 100);
    }
    prev = s;
    drawChart($('chart-tps'), series.tps, '#2f6fde');
    drawChart($('chart-ttft'), series.ttft, '#b7791f');
    drawChart($('chart-itl'), series.itl, '#805ad5');
    drawChart($('chart-kv'), series.kv, '#1f8a4c');
    const rows = s.requests.slice().sort((a, b) => a.endpoint.localeCompare(b.endpoint) || a.status - b.status);
    fillTable($('requests-table'), ['endpoint', 'status', 'count'], rows.map((q) => [q.endpoint, q.status, q.count]));
    let detail = null;
    const mr = await api('/v1/plumb/models');
    if (mr.ok) detail = await mr.json();
    showModels(s, detail);
  }

  async function loadUsage() {
    const r = await api('/v1/plumb/usage');
    if (!r.ok) return;
    const u = await r.json();
    const cols = ['requests', 'prompt tokens', 'completion tokens'];
    const rows = (list, name) => list.map((x) => [x[name] || '(no key)', x.requests, x.prompt_tokens, x.completion_tokens]);
    fillTable($('usage-key'), ['key', ...cols], rows(u.by_key, 'key'));
    fillTable($('usage-model'), ['model', ...cols], rows(u.by_model, 'model'));
    fillTable($('usage-day'), ['day', ...cols], rows(u.by_day, 'day'));
  }

  async function loadDoctor() {
    const r = await api('/v1/plumb/doctor');
    if (!r.ok) return;
    const d = await r.json();
    $('doctor-table').tBodies[0].replaceChildren(...d.checks.map((c) => el('tr', null,
      el('td', { className: `verdict-${c.verdict}`, text: c.verdict }), el('td', { text: c.check }),
      el('td', { text: c.detail }), el('td', { text: c.fix }))));
  }

  async function loadMachine() {
    const r = await api('/v1/plumb/machine');
    if (!r.ok) return;
    const m = await r.json();
    const facts = [
      ['CPU', `${m.cpu.model} (${m.cpu.cores} cores, ${m.cpu.threads} threads)`],
      ['Kernels', m.cpu.kernels || '–'],
      ['Memory', `${fmtBytes(m.memory.total_bytes)} (${fmtBytes(m.memory.available_bytes)} available)`],
      ['Memory bandwidth', m.measured && m.memory.bandwidth_gbs ? `${m.memory.bandwidth_gbs.toFixed(1)} GB/s` :
        'not measured (plumb survey measures it)'],
      ['Disk', m.disk && m.disk.total_bytes ? `${fmtBytes(m.disk.free_bytes)} free of ${fmtBytes(m.disk.total_bytes)}` : '–'],
      ['GPUs', m.gpus && m.gpus.length ? m.gpus.map((g) => g.name || 'GPU').join(', ') : 'none'],
      ['Host', `${m.host || '–'} (${m.kernel || ''})`],
    ];
    $('machine').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
  }

  async function slowReports() {
    try { await Promise.all([loadUsage(), loadDoctor(), loadMachine()]); } catch (e) { /* pollStatus reports */ }
  }

  function startDashboard() {
    stopDashboard();
    const tick = () => pollStatus().catch((e) => showError($('dash-error'), e.message));
    tick();
    slowReports();
    dashTimer = setInterval(tick, POLL_MS);
    slowTimer = setInterval(loadUsage, 15000);
  }

  function stopDashboard() {
    clearInterval(dashTimer);
    clearInterval(slowTimer);
    dashTimer = slowTimer = null;
  }
  $('doctor-refresh').addEventListener('click', () => loadDoctor());

  // ---- start ----

  for (const id of settingIds) if (chat.settings[id] !== undefined && id !== 'model') $(id).value = chat.settings[id];
  render();
  pollReady();
  setInterval(pollReady, 5000);
  loadModels();
  if (location.hash === '#dashboard') showTab('dash');
  window.addEventListener('hashchange', () => showTab(location.hash === '#dashboard' ? 'dash' : 'chat'));
  if (apiKey) $('key-button').hidden = false;
})();
