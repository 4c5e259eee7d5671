// plumb service k8s's manifests against the Kubernetes schemas
// (kubernetes-models: the OpenAPI schemas of the Kubernetes API as JSON
// Schema validators), with no field the schemas do not know (from the
// package's type declarations, which list every field), and the values
// that matter. Run by tests/k8s/run.sh with the files it made.
//
// Usage: node validate.mjs WORK_DIR
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import assert from "node:assert/strict";
import YAML from "yaml";
import { ConfigMap, Secret, Service } from "kubernetes-models/v1";
import { StatefulSet } from "kubernetes-models/apps/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";

const work = process.argv[2];
const require = createRequire(import.meta.url);
const pkgDir = path.dirname(require.resolve("kubernetes-models/package.json"));
const modulesDir = path.dirname(pkgDir);
const facts = JSON.parse(fs.readFileSync(path.join(work, "facts.json"), "utf8"));

const classes = {
  "v1/ConfigMap": [ConfigMap, "v1/ConfigMap"],
  "v1/Secret": [Secret, "v1/Secret"],
  "v1/Service": [Service, "v1/Service"],
  "apps/v1/StatefulSet": [StatefulSet, "apps/v1/StatefulSet"],
  "policy/v1/PodDisruptionBudget": [PodDisruptionBudget, "policy/v1/PodDisruptionBudget"],
  "autoscaling/v2/HorizontalPodAutoscaler": [HorizontalPodAutoscaler, "autoscaling/v2/HorizontalPodAutoscaler"],
};

// ---- every field known: the interfaces of the .d.ts files ----
// A type: {k: "obj", props}, {k: "map", value}, {k: "arr", elem},
// {k: "ref", name}, {k: "union", alts} or {k: "prim"}.
function parseType(src, at) {
  const alts = [];
  for (;;) {
    let t;
    [t, at] = parseOne(src, at);
    alts.push(t);
    const m = /^\s*\|/.exec(src.slice(at));
    if (!m) break;
    at += m[0].length;
  }
  return [alts.length === 1 ? alts[0] : { k: "union", alts }, at];
}

function parseOne(src, at) {
  const rest = src.slice(at);
  let m;
  if ((m = /^\s*\{\s*\[key: string\]:/.exec(rest))) {
    let value;
    [value, at] = parseType(src, at + m[0].length);
    m = /^\s*;?\s*\}/.exec(src.slice(at));
    if (!m) throw new Error("map type not closed at " + at);
    return [{ k: "map", value }, at + m[0].length];
  }
  if ((m = /^\s*\{/.exec(rest))) return parseObject(src, at + m[0].length);
  if ((m = /^\s*Array<\s*/.exec(rest))) {
    let elem;
    [elem, at] = parseType(src, at + m[0].length);
    m = /^\s*>/.exec(src.slice(at));
    if (!m) throw new Error("Array<> not closed at " + at);
    return [{ k: "arr", elem }, at + m[0].length];
  }
  if ((m = /^\s*"[^"]*"/.exec(rest))) return [{ k: "prim" }, at + m[0].length];
  if ((m = /^\s*([A-Za-z_][A-Za-z0-9_]*)/.exec(rest))) {
    const name = m[1];
    const prim = ["string", "number", "boolean", "any", "unknown", "object", "null"].includes(name);
    return [prim ? { k: "prim" } : { k: "ref", name }, at + m[0].length];
  }
  throw new Error("cannot read a type at: " + rest.slice(0, 60));
}

// at: just after "{"
function parseObject(src, at) {
  const props = {};
  for (;;) {
    const rest = src.slice(at);
    let m = /^\s*\}/.exec(rest);
    if (m) return [{ k: "obj", props }, at + m[0].length];
    m = /^\s*"([^"]+)"\??:\s*/.exec(rest);
    if (!m) throw new Error("cannot read a field at: " + rest.slice(0, 60));
    let t;
    [t, at] = parseType(src, at + m[0].length);
    props[m[1]] = t;
    m = /^\s*;/.exec(src.slice(at));
    if (m) at += m[0].length;
  }
}

