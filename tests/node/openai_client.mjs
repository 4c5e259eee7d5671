// The official openai npm client against plumb serve: model listing, chat
// completions whole and streamed, completions, and an error. Run by
// run.sh with PLUMB_URL set; exits non-zero on the first failed check.
import OpenAI from 'openai';
import assert from 'node:assert/strict';

const client = new OpenAI({
  baseURL: process.env.PLUMB_URL + '/v1',
  apiKey: process.env.PLUMB_KEY || 'unused',
  maxRetries: 0,
});
const model = process.env.PLUMB_MODEL;

const models = await client.models.list();
const ids = [];
for await (const m of models) ids.push(m.id);
assert.deepEqual(ids, [model], 'models.list');
const one = await client.models.retrieve(model);
assert.equal(one.id, model);

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
const nomodel = await client.chat.completions.create({ messages, max_tokens: 4, temperature: 0 });
assert.equal(nomodel.model, model);

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
console.log(`openai client: models, chat (whole, streamed in ${chunks} chunks), completions, JSON mode, errors: ok`);
