// The official openai npm client against plumb serve: model listing, chat
// completions whole and streamed, completions, errors; tool calls (whole
// and streamed, required, named, parallel, a conversation with results),
// structured output with a JSON Schema and with the client's zod helper,
// log-probabilities, logit_bias, n choices, embeddings (float and base64,
// and llama.cpp's reference values for the encoder model when the
// reference data is there). Run by run.sh with PLUMB_URL set; exits
// non-zero on the first failed check.
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import Ajv from 'ajv';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const client = new OpenAI({
  baseURL: process.env.PLUMB_URL + '/v1',
  apiKey: process.env.PLUMB_KEY || 'unused',
  maxRetries: 0,
});
const model = process.env.PLUMB_MODEL;

const models = await client.models.list();
const ids = [];
for await (const m of models) ids.push(m.id);
const bert = process.env.PLUMB_BERT;
assert.deepEqual(ids, bert ? [model, bert] : [model], 'models.list');
const one = await client.models.retrieve(model);
assert.equal(one.id, model);
assert.ok(one.context_length >= 2048 && one.capabilities.includes('tools'), 'context length and capabilities');

const messages = [
  { role: 'system', content: 'You answer briefly.' },
  { role: 'user', content: 'Name three colours.' },
];
const whole = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0 });
assert.equal(whole.object, 'chat.completion');
assert.equal(whole.choices.length, 1);
const text = whole.choices[0].message.content;
assert.equal(typeof text, 'string');
assert.equal(whole.choices[0].message.role, 'assistant');
assert.ok(['stop', 'length'].includes(whole.choices[0].finish_reason));
assert.ok(whole.usage.prompt_tokens > 0);
assert.ok(whole.usage.completion_tokens > 0 && whole.usage.completion_tokens <= 16);
assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens);

// the same request streamed gives the same text, then the usage
const stream = await client.chat.completions.create({
  model, messages, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let streamed = '', finish = null, usage = null, chunks = 0;
for await (const chunk of stream) {
  chunks++;
  assert.equal(chunk.object, 'chat.completion.chunk');
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    if (c.delta?.content) streamed += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
}
assert.ok(chunks >= 2, 'several chunks');
assert.equal(streamed, text, 'streamed text equals the whole answer');
assert.equal(finish, whole.choices[0].finish_reason);
assert.equal(usage.completion_tokens, whole.usage.completion_tokens);

// without a model: the one served
if (!bert) {
  const nomodel = await client.chat.completions.create({ messages, max_tokens: 4, temperature: 0 });
  assert.equal(nomodel.model, model);
}

// completions, with a seed: the same twice
const c1 = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 12, temperature: 0.8, seed: 7 });
const c2 = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 12, temperature: 0.8, seed: 7 });
assert.equal(c1.object, 'text_completion');
assert.equal(c1.choices[0].text, c2.choices[0].text, 'a fixed seed repeats');
assert.ok(c1.usage.completion_tokens > 0);