const cache = new Map();
// The interface declared in file, with its imports; null for a type alias.
function load(file) {
  if (cache.has(file)) return cache.get(file);
  const src = fs.readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
  const imports = {};
  for (const m of src.matchAll(/import \{ ([^}]+) \} from "([^"]+)";/g))
    for (const n of m[1].split(",")) imports[n.trim()] = m[2];
  const start = src.indexOf("export interface ");
  let entry = null;
  if (start >= 0) {
    const [type] = parseObject(src, src.indexOf("{", start) + 1);
    entry = { type, imports, dir: path.dirname(file) };
  }
  cache.set(file, entry);
  return entry;
}

function resolveRef(name, ctx) {
  const spec = ctx.imports[name];
  if (!spec) return null; // a type alias of this file (string | number ...)
  const base = spec.startsWith(".") ? path.resolve(ctx.dir, spec) : path.join(modulesDir, spec);
  const file = base + ".d.ts";
  return fs.existsSync(file) ? load(file) : null;
}

function check(value, type, ctx, where, errors) {
  if (value === null || typeof value !== "object") return;
  switch (type.k) {
    case "obj":
      if (Array.isArray(value)) return;
      for (const [key, v] of Object.entries(value)) {
        if (!(key in type.props)) errors.push(`${where}.${key}: a field the schema does not have`);
        else check(v, type.props[key], ctx, `${where}.${key}`, errors);
      }
      return;
    case "map":
      for (const [key, v] of Object.entries(value)) check(v, type.value, ctx, `${where}.${key}`, errors);
      return;
    case "arr":
      if (Array.isArray(value)) value.forEach((v, i) => check(v, type.elem, ctx, `${where}[${i}]`, errors));
      return;
    case "ref": {
      const target = resolveRef(type.name, ctx);
      if (target) check(value, target.type, target, where, errors);
      return;
    }
    case "union": {
      const structured = type.alts.filter((a) => a.k !== "prim");
      if (structured.length === 1) check(value, structured[0], ctx, where, errors);
      return;
    }
  }
}

function strict(obj, decl) {
  const entry = load(path.join(pkgDir, decl + ".d.ts"));
  assert.ok(entry, "no declaration for " + decl);
  const errors = [];
  check(obj, entry.type, entry, obj.kind, errors);
  return errors;
}

// ---- one rendering: schemas, fields, and the YAML against the JSON ----
function validate(yamlFile, jsonFile) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(yamlFile, "utf8"));
  for (const d of docs) if (d.errors.length) throw new Error(`${yamlFile}: ${d.errors[0].message}`);
  const objs = docs.map((d) => d.toJS()).filter((o) => o !== null);
  const list = JSON.parse(fs.readFileSync(jsonFile, "utf8"));
  assert.equal(list.kind, "List");
  assert.deepEqual(objs, list.items, `${yamlFile}: the YAML does not read as the JSON rendering`);
  for (const o of objs) {
    const key = `${o.apiVersion}/${o.kind}`;
    const c = classes[key];
    assert.ok(c, `${yamlFile}: unexpected object ${key}`);
    try {
      new c[0](o).validate();
    } catch (e) {
      throw new Error(`${yamlFile}: ${key} ${o.metadata.name} does not validate: ${e.message}`);
    }
    const errors = strict(o, c[1]);
    assert.deepEqual(errors, [], `${yamlFile}: ${key}: unknown fields`);
  }
  return objs;
}

const byKind = (objs, kind) => objs.filter((o) => o.kind === kind);
const one = (objs, kind) => {
  const l = byKind(objs, kind);
  assert.equal(l.length, 1, `one ${kind}`);
  return l[0];
};
const mib = (bytes) => `${Math.ceil(bytes / 1048576)}Mi`;

