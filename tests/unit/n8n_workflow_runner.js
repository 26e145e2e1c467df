// Runs one of docs/n8n's workflow files the way n8n 1.123 runs it, for the node types those files
// use, so that a unit test can follow a request from the Webhook node to the answer without an
// n8n: Code nodes run their JavaScript, Switch/Respond/HTTP parameters are evaluated as n8n
// expressions ({{ ... }} is JavaScript; n8n's .base64Decode() string extension is provided), the
// Crypto node computes its HMAC with Node's crypto exactly as n8n-nodes-base does, Remove
// Duplicates keeps a history shared by the workflow-scoped nodes (check-and-record, one output,
// "Always Output Data" emitting one empty item, an error once the history is full), and HTTP
// Request nodes answer from the scenario's stubs. Branches run top first (execution order v1).
// Behaviour this copies was observed on a local n8n 1.123.81 (docs/n8n/README.md).
//
// stdin:  {"workflow": {...}, "env": {...}, "requests": [{"headers": {}, "raw": "...",
//          "executionId": "1", "stubs": {"<HTTP node>": [{"statusCode", "headers", "body"} |
//          {"error": "message"}]}}]}
// stdout: [{"response": {"status", "headers", "body"} | null, "failed": "message" | null,
//           "ran": ["node", ...], "calls": [{"node", "method", "url", "headers", "body"}], "items": {...}}]
'use strict';
const crypto = require('crypto');

// n8n's string extension (js-base64's fromBase64): base64 to a UTF-8 string.
Object.defineProperty(String.prototype, 'base64Decode', {
  value: function base64Decode() {
    return Buffer.from(String(this), 'base64').toString('utf8');
  },
});

const HISTORY_FULL =
  'The number of items to be processed exceeds the maximum history size. Please increase the history size or reduce the number of items to be processed.';

function nodeProxy(state) {
  return (name) => {
    const runs = state.outputs[name] || [];
    const latest = runs.length ? runs[runs.length - 1] : [];
    const branch = (i) => (latest[i] || []).map((json) => ({ json }));
    return {
      isExecuted: runs.length > 0,
      first: () => branch(0)[0],
      last: () => branch(0)[branch(0).length - 1],
      all: (i = 0) => branch(i),
      get item() {
        return branch(0)[0];
      },
    };
  };
}

function scope(state, json, extra) {
  return Object.assign(
    {
      $json: json,
      $env: state.env,
      $execution: { id: state.executionId },
      $: nodeProxy(state),
      $input: { first: () => ({ json }), all: () => [{ json }], item: { json } },
    },
    extra || {},
  );
}

function evalJs(expr, vars) {
  const names = Object.keys(vars);
  return new Function(...names, `return (${expr});`)(...names.map((n) => vars[n]));
}

// An n8n parameter: a literal, "={{ expr }}" (the expression's value), or "=text {{ expr }} text".
function evaluate(value, vars) {
  if (typeof value !== 'string' || !value.startsWith('=')) return value;
  const body = value.slice(1);
  const whole = /^\s*\{\{([\s\S]*?)\}\}\s*$/.exec(body);
  if (whole && body.indexOf('{{') === body.lastIndexOf('{{')) return evalJs(whole[1], vars);
  return body.replace(/\{\{([\s\S]*?)\}\}/g, (_, expr) => {
    const v = evalJs(expr, vars);
    return v === undefined || v === null ? '' : String(v);
  });
}

async function runCode(node, state, items) {
  const p = node.parameters;
  const mode = p.mode || 'runOnceForAllItems';
  const runIndex = (state.outputs[node.name] || []).length;
  const helpers = {
    getBinaryDataBuffer: async () => {
      if (state.raw === null) throw new Error('no binary data');
      return Buffer.from(state.raw, 'utf8');
    },
  };
  const call = async (json, itemIndex) => {
    const vars = scope(state, json, {
      $runIndex: runIndex,
      $itemIndex: itemIndex,
      $input: { first: () => items[0], all: () => items, item: { json } },
      require,
      Buffer,
    });
    const names = Object.keys(vars);
    const fn = new Function(...names, `return (async function () {\n${p.jsCode}\n}).call(this);`);
    return fn.call({ helpers }, ...names.map((n) => vars[n]));
  };
  if (mode === 'runOnceForEachItem') {
    const out = [];
    for (let i = 0; i < items.length; i++) {
      const r = await call(items[i].json, i);
      out.push((r && r.json) || r);
    }
    return [out];
  }
  const r = await call(items[0] ? items[0].json : {}, 0);
  return [(r || []).map((x) => x.json)];
}

