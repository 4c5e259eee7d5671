// plumb serve's console in a real browser (headless Chromium through
// puppeteer-core): keys, a streamed answer, stopping one, model output that
// holds markup shown as text, copy and regenerate, the conversation kept
// across a reload, and the dashboard's numbers moving with requests.
//
// Environment: PLUMB_URL (the server), PLUMB_USER_KEY, PLUMB_ADMIN_KEY,
// CHROMIUM (the browser), SHOTS (a folder for the pages' screenshots).
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import puppeteer from 'puppeteer-core';

const URL = process.env.PLUMB_URL;
const USER = process.env.PLUMB_USER_KEY;
const ADMIN = process.env.PLUMB_ADMIN_KEY;
const SHOTS = process.env.SHOTS;
mkdirSync(SHOTS, { recursive: true });

let step = '';
const say = (s) => { step = s; console.log(`# ${s}`); };

// the server's own view, read beside the page with the admin key
async function status() {
  const r = await fetch(`${URL}/v1/plumb/status`, { headers: { Authorization: `Bearer ${ADMIN}` } });
  assert.equal(r.status, 200);
  return r.json();
}

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
const failures = [];
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 860 });
  page.on('pageerror', (e) => failures.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // a refused inline script or style would say so here
    if (m.type() === 'error' && /Content Security Policy|Refused to/.test(m.text())) failures.push(`console: ${m.text()}`);
  });
  const chatBodies = [];
  page.on('request', (q) => {
    if (q.url().endsWith('/v1/chat/completions')) chatBodies.push(JSON.parse(q.postData()));
  });

  const setField = async (sel, value) => {
    await page.$eval(sel, (e, v) => { e.value = v; e.dispatchEvent(new Event('change')); }, value);
  };
  const lastAnswer = () => page.$eval('#messages .msg.assistant:last-child', (n) => ({
    text: n.querySelector('.content').textContent,
    streaming: n.classList.contains('streaming'),
    note: n.querySelector('.note') ? n.querySelector('.note').textContent : '',
  }));
  const waitDone = () => page.waitForFunction(() => {
    const n = document.querySelector('#messages .msg.assistant:last-child');
    return n && !n.classList.contains('streaming') && !document.querySelector('#send').disabled;
  }, { timeout: 60000 });
  const send = async (text) => {
    await page.type('#input', text);
    await page.keyboard.press('Enter');
  };

  say('the page asks for a key and refuses a wrong one');
  const resp = await page.goto(URL + '/', { waitUntil: 'domcontentloaded' });
  assert.equal(resp.status(), 200);
  assert.match(resp.headers()['content-security-policy'], /script-src 'self'/);
  await page.waitForSelector('#key-dialog[open]');
  await page.type('#key-input', 'sk-not-a-key-0000');
  await page.click('#key-save');
  await page.waitForFunction(() => document.querySelector('#key-dialog').open &&
    !document.querySelector('#key-error').hidden, { timeout: 10000 });
  assert.match(await page.$eval('#key-error', (e) => e.textContent), /incorrect API key/);
  assert.equal(await page.$$eval('#model option', (o) => o.length), 0);

  say('the right key: the models are listed');
  await page.type('#key-input', USER);
  await page.click('#key-save');
  await page.waitForFunction(() => document.querySelectorAll('#model option').length > 0, { timeout: 10000 });
  assert.equal(await page.$eval('#key-dialog', (d) => d.open), false);
  assert.equal(await page.$eval('#model', (s) => s.value), 'console');

  say('a message: the answer appears while it streams');
  await setField('#max_tokens', '400');
  await send('Hello there');
  await page.waitForFunction(() => {
    const n = document.querySelector('#messages .msg.assistant.streaming .content');
    return n && n.textContent.length > 0;
  }, { timeout: 30000, polling: 10 });
  await waitDone();
  let a = await lastAnswer();
  assert.ok(a.text.length > 0, 'an answer');
  assert.equal(chatBodies.length, 1);
  assert.equal(chatBodies[0].stream, true);
  assert.equal(chatBodies[0].max_tokens, 400);
  assert.deepEqual(chatBodies[0].messages, [{ role: 'user', content: 'Hello there' }]);

  say('stop: a long answer ends where it was stopped, and the server stops generating it');
  await setField('#max_tokens', '3500');
  await setField('#extra', JSON.stringify({ ignore_eos: true })); // random weights could end it early
  await send('Tell me a long story');
  await page.waitForFunction(() => {
    const n = document.querySelector('#messages .msg.assistant.streaming .content');
    return n && n.textContent.length > 20;
  }, { timeout: 30000 });
  assert.equal(await page.$eval('#stop', (b) => b.hidden), false);
  await page.click('#stop');
  await waitDone();
  a = await lastAnswer();
  assert.equal(a.note, 'stopped');
  assert.equal(await page.$eval('#stop', (b) => b.hidden), true);
  const stoppedAt = a.text.length;
  let busy = true;
  for (let i = 0; i < 50 && busy; i++) {
    busy = (await status()).slots_active > 0;
    if (busy) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(busy, false, 'the stopped request still runs on the server');
  assert.equal((await lastAnswer()).text.length, stoppedAt);
  assert.equal(chatBodies.at(-1).ignore_eos, true);

  say('model output that holds markup is shown as text; markdown is rendered');
  await page.click('#new-chat');
  const forced = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> ' +
    'Markdown from the model: **bold**, `code` and\n```c\nint main(void) { return 0; }\n```\n';
  await page.$eval('details', (d) => { d.open = true; });
  await setField('#extra', JSON.stringify({ grammar: `root ::= ${JSON.stringify(forced)}` }));
  await setField('#max_tokens', '200');
  await send('Show me some markup');
  await waitDone();
  a = await lastAnswer();
  assert.ok(a.text.includes('<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'), a.text);
  const dom = await page.$eval('#messages .msg.assistant:last-child .content', (c) => ({
    scripts: c.querySelectorAll('script, img, iframe').length,
    strong: [...c.querySelectorAll('strong')].map((e) => e.textContent),
    code: [...c.querySelectorAll('code')].map((e) => e.textContent),
    pre: [...c.querySelectorAll('pre')].map((e) => e.textContent),
  }));
  assert.equal(dom.scripts, 0);
  assert.deepEqual(dom.strong, ['bold']);
  assert.ok(dom.code.includes('code'));
  assert.deepEqual(dom.pre, ['int main(void) { return 0; }']);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.equal(await page.$$eval('body script', (s) => s.length), 0);

  say('copy and regenerate');
  await page.click('#messages .msg.assistant:last-child .copy');
  await page.waitForFunction(() =>
    document.querySelector('#messages .msg.assistant:last-child .copy').textContent === 'Copied');
  const before = chatBodies.length;
  await page.click('#messages .msg.assistant:last-child .regenerate'); // the new answer starts at once
  await waitDone();
  assert.equal(chatBodies.length, before + 1);
  assert.deepEqual(chatBodies.at(-1).messages, [{ role: 'user', content: 'Show me some markup' }]);
  assert.equal(await page.$$eval('#messages .msg', (m) => m.length), 2);
  await page.$eval('details', (d) => { d.open = false; });
  await page.screenshot({ path: `${SHOTS}/console-chat.png` });

  say('the conversation is kept across a reload');
  await page.reload({ waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => document.querySelectorAll('#messages .msg').length === 2);
  assert.ok((await lastAnswer()).text.includes('Markdown from the model'));

  say('the dashboard needs an admin key');
  await page.click('#tab-dash');
  await page.waitForFunction(() => !document.querySelector('#dash-error').hidden, { timeout: 10000 });
  assert.match(await page.$eval('#dash-error', (e) => e.textContent), /admin key/);

  say('with the admin key it shows the server, and its numbers follow requests');
  await page.click('#key-button');
  await page.waitForSelector('#key-dialog[open]');
  await page.type('#key-input', ADMIN);
  await page.click('#key-save');
  await page.waitForFunction(() => /^\d/.test(document.querySelector('#dash-generated').textContent) &&
    document.querySelector('#dash-error').hidden, { timeout: 10000 });
  const shown = async () => page.$eval('#dash-generated', (e) => e.textContent);
  const n0 = await shown();
  assert.equal(String((await status()).generated_tokens), n0);
  const r = await fetch(`${URL}/v1/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${USER}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 16 }),
  });
  assert.equal(r.status, 200);
  const made = (await r.json()).usage.completion_tokens;
  await page.waitForFunction((n) => document.querySelector('#dash-generated').textContent !== n, { timeout: 10000 }, n0);
  assert.equal(Number(await shown()), Number(n0) + made);
  const requests = await page.$$eval('#requests-table tbody tr', (rows) => rows.map((r) => r.textContent));
  assert.ok(requests.some((t) => t.startsWith('/v1/completions200')), requests.join('|'));
  assert.ok(requests.some((t) => t.startsWith('/v1/chat/completions200')), requests.join('|'));
  assert.ok(requests.some((t) => t.startsWith('/v1/models401')), requests.join('|'));
  const models = await page.$$eval('#models-table tbody tr', (rows) => rows.map((r) => r.textContent));
  // the server's model list (GET /v1/plumb/models): loaded, its slots
  assert.ok(models.some((t) => t.startsWith('consoleloaded') && t.includes('/ 2')), models.join('|'));
  // usage by key: the user's requests, recorded by the server
  await page.waitForFunction(() => [...document.querySelectorAll('#usage-key tbody tr')]
    .some((r) => r.textContent.startsWith('user')), { timeout: 20000 });
  await page.waitForFunction(() => document.querySelectorAll('#doctor-table tbody tr').length > 0, { timeout: 20000 });
  const machine = await page.$$eval('#machine dt', (d) => d.map((e) => e.textContent));
  assert.ok(machine.includes('CPU') && machine.includes('Memory'), machine.join(','));
  // the charts follow a few seconds of load: two users asking for 6 s
  const until = Date.now() + 6000;
  const load = [0, 1].map(async (i) => {
    for (let k = 0; Date.now() < until; k++) {
      const q = await fetch(`${URL}/v1/chat/completions`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${USER}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: `Question ${i}.${k}` }], max_tokens: 100 }),
      });
      assert.equal(q.status, 200);
      await q.json();
    }
  });
  await new Promise((res) => setTimeout(res, 4500)); // (tokens count when a request ends: no rate asserted here)
  await page.screenshot({ path: `${SHOTS}/console-dashboard.png`, fullPage: true });
  await Promise.all(load);

  assert.deepEqual(failures, []);
  console.log('ok: console');
} catch (e) {
  console.error(`failed at: ${step}`);
  console.error(e);
  if (failures.length) console.error(failures.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}