// ---- the full rendering: keys in a Secret, an autoscaler ----
{
  const objs = validate(path.join(work, "full.yaml"), path.join(work, "full.json"));
  assert.deepEqual(objs.map((o) => o.kind), ["ConfigMap", "Secret", "Service", "StatefulSet", "PodDisruptionBudget",
    "HorizontalPodAutoscaler"]);
  for (const o of objs) assert.equal(o.metadata.namespace, "models");
  const sts = one(objs, "StatefulSet");
  const pod = sts.spec.template.spec;
  const labels = sts.spec.template.metadata.labels;
  assert.equal(sts.spec.replicas, 3);
  assert.deepEqual(sts.spec.selector.matchLabels, labels);
  const c = pod.containers[0];
  assert.equal(pod.containers.length, 1);
  assert.equal(c.image, `localhost/plumb:${facts.version}`, "the image make image builds, by default");
  const port = c.ports.find((p) => p.name === "http");
  assert.equal(port.containerPort, 8080);
  // probes: readiness on /ready, liveness and startup on /health, on the served port
  assert.deepEqual([c.readinessProbe.httpGet.path, c.readinessProbe.httpGet.port], ["/ready", "http"]);
  assert.deepEqual([c.livenessProbe.httpGet.path, c.livenessProbe.httpGet.port], ["/health", "http"]);
  assert.deepEqual([c.startupProbe.httpGet.path, c.startupProbe.httpGet.port], ["/health", "http"]);
  // the drain: a pause, then SIGTERM's drain of drain_timeout (20) within the grace period
  assert.equal(c.lifecycle.preStop.sleep.seconds, 7);
  assert.equal(pod.terminationGracePeriodSeconds, 7 + 20 + 5);
  // resources: the memory estimate (two models, as plumb show estimates one), the CPUs
  const est = 2 * facts.memory_total_bytes;
  assert.equal(c.resources.requests.memory, mib(est));
  assert.equal(c.resources.limits.memory, mib(est + Math.floor(est / 5)));
  assert.equal(c.resources.requests.cpu, "3");
  assert.equal(c.resources.limits.cpu, "3");
  // the pulls: one per distinct model, from the mirror, pinned, kept across restarts
  assert.equal(pod.initContainers.length, 1);
  assert.deepEqual(pod.initContainers[0].args, ["pull",
    `http://mirror.example:8080/plumb/blobs/sha256-${facts.digest}`, "--sha256", facts.digest, "--name", "tiny:1",
    "--if-absent"]);
  const storeMount = (ctr) => ctr.volumeMounts.find((m) => m.name === "store").mountPath;
  assert.equal(storeMount(pod.initContainers[0]), "/var/lib/plumb");
  assert.equal(storeMount(c), "/var/lib/plumb");
  const claim = sts.spec.volumeClaimTemplates[0];
  assert.equal(claim.metadata.name, "store");
  assert.equal(claim.spec.storageClassName, "fast");
  assert.equal(claim.spec.resources.requests.storage, "2Gi");
  // the configuration and the keys where the arguments say
  const cm = one(objs, "ConfigMap");
  const cfgArg = c.args[c.args.indexOf("--config") + 1];
  const cfgMount = c.volumeMounts.find((m) => m.name === "config");
  assert.equal(path.dirname(cfgArg), cfgMount.mountPath);
  assert.equal(pod.volumes.find((v) => v.name === "config").configMap.name, cm.metadata.name);
  const ini = cm.data[path.basename(cfgArg)];
  for (const line of ["host = 0.0.0.0", "port = 8080", "api_key_file = /etc/plumb/keys/keys", "store = /var/lib/plumb",
    "threads = 3", "drain_timeout = 20", "insecure = no", "[model a]", "[model b]", "source = tiny:1"])
    assert.ok(ini.split("\n").includes(line), `plumb.ini has '${line}'`);
  assert.ok(!/^pid_file/m.test(ini), "no pid file in a pod");
  // the models stay within the pod's memory request, not the node's free memory
  assert.ok(ini.split("\n").includes(`memory_limit = ${2 * facts.memory_total_bytes}`), "memory_limit is the request");
  fs.writeFileSync(path.join(work, "pod.ini"), ini);
  const secret = one(objs, "Secret");
  assert.equal(secret.stringData.keys, fs.readFileSync(path.join(work, "keys"), "utf8"));
  assert.equal(pod.volumes.find((v) => v.name === "keys").secret.secretName, secret.metadata.name);
  assert.equal(c.volumeMounts.find((m) => m.name === "keys").mountPath, "/etc/plumb/keys");
  assert.deepEqual(c.args.slice(-2), ["--instance-id", "$(POD_NAME)"]);
  assert.equal(c.env.find((e) => e.name === "POD_NAME").valueFrom.fieldRef.fieldPath, "metadata.name");
  // scraping, the service, the budget, the autoscaler
  const ann = sts.spec.template.metadata.annotations;
  assert.deepEqual([ann["prometheus.io/scrape"], ann["prometheus.io/port"], ann["prometheus.io/path"]],
    ["true", "8080", "/metrics"]);
  const svc = one(objs, "Service");
  assert.deepEqual(svc.spec.selector, labels);
  assert.deepEqual([svc.spec.ports[0].port, svc.spec.ports[0].targetPort], [8080, "http"]);
  const pdb = one(objs, "PodDisruptionBudget");
  assert.equal(pdb.spec.maxUnavailable, 1);
  assert.deepEqual(pdb.spec.selector.matchLabels, labels);
  const hpa = one(objs, "HorizontalPodAutoscaler");
  assert.deepEqual([hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name], ["StatefulSet", sts.metadata.name]);
  assert.deepEqual([hpa.spec.minReplicas, hpa.spec.maxReplicas], [2, 6]);
  assert.equal(hpa.spec.metrics[0].resource.target.averageUtilization, 60);
  // no root, no privileges
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(pod.securityContext.runAsUser, 10001);
  for (const ctr of [c, ...pod.initContainers]) {
    assert.equal(ctr.securityContext.allowPrivilegeEscalation, false);
    assert.equal(ctr.securityContext.readOnlyRootFilesystem, true);
  }
}