// JSON mode
const js = await client.chat.completions.create({
  model, messages: [{ role: 'user', content: 'JSON' }], max_tokens: 200, temperature: 0,
  response_format: { type: 'json_object' },
});
assert.match(js.choices[0].message.content, /^\s*\{/);
if (js.choices[0].finish_reason === 'stop') JSON.parse(js.choices[0].message.content);

// errors reach the client as its error classes, with OpenAI's fields
await assert.rejects(
  client.chat.completions.create({ model: 'no-such-model', messages, max_tokens: 2 }),
  (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found');
await assert.rejects(
  client.chat.completions.create({ model, messages, temperature: 9 }),
  (e) => e instanceof OpenAI.BadRequestError && e.status === 400);
if (process.env.PLUMB_KEY) {
  const wrong = new OpenAI({ baseURL: process.env.PLUMB_URL + '/v1', apiKey: 'sk-wrong-key-123', maxRetries: 0 });
  await assert.rejects(wrong.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
}

// ---- tool calls ----
const weather = {
  type: 'function',
  function: {
    name: 'get_weather', description: 'The weather in a city',
    parameters: {
      type: 'object', additionalProperties: false, required: ['city', 'unit'],
      properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['celsius', 'fahrenheit'] } },
    },
  },
};
const time = {
  type: 'function',
  function: {
    name: 'get_time', parameters: {
      type: 'object', additionalProperties: false, required: ['zone'],
      properties: { zone: { type: 'integer', minimum: -12, maximum: 14 } },
    },
  },
};
const tools = [weather, time];
const ajv = new Ajv({ strict: false });
const validArgs = { get_weather: ajv.compile(weather.function.parameters), get_time: ajv.compile(time.function.parameters) };
function checkCalls(calls, only) {
  assert.ok(Array.isArray(calls) && calls.length >= 1, 'tool calls');
  for (const c of calls) {
    assert.equal(c.type, 'function');
    assert.match(c.id, /^call_/);
    if (only) assert.equal(c.function.name, only);
    const args = JSON.parse(c.function.arguments);
    assert.ok(validArgs[c.function.name](args), `${c.function.name} ${c.function.arguments}: ${ajv.errorsText(validArgs[c.function.name].errors)}`);
  }
}
const ask = [{ role: 'user', content: 'What is the weather in Paris?' }];
// required: a call must come, whatever the model (random weights here);
// one call, since a random model may go on writing calls to the length
// limit when it may write several (the parallel case is tried below)
const req = await client.chat.completions.create({ model, messages: ask, tools, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 300, seed: 1 });
assert.equal(req.choices[0].finish_reason, 'tool_calls');
checkCalls(req.choices[0].message.tool_calls);
// a named function, one call only
const named = await client.chat.completions.create({
  model, messages: ask, tools, tool_choice: { type: 'function', function: { name: 'get_time' } },
  parallel_tool_calls: false, max_tokens: 300, seed: 2,
});
assert.equal(named.choices[0].finish_reason, 'tool_calls');
assert.equal(named.choices[0].message.tool_calls.length, 1);
checkCalls(named.choices[0].message.tool_calls, 'get_time');
// parallel: several calls in one answer (seeds until the model writes two)
let parallel = null;
for (let seed = 0; seed < 20 && !parallel; seed++) {
  const r = await client.chat.completions.create({ model, messages: ask, tools, tool_choice: 'required', parallel_tool_calls: true, max_tokens: 400, seed });
  if (r.choices[0].message.tool_calls.length >= 2) parallel = r;
}
assert.ok(parallel, 'parallel tool calls within 20 seeds');
checkCalls(parallel.choices[0].message.tool_calls);
// streamed: the client's stream helper puts the fragments together
const runner = client.chat.completions.stream({ model, messages: ask, tools, tool_choice: { type: 'function', function: { name: 'get_weather' } }, parallel_tool_calls: false, max_tokens: 300, seed: 3 });
let deltas = 0;
runner.on('chunk', (c) => { if (c.choices[0]?.delta?.tool_calls) deltas++; });
const streamed_calls = await runner.finalChatCompletion();
assert.equal(streamed_calls.choices[0].finish_reason, 'tool_calls');
checkCalls(streamed_calls.choices[0].message.tool_calls, 'get_weather');
assert.ok(deltas >= 2, 'the call came as a name delta and argument fragments');
// the conversation goes on with the call and its result in the history
const call = req.choices[0].message.tool_calls[0];
const after = await client.chat.completions.create({
  model, max_tokens: 8, temperature: 0, tools, tool_choice: 'none',
  messages: [...ask, req.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '{"temp": 21}' }],
});
assert.equal(typeof after.choices[0].message.content, 'string');
assert.equal(after.choices[0].message.tool_calls, undefined);
// a schema plumb cannot follow is refused, naming the keyword
await assert.rejects(
  client.chat.completions.create({ model, messages: ask, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', not: {} } } }] }),
  (e) => e instanceof OpenAI.BadRequestError && /'not'/.test(e.message));

// ---- structured output ----
const person = {
  type: 'object', additionalProperties: false, required: ['name', 'age', 'tags'],
  properties: {
    name: { type: 'string', maxLength: 10 }, age: { type: 'integer', minimum: 0, maximum: 120 },
    tags: { type: 'array', items: { type: 'string', maxLength: 6 }, maxItems: 3 },
  },
};
const so = await client.chat.completions.create({
  model, messages: [{ role: 'user', content: 'A person' }], max_tokens: 300, seed: 4,
  response_format: { type: 'json_schema', json_schema: { name: 'person', strict: true, schema: person } },
});
assert.equal(so.choices[0].finish_reason, 'stop');
assert.ok(ajv.validate(person, JSON.parse(so.choices[0].message.content)), ajv.errorsText());
// the client's zod helper: its schema out, its parser back
const Event = z.object({ title: z.string().max(12), day: z.enum(['mon', 'tue', 'wed']), guests: z.array(z.string().max(5)).max(3), confirmed: z.boolean() });
const parsed = await client.chat.completions.parse({
  model, messages: [{ role: 'user', content: 'An event' }], max_tokens: 300, seed: 5,
  response_format: zodResponseFormat(Event, 'event'),
});
const ev = parsed.choices[0].message.parsed;
assert.ok(ev && Event.safeParse(ev).success, 'zod parses the answer');
// the grammar extension (llama-server's field)
const gr = await client.completions.create({ model, prompt: 'Digits:', max_tokens: 10, grammar: 'root ::= [0-9]{3} "!"\n' });
assert.match(gr.choices[0].text, /^[0-9]{3}!$/);

// ---- log-probabilities, logit_bias, n ----
const lp = await client.chat.completions.create({ model, messages, max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 3 });
const content = lp.choices[0].logprobs.content;
assert.equal(content.length, lp.usage.completion_tokens);
for (const t of content) {
  assert.ok(t.logprob <= 0 && Array.isArray(t.bytes) && t.top_logprobs.length === 3);
  assert.equal(t.top_logprobs[0].logprob, t.logprob, 'greedy: the token is the most likely');
  assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
}
const lps = await client.chat.completions.create({ model, messages, max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2, stream: true });
const streamedLp = [];
for await (const c of lps) for (const ch of c.choices) if (ch.logprobs?.content) streamedLp.push(...ch.logprobs.content);
assert.deepEqual(streamedLp.map((t) => t.token), content.map((t) => t.token), 'streamed logprobs');
const clp = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 4, temperature: 0, logprobs: 2 });
assert.equal(clp.choices[0].logprobs.tokens.length, 4);
assert.equal(Object.keys(clp.choices[0].logprobs.top_logprobs[0]).length, 2);
const tok = await fetch(process.env.PLUMB_URL + '/tokenize', {
  method: 'POST', headers: { Authorization: `Bearer ${process.env.PLUMB_KEY}`, 'Content-Type': 'application/json' },
  body: JSON.stringify({ model, content: 'hello', with_pieces: true }),
}).then((r) => r.json());
assert.ok(tok.tokens.length > 0 && typeof tok.tokens[0].piece === 'string');
// logit_bias: +100 forces a token, -100 bans one (token ids as /detokenize reads them)
const detok = async (tokens) => (await fetch(process.env.PLUMB_URL + '/detokenize', {
  method: 'POST', headers: { Authorization: `Bearer ${process.env.PLUMB_KEY}` }, body: JSON.stringify({ model, tokens }),
}).then((r) => r.json())).content;
const forced = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 3, temperature: 0, logit_bias: { 500: 100 } });
assert.equal(forced.choices[0].text, await detok([500, 500, 500]), 'logit_bias +100 forces the token');
const ban = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 3, temperature: 0, logit_bias: { 500: -100, 501: 30 } });
assert.equal(ban.choices[0].text, await detok([501, 501, 501]), 'logit_bias -100 bans the token');
const many = await client.chat.completions.create({ model, messages, max_tokens: 6, n: 3, seed: 9 });
assert.deepEqual(many.choices.map((c) => c.index), [0, 1, 2]);
assert.ok(new Set(many.choices.map((c) => c.message.content)).size >= 2, 'n choices differ (seeds one apart)');