function removeDuplicates(node, state, items) {
  const p = node.parameters;
  const opts = p.options || {};
  if ((opts.scope || 'node') !== 'workflow') throw new Error(`${node.name}: the runner models workflow scope only`);
  if (p.operation === 'clearDeduplicationHistory') {
    state.history.length = 0;
    return [items.map((i) => i.json)];
  }
  if (p.operation !== 'removeItemsSeenInPreviousExecutions') throw new Error(`${node.name}: unmodelled operation`);
  const max = Number(opts.historySize || 10000);
  if (state.history.length + items.length > max) throw new Error(HISTORY_FULL);
  const kept = [];
  items.forEach((item, i) => {
    const key = String(evaluate(p.dedupeValue, scope(state, item.json, { $itemIndex: i })) ?? '');
    if (!state.history.includes(key)) {
      state.history.push(key);
      kept.push(item.json);
    }
  });
  return [kept];
}

function httpRequest(node, state, items, request) {
  const p = node.parameters;
  const vars = scope(state, items[0].json);
  const headers = {};
  for (const h of ((p.headerParameters || {}).parameters || [])) headers[h.name] = evaluate(h.value, vars);
  const body = p.specifyBody === 'json' ? evaluate(p.jsonBody, vars) : evaluate(p.body, vars);
  request.calls.push({ node: node.name, method: p.method, url: evaluate(p.url, vars), headers, body });
  const stubs = request.stubs[node.name] || [];
  const answer = stubs.length ? stubs.shift() : { error: `no stub for ${node.name}` };
  if (answer.error) throw Object.assign(new Error(answer.error), { http: true });
  const full = { body: answer.body, headers: answer.headers || {}, statusCode: answer.statusCode };
  const opts = (((p.options || {}).response || {}).response) || {};
  if (!opts.neverError && (answer.statusCode < 200 || answer.statusCode >= 300)) {
    throw new Error(`Request failed with status code ${answer.statusCode}`);
  }
  return [[opts.fullResponse ? full : answer.body]];
}

function cryptoNode(node, state, items) {
  const p = node.parameters;
  if (p.action !== 'hmac') throw new Error(`${node.name}: unmodelled action`);
  return [
    items.map((item) => {
      const vars = scope(state, item.json);
      const hmac = crypto.createHmac(p.type, evaluate(p.secret, vars));
      const digest = hmac.update(evaluate(p.value, vars)).digest(p.encoding);
      return Object.assign({}, item.json, { [p.dataPropertyName]: digest });
    }),
  ];
}

function respond(node, state, items, request) {
  const p = node.parameters;
  const vars = scope(state, (items[0] || { json: {} }).json);
  const opts = p.options || {};
  const headers = {};
  for (const h of ((opts.responseHeaders || {}).entries || [])) headers[h.name.toLowerCase()] = String(evaluate(h.value, vars));
  const answer = {
    node: node.name,
    status: Number(evaluate(opts.responseCode === undefined ? 200 : opts.responseCode, vars)),
    headers,
    body: p.respondWith === 'json' ? JSON.parse(evaluate(p.responseBody, vars)) : evaluate(p.responseBody, vars),
  };
  if (request.response === null) request.response = answer;
  else request.ignoredResponses.push(answer.node);
  return [items.map((i) => i.json)];
}

async function execute(node, state, items, request) {
  switch (node.type) {
    case 'n8n-nodes-base.code':
      return runCode(node, state, items);
    case 'n8n-nodes-base.switch': {
      const p = node.parameters;
      if (p.mode !== 'expression') throw new Error(`${node.name}: the runner models expression mode only`);
      const outs = Array.from({ length: p.numberOutputs }, () => []);
      items.forEach((item, i) => {
        const index = evaluate(p.output, scope(state, item.json, { $itemIndex: i }));
        if (!Number.isInteger(index) || index < 0 || index >= outs.length) {
          throw new Error(`${node.name}: output index ${index} out of range`);
        }
        outs[index].push(item.json);
      });
      return outs;
    }
    case 'n8n-nodes-base.removeDuplicates':
      return removeDuplicates(node, state, items);
    case 'n8n-nodes-base.httpRequest':
      return httpRequest(node, state, items, request);
    case 'n8n-nodes-base.crypto':
      return cryptoNode(node, state, items);
    case 'n8n-nodes-base.respondToWebhook':
      return respond(node, state, items, request);
    case 'n8n-nodes-base.stopAndError':
      throw new Error(String(evaluate(node.parameters.errorMessage, scope(state, items[0].json))));
    default:
      throw new Error(`${node.name}: unmodelled node type ${node.type}`);
  }
}