// ---- keys from an existing secret; no autoscaler ----
{
  const objs = validate(path.join(work, "secret.yaml"), path.join(work, "secret.json"));
  assert.equal(byKind(objs, "Secret").length, 0);
  assert.equal(byKind(objs, "HorizontalPodAutoscaler").length, 0);
  const pod = one(objs, "StatefulSet").spec.template.spec;
  assert.equal(pod.volumes.find((v) => v.name === "keys").secret.secretName, "team-keys");
  assert.equal(one(objs, "StatefulSet").metadata.name, "llm");
  assert.equal(pod.containers[0].image, "registry.example:5000/ai/plumb:1.2@sha256:" + "a".repeat(64));
}

// ---- without keys (insecure = yes): no key volume at all ----
{
  const objs = validate(path.join(work, "open.yaml"), path.join(work, "open.json"));
  assert.equal(byKind(objs, "Secret").length, 0);
  const pod = one(objs, "StatefulSet").spec.template.spec;
  assert.equal(pod.volumes.find((v) => v.name === "keys"), undefined);
  assert.ok(one(objs, "ConfigMap").data["plumb.ini"].includes("insecure = yes"));
  assert.equal(pod.containers[0].resources.requests.memory, mib(facts.memory_total_bytes));
}

// ---- the checks themselves catch what they are for ----
{
  const objs = validate(path.join(work, "open.yaml"), path.join(work, "open.json"));
  const sts = structuredClone(one(objs, "StatefulSet"));
  sts.spec.template.spec.containers[0].readinessProbe.initialDelaySecond = 3;
  sts.spec.template.spec.bogus = true;
  assert.deepEqual(strict(sts, "apps/v1/StatefulSet"), [
    "StatefulSet.spec.template.spec.containers[0].readinessProbe.initialDelaySecond: a field the schema does not have",
    "StatefulSet.spec.template.spec.bogus: a field the schema does not have"]);
  const bad = structuredClone(one(objs, "StatefulSet"));
  bad.spec.replicas = "3";
  assert.throws(() => new StatefulSet(bad).validate());
}

console.log("kubernetes manifests: every object valid against the schemas of kubernetes-models, no unknown field, " +
  "the values that matter as expected");