// ---- embeddings ----
for (const m of bert ? [model, bert] : [model]) {
  const texts = ['Once upon a time', 'The little dog', 'Lily wanted to'];
  const f = await client.embeddings.create({ model: m, input: texts, encoding_format: 'float' });
  const b = await client.embeddings.create({ model: m, input: texts, encoding_format: 'base64' });
  const d = await client.embeddings.create({ model: m, input: texts }); /* the client asks base64 and decodes it */
  assert.equal(f.data.length, 3);
  assert.ok(f.usage.prompt_tokens > 0);
  for (let i = 0; i < 3; i++) {
    const v = f.data[i].embedding;
    const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0));
    assert.ok(Math.abs(norm - 1) < 1e-4, 'normalized');
    const raw = Buffer.from(b.data[i].embedding, 'base64');
    const f32 = Array.from(new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4));
    assert.deepEqual(f32, v.map((x) => Math.fround(x)), 'base64 = float');
    assert.deepEqual(d.data[i].embedding, f32, 'the client decodes base64');
  }
  if (m === bert && process.env.PLUMB_REFERENCE) {
    const ref = JSON.parse(readFileSync(process.env.PLUMB_REFERENCE, 'utf8')).models['tiny-bert-q8_0'].prompts;
    ['p1', 'p2', 'p3'].forEach((p, i) => {
      const a = f.data[i].embedding, r = ref[p].embedding_mean;
      const cos = a.reduce((s, x, k) => s + x * r[k], 0) / Math.sqrt(a.reduce((s, x) => s + x * x, 0) * r.reduce((s, x) => s + x * x, 0));
      assert.ok(cos >= 0.999, `${p}: cosine ${cos} against llama.cpp`);
    });
  }
}
console.log(`openai client: models, chat (whole, streamed in ${chunks} chunks), completions, JSON mode, errors, tool calls ` +
  `(required, named, parallel, streamed in ${deltas} deltas, results), schemas, zod, grammar, logprobs, logit_bias, n, ` +
  `embeddings (${bert ? 'decoder and bert vs llama.cpp' : 'decoder'}): ok`);