// A failed node's item: an HTTP Request node keeps the input item and adds the error as an
// object; the other nodes put out the error message alone.
function failedItem(item, e) {
  if (e.http) return Object.assign({}, item.json, { error: { message: e.message, name: 'Error' } });
  return { error: e.message };
}

async function runRequest(workflow, env, history, request) {
  const nodes = Object.fromEntries(workflow.nodes.map((n) => [n.name, n]));
  const webhook = workflow.nodes.find((n) => n.type === 'n8n-nodes-base.webhook');
  const result = { response: null, failed: null, ran: [], calls: [], ignoredResponses: [], items: {} };
  const req = Object.assign({ stubs: {} }, request, result);
  const state = { env, history, outputs: {}, executionId: String(request.executionId || '1'), raw: request.raw ?? null };
  let body = {};
  try {
    body = request.raw ? JSON.parse(request.raw) : request.body || {};
  } catch (e) {
    body = {};
  }
  const headers = Object.fromEntries(Object.entries(request.headers || {}).map(([k, v]) => [k.toLowerCase(), v]));
  state.outputs[webhook.name] = [[[{ headers, params: {}, query: {}, body }]]];
  req.ran.push(webhook.name);
  const wp = webhook.parameters;
  if (wp.responseMode === 'onReceived' || wp.responseMode === undefined) {
    req.response = { node: webhook.name, status: 200, headers: {}, body: { message: 'Workflow was started' } };
  }
  const byPosition = (a, b) => a.node.position[1] - b.node.position[1] || a.node.position[0] - b.node.position[0];
  const children = (name, outputs) => {
    const out = [];
    ((workflow.connections[name] || {}).main || []).forEach((targets, index) => {
      const items = (outputs[index] || []).map((json) => ({ json }));
      if (!items.length) return;
      for (const t of targets || []) out.push({ node: nodes[t.node], items });
    });
    return out.sort(byPosition);
  };
  const stack = children(webhook.name, state.outputs[webhook.name][0]).reverse();
  try {
    while (stack.length) {
      const { node, items } = stack.pop();
      req.ran.push(node.name);
      let outputs;
      try {
        outputs = await execute(node, state, items, req);
        if (node.alwaysOutputData && !(outputs[0] || []).length) outputs[0] = [{}];
      } catch (e) {
        if (node.onError === 'continueErrorOutput') {
          const n = node.type === 'n8n-nodes-base.switch' ? node.parameters.numberOutputs : 1;
          outputs = Array.from({ length: n }, () => []);
          if (node.alwaysOutputData) outputs[0] = [{}];
          outputs.push(items.map((item) => failedItem(item, e)));
        } else if (node.onError === 'continueRegularOutput') {
          outputs = [items.map((item) => failedItem(item, e))];
        } else {
          throw Object.assign(e, { node: node.name });
        }
      }
      (state.outputs[node.name] = state.outputs[node.name] || []).push(outputs);
      req.items[node.name] = outputs;
      stack.push(...children(node.name, outputs).reverse());
    }
  } catch (e) {
    req.failed = `${e.node}: ${e.message}`;
    // n8n 1.123 answers a failed execution in responseNode mode with 200 and an empty body.
    if (req.response === null) req.response = { node: null, status: 200, headers: {}, body: '' };
  }
  return {
    response: req.response,
    failed: req.failed,
    ran: req.ran,
    calls: req.calls,
    ignoredResponses: req.ignoredResponses,
    items: req.items,
  };
}

async function main() {
  const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const history = [];
  const results = [];
  for (const request of input.requests) {
    results.push(await runRequest(input.workflow, input.env || {}, history, request));
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e));
  process.exit(1);
});
