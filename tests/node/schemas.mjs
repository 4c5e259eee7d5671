// Structured output against 50 JSON Schemas (nested objects, recursion
// through $ref/$defs, enums, consts, patterns, formats, arrays with bounds,
// prefixItems, unions, allOf, integer ranges, additionalProperties) on a
// random-weight model: every answer must end by itself ("stop"), parse as
// JSON and validate with ajv (draft 2020-12, with formats). Run by run.sh.
import OpenAI from 'openai';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import assert from 'node:assert/strict';

const client = new OpenAI({ baseURL: process.env.PLUMB_URL + '/v1', apiKey: process.env.PLUMB_KEY || 'unused', maxRetries: 0 });
const model = process.env.PLUMB_MODEL;
const ajv = new Ajv2020({ strict: false });
addFormats(ajv);

const str = (n = 8) => ({ type: 'string', maxLength: n });
const obj = (properties, required = Object.keys(properties), extra = {}) =>
  ({ type: 'object', properties, required, additionalProperties: false, ...extra });

const schemas = [
  obj({ a: str() }),
  obj({ a: { type: 'integer' }, b: { type: 'number' }, c: { type: 'boolean' }, d: { type: 'null' } }),
  obj({ name: str(), age: { type: 'integer', minimum: 0, maximum: 130 } }, ['name']),
  obj({ x: { type: 'integer', minimum: -50, maximum: -10 }, y: { type: 'integer', exclusiveMinimum: 99, exclusiveMaximum: 1000 } }),
  obj({ colour: { enum: ['red', 'green', 'blue'] }, size: { enum: [1, 2, 3, null] } }),
  obj({ kind: { const: 'point' }, at: obj({ x: { type: 'number' }, y: { type: 'number' } }) }),
  obj({ code: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{2,4}$' } }),
  obj({ plate: { type: 'string', pattern: '^(AB|CD|EF)[0-9]{3}[a-z]?$' } }),
  obj({ hex: { type: 'string', pattern: '^#[0-9a-fA-F]{6}$' }, word: { type: 'string', pattern: '^\\w{1,8}$' } }),
  obj({ when: { type: 'string', format: 'date' }, at: { type: 'string', format: 'date-time' } }),
  obj({ id: { type: 'string', format: 'uuid' }, mail: { type: 'string', format: 'email' } }),
  obj({ ip: { type: 'string', format: 'ipv4' }, t: { type: 'string', format: 'time' } }),
  { type: 'array', items: { type: 'integer' }, minItems: 2, maxItems: 4 },
  { type: 'array', items: str(4), maxItems: 3 },
  { type: 'array', items: obj({ k: str(3), v: { type: 'integer', minimum: 0, maximum: 9 } }), minItems: 1, maxItems: 3 },
  { type: 'array', prefixItems: [{ type: 'boolean' }, str(5), { type: 'integer' }], items: false },
  { type: 'array', prefixItems: [{ const: 'head' }], items: { type: 'integer', minimum: 1, maximum: 5 }, maxItems: 4 },
  obj({ matrix: { type: 'array', items: { type: 'array', items: { type: 'integer' }, minItems: 2, maxItems: 2 }, minItems: 2, maxItems: 2 } }),
  obj({ a: obj({ b: obj({ c: obj({ d: str(4) }) }) }) }),
  obj({ user: obj({ name: str(), email: { type: 'string', format: 'email' } }), roles: { type: 'array', items: { enum: ['admin', 'dev', 'ops'] }, maxItems: 3 } }),
  obj({ v: { type: ['string', 'null'], maxLength: 5 } }),
  obj({ v: { anyOf: [{ type: 'integer' }, str(4), { type: 'null' }] } }),
  obj({ v: { oneOf: [obj({ kind: { const: 'a' }, n: { type: 'integer' } }), obj({ kind: { const: 'b' }, s: str() })] } }),
  { allOf: [obj({ a: { type: 'integer' } }, ['a'], { additionalProperties: true }), { properties: { b: str() }, required: ['b'] }] },
  obj({ tags: { type: 'object', additionalProperties: { type: 'integer', minimum: 0, maximum: 99 } } }),
  obj({ free: { type: 'object', additionalProperties: { type: 'boolean' } } }, []),
  { $defs: { node: obj({ v: { type: 'integer' }, kids: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 } }, ['v']) }, $ref: '#/$defs/node' },
  { $defs: { list: obj({ head: str(3), tail: { anyOf: [{ type: 'null' }, { $ref: '#/$defs/list' }] } }) }, $ref: '#/$defs/list' },
  { $defs: { expr: { anyOf: [{ type: 'integer', minimum: 0, maximum: 9 }, obj({ op: { enum: ['+', '*'] }, args: { type: 'array', items: { $ref: '#/$defs/expr' }, minItems: 2, maxItems: 2 } })] } }, $ref: '#/$defs/expr' },
  { definitions: { item: obj({ sku: { type: 'string', pattern: '^[0-9]{4}$' }, qty: { type: 'integer', minimum: 1, maximum: 20 } }) }, type: 'object', properties: { items: { type: 'array', items: { $ref: '#/definitions/item' }, minItems: 1, maxItems: 3 } }, required: ['items'], additionalProperties: false },
  obj({ n: { type: 'number', minimum: 0 }, i: { type: 'integer', minimum: 1000000 } }),
  obj({ s: { type: 'string', minLength: 2, maxLength: 4 } }),
  obj({ e: { enum: ['quote"d', 'back\\slash', 'tab\tx', 'ünï'] } }),
  obj({ answer: { type: 'boolean' }, reason: str(16) }, ['answer']),
  obj({ a: str(), b: str(), c: str(), d: str(), e: str() }, ['a', 'c', 'e']),
  obj({ list: { type: 'array', items: { anyOf: [{ type: 'integer' }, { type: 'boolean' }] }, maxItems: 5 } }),
  { enum: ['yes', 'no', 'maybe'] },
  { type: 'integer', minimum: 10, maximum: 20 },
  { type: 'string', pattern: '^[a-z]{1,6}( [a-z]{1,6}){0,2}$' },
  { type: 'string', format: 'date' },
  { type: 'boolean' },
  { type: ['integer', 'string'], maxLength: 3 },
  obj({ grid: { type: 'array', prefixItems: [{ type: 'integer' }, { type: 'integer' }], items: false, minItems: 2 } }),
  obj({ meta: obj({ version: { type: 'string', pattern: '^[0-9]\\.[0-9]{1,2}\\.[0-9]{1,2}$' }, stable: { type: 'boolean' } }), deps: { type: 'array', items: obj({ name: str(6), range: { enum: ['^1', '~2', '*'] } }), maxItems: 2 } }),
  { $defs: { dir: obj({ name: str(5), files: { type: 'array', items: str(5), maxItems: 2 }, dirs: { type: 'array', items: { $ref: '#/$defs/dir' }, maxItems: 2 } }, ['name']) }, $ref: '#/$defs/dir' },
  obj({ point: { type: 'array', prefixItems: [{ type: 'number' }, { type: 'number' }, { type: 'number' }], items: false, minItems: 3 } }),
  obj({ status: { enum: ['ok', 'error'] }, code: { type: 'integer', minimum: 100, maximum: 599 }, detail: { type: ['string', 'null'], maxLength: 10 } }),
  { anyOf: [obj({ type: { const: 'circle' }, r: { type: 'number', minimum: 0 } }), obj({ type: { const: 'rect' }, w: { type: 'integer' }, h: { type: 'integer' } })] },
  obj({ when: obj({ date: { type: 'string', format: 'date' }, slots: { type: 'array', items: { type: 'string', format: 'time' }, minItems: 1, maxItems: 2 } }) }),
  obj({ nested: { type: 'array', items: { type: 'array', items: { type: 'array', items: { type: 'boolean' }, maxItems: 2 }, maxItems: 2 }, maxItems: 2 } }),
];
assert.equal(schemas.length, 50, 'fifty schemas');

// four at a time: the server's slots
let failed = 0, tokens = 0;
const t0 = Date.now();
for (let i = 0; i < schemas.length; i += 4) {
  await Promise.all(schemas.slice(i, i + 4).map(async (schema, k) => {
    const n = i + k;
    const r = await client.chat.completions.create({
      model, messages: [{ role: 'user', content: `Answer ${n} as JSON.` }], max_tokens: 1500, seed: 100 + n,
      response_format: { type: 'json_schema', json_schema: { name: `s${n}`, strict: true, schema } },
    });
    const text = r.choices[0].message.content;
    tokens += r.usage.completion_tokens;
    let value, why = null;
    if (r.choices[0].finish_reason !== 'stop') why = `finish_reason ${r.choices[0].finish_reason}`;
    else {
      try { value = JSON.parse(text); } catch (e) { why = `not JSON: ${e.message}`; }
      if (!why && !ajv.validate(schema, value)) why = ajv.errorsText();
    }
    if (why) {
      failed++;
      console.error(`schema ${n}: ${why}\n  schema: ${JSON.stringify(schema)}\n  output: ${text}`);
    }
  }));
}
console.log(`schemas: ${schemas.length - failed}/${schemas.length} outputs parse and validate with ajv ` +
  `(${tokens} tokens in ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
process.exit(failed ? 1 : 0);
