/**
 * MCP tasks (SEP-1686, 2025-11-25) through the gateway, against the real @modelcontextprotocol/server-everything
 * and, for what a task does after its call has ended, the task fixture server (test/fixtures/task-server.ts).
 * Server-side tasks are driven by the official v2 SDK client, which has the task wire vocabulary but no task
 * runtime. Client-side tasks (the server asks the client to run sampling or elicitation as a task, then
 * polls it) need a client that runs tasks: the official v1 SDK client with its in-memory task store.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client as V2Client, SSEClientTransport, type Client } from '@modelcontextprotocol/client';
import { Client as TaskRunningClient } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as V1Transport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { InMemoryTaskStore } from '@modelcontextprotocol/sdk/experimental/tasks';
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';
import { everythingUpstream, startHarness, type Harness } from './gateway-harness.js';

/** The task fixture server, compiled beside this file, and the secret it can be made to put in its progress. */
const taskFixture = new URL('./fixtures/task-server.js', import.meta.url).pathname;
const FIXTURE_SECRET = SAMPLES['github-pat']!(seededRandom(31));

let harness: Harness;
let owner: Client;
let ownerKey: string;
const elicited: Record<string, unknown>[] = [];

const anyResult = z.looseObject({});
const taskShape = z.looseObject({ taskId: z.string(), status: z.string() });
const created = z.looseObject({ task: taskShape });

before(async () => {
  harness = await startHarness({
    gateway: {
      upstreams: {
        everything: everythingUpstream(),
        relay: { command: process.execPath, args: [taskFixture], env: { TASK_FIXTURE_SECRET: FIXTURE_SECRET } },
      },
    },
    policy: {
      mcp: [
        { id: 'everything', allow: { server: 'everything', tools: ['*'] } },
        { id: 'relay', allow: { server: 'relay', tools: ['*'] } },
      ],
    },
  });
  ownerKey = harness.agents.add('tester').key;
  owner = await harness.connect(ownerKey, { capabilities: { elicitation: { form: {} } } });
  owner.setRequestHandler('elicitation/create', async (request) => {
    elicited.push(request.params as Record<string, unknown>);
    return { action: 'accept', content: { interpretation: 'historical' } };
  });
});

after(async () => {
  await harness.close();
});

/** Sends a request the v2 client has no typed method for (task methods, task-augmented calls). */
function send<T extends z.ZodType>(client: Client, method: string, params: Record<string, unknown>, schema: T): Promise<z.infer<T>> {
  return client.request({ method, params } as never, schema) as Promise<z.infer<T>>;
}

function startResearch(client: Client, ambiguous: boolean): Promise<z.infer<typeof created>> {
  return send(client, 'tools/call', { name: 'everything__simulate-research-query', arguments: { topic: 'python', ambiguous }, task: { ttl: 60_000 } }, created);
}

test('offers tasks to clients as far as server-everything supports them', () => {
  const tasks = owner.getServerCapabilities()?.tasks as Record<string, unknown> | undefined;
  assert.deepEqual(tasks, { list: {}, cancel: {}, requests: { tools: { call: {} } } });
});

test('runs simulate-research-query as a task: create, poll, relayed elicitation, result, audit', async () => {
  const { task } = await startResearch(owner, true);
  assert.match(task.taskId, /^task-[A-Za-z0-9_-]{22}$/, 'the client sees an id the gateway made');
  const polled = await send(owner, 'tasks/get', { taskId: task.taskId }, taskShape);
  assert.equal(polled.taskId, task.taskId);
  assert.ok(['working', 'input_required'].includes(polled.status));
  const listed = await send(owner, 'tasks/list', {}, z.looseObject({ tasks: z.array(taskShape) }));
  assert.ok(listed.tasks.some((entry) => entry.taskId === task.taskId));

  // tasks/result waits for the end; the server's clarification request reaches this client meanwhile.
  const result = await send(owner, 'tasks/result', { taskId: task.taskId }, anyResult);
  const text = (result.content as { text: string }[]).map((block) => block.text).join('\n');
  assert.match(text, /Research Report: python \(historical\)/);
  const asked = elicited.at(-1)!;
  const related = (asked._meta as Record<string, { taskId?: string }> | undefined)?.['io.modelcontextprotocol/related-task'];
  assert.equal(related?.taskId, task.taskId, 'the elicitation names the task by the gateway\'s id');

  const records = harness.audit.records.filter((record) => (record.details as { task?: string } | undefined)?.task === task.taskId);
  assert.deepEqual(
    [...new Set(records.map((record) => record.action))].sort(),
    ['tasks/get', 'tasks/result', 'tools/call'],
  );
  for (const record of records) {
    assert.equal(record.principal.agent, 'tester');
    assert.equal(record.resource, 'everything/simulate-research-query');
    assert.equal(record.effect, 'allow');
    assert.deepEqual(record.rules, ['everything']);
  }
});

test('another agent can neither see, get, fetch nor cancel a task, and is told exactly what a missing task gets', async () => {
  const { task } = await startResearch(owner, false);
  const other = await harness.connect(harness.agents.add('intruder').key);
  const failure = async (method: string, taskId: string): Promise<string> => {
    try {
      await send(other, method, { taskId }, anyResult);
    } catch (error) {
      return (error as Error).message.replace(taskId, '<id>');
    }
    return 'succeeded';
  };
  const missing = 'task-AAAAAAAAAAAAAAAAAAAAAA';
  for (const method of ['tasks/get', 'tasks/cancel', 'tasks/result']) {
    const theirs = await failure(method, task.taskId);
    assert.notEqual(theirs, 'succeeded', `${method} on another agent's task`);
    assert.equal(theirs, await failure(method, missing), `${method}: the same error as for a missing task`);
  }
  const listed = await send(other, 'tasks/list', {}, z.looseObject({ tasks: z.array(taskShape) }));
  assert.deepEqual(listed.tasks, []);
  // The owner's task was not cancelled by the attempt.
  assert.notEqual((await send(owner, 'tasks/get', { taskId: task.taskId }, taskShape)).status, 'cancelled');
  const denied = harness.audit.records.filter((record) => record.principal.agent === 'intruder' && record.action.startsWith('tasks/') && record.effect === 'deny');
  assert.ok(denied.length >= 3, 'every refused task operation is recorded');
  // The owner may still cancel it.
  const cancelled = await send(owner, 'tasks/cancel', { taskId: task.taskId }, taskShape);
  assert.equal(cancelled.status, 'cancelled');
});

test('refuses a task request whose _meta carries a secret: it would reach the server with the id', async () => {
  const { task } = await startResearch(owner, false);
  await assert.rejects(send(owner, 'tasks/get', { taskId: task.taskId, _meta: { note: FIXTURE_SECRET } }, taskShape), /the request holds a secret/);
  const record = harness.audit.records.findLast((entry) => entry.action === 'tasks/get');
  assert.equal(record?.effect, 'deny');
  assert.deepEqual(record?.rules, ['dlp']);
  assert.ok(!JSON.stringify(harness.audit.records).includes(FIXTURE_SECRET));
  await send(owner, 'tasks/cancel', { taskId: task.taskId }, taskShape);
});

test('runs a task for an old client on the deprecated HTTP+SSE transport too', async () => {
  const headers = { authorization: `Bearer ${ownerKey}` };
  const old = new V2Client({ name: 'old', version: '1' });
  await old.connect(
    new SSEClientTransport(new URL(harness.gateway.url.replace(/\/mcp$/, '/sse')), {
      requestInit: { headers },
      eventSourceInit: { fetch: (input, init) => fetch(input, { ...init, headers: { ...(init?.headers as Record<string, string>), ...headers } }) },
    }),
  );
  try {
    const { task } = await startResearch(old, false);
    const result = await send(old, 'tasks/result', { taskId: task.taskId }, anyResult);
    assert.match((result.content as { text: string }[])[0]!.text, /Research Report: python/);
  } finally {
    await old.close();
  }
});

/** The official v1 SDK client, which runs sampling and elicitation requests as tasks when asked (`asked` hears each). */
async function taskRunningClient(asked?: () => void): Promise<{ client: TaskRunningClient; store: InMemoryTaskStore; clientTaskIds: string[] }> {
  const clientTaskIds: string[] = [];
  const store = new InMemoryTaskStore();
  const client = new TaskRunningClient(
    { name: 'task-runner', version: '1.0.0' },
    {
      capabilities: {
        sampling: {},
        elicitation: { form: {} },
        tasks: { requests: { sampling: { createMessage: {} }, elicitation: { create: {} } } },
      },
      taskStore: store,
    },
  );
  // Each request becomes a task that finishes a little later, as a person or a model would.
  const runLater = async (extra: { taskStore?: { createTask(options: { ttl?: number }): Promise<{ taskId: string }>; storeTaskResult(id: string, status: 'completed', result: Record<string, unknown>): Promise<void> } }, answer: Record<string, unknown>) => {
    const task = await extra.taskStore!.createTask({ ttl: 60_000 });
    clientTaskIds.push(task.taskId);
    asked?.();
    setTimeout(() => void extra.taskStore!.storeTaskResult(task.taskId, 'completed', answer), 300);
    return { task } as never;
  };
  client.setRequestHandler(CreateMessageRequestSchema, (_request, extra) =>
    runLater(extra as never, { role: 'assistant', content: { type: 'text', text: 'sampled in a client task' }, model: 'test-model' }),
  );
  client.setRequestHandler(ElicitRequestSchema, (_request, extra) => runLater(extra as never, { action: 'accept', content: { name: 'Ada', favoriteColor: 'Blue' } }));
  await client.connect(new V1Transport(new URL(harness.gateway.url), { requestInit: { headers: { authorization: `Bearer ${ownerKey}` } } }));
  return { client, store, clientTaskIds };
}

test('relays client-side tasks: the server\'s sampling and elicitation run as tasks on the calling client and are polled through the gateway', async () => {
  const { client, store, clientTaskIds } = await taskRunningClient();
  try {
    const sampling = await client.callTool({ name: 'everything__trigger-sampling-request-async', arguments: { prompt: 'hi', maxTokens: 5 } });
    const samplingText = (sampling.content as { text: string }[]).map((block) => block.text).join('\n');
    assert.match(samplingText, /\[COMPLETED\] Async sampling completed/);
    assert.match(samplingText, /sampled in a client task/);
    const elicitation = await client.callTool({ name: 'everything__trigger-elicitation-request-async', arguments: {} });
    const elicitationText = (elicitation.content as { text: string }[]).map((block) => block.text).join('\n');
    assert.match(elicitationText, /Name: Ada/);
    assert.match(elicitationText, /Favorite Color: Blue/);
    // The server saw task ids the gateway made, never the client's own.
    assert.equal(clientTaskIds.length, 2);
    const seen = /Task created: (\S+)/.exec(samplingText)?.[1];
    assert.match(seen ?? '', /^task-/);
    assert.ok(!clientTaskIds.includes(seen!));
    // Each client-side task operation is recorded against the call it serves.
    const recorded = harness.audit.records.filter((record) => record.action.startsWith('client.') && record.resource === 'everything/trigger-sampling-request-async');
    assert.deepEqual(
      [...new Set(recorded.map((record) => record.action))].sort(),
      ['client.sampling/createMessage', 'client.tasks/get', 'client.tasks/result'],
    );
    assert.ok(recorded.every((record) => record.principal.agent === 'tester' && record.effect === 'allow' && record.rules[0] === 'everything'));
  } finally {
    store.cleanup(); // its ttl timers would keep the test process alive
    await client.close();
  }
});

test("polls a client's task on the session that runs it while another agent's call to the same server is in flight", async () => {
  const neighbour = await harness.connect(harness.agents.add('neighbour').key);
  let running: Promise<unknown> | undefined;
  // The other call starts as the server asks this client, and runs through the server's polls of its task.
  const { client, store } = await taskRunningClient(() => {
    running ??= neighbour.callTool({ name: 'everything__trigger-long-running-operation', arguments: { duration: 3, steps: 3 } });
  });
  try {
    const elicitation = await client.callTool({ name: 'everything__trigger-elicitation-request-async', arguments: {} });
    const text = (elicitation.content as { text: string }[]).map((block) => block.text).join('\n');
    assert.match(text, /Name: Ada/);
    assert.ok(running, 'the other call ran meanwhile');
    assert.match(((await running) as { content: { text: string }[] }).content[0]!.text, /Long running operation completed/);
  } finally {
    store.cleanup();
    await client.close();
  }
});

test('a client that cannot run tasks answers the server\'s task-augmented sampling at once', async () => {
  const plain = await harness.connect(ownerKey, { capabilities: { sampling: {} } });
  plain.setRequestHandler('sampling/createMessage', async () => ({ role: 'assistant', content: { type: 'text', text: 'answered at once' }, model: 'test-model' }));
  const result = await plain.callTool({ name: 'everything__trigger-sampling-request-async', arguments: { prompt: 'hi', maxTokens: 5 } });
  const text = (result.content as { text: string }[]).map((block) => block.text).join('\n');
  assert.match(text, /\[SYNC\].*answered at once/s);
});

test("tasks/list gathers every page of the server's list (its store pages by 10)", async () => {
  const started = await Promise.all(Array.from({ length: 12 }, () => startResearch(owner, false)));
  const listed = await send(owner, 'tasks/list', {}, z.looseObject({ tasks: z.array(taskShape) }));
  const shown = new Set(listed.tasks.map((entry) => entry.taskId));
  for (const { task } of started) assert.ok(shown.has(task.taskId), `${task.taskId} is listed`);
});

interface Heard {
  method: string;
  params: Record<string, unknown>;
}

/** What a client is told outside its calls (progress, log messages, task status), as it comes. */
function listen(client: Client): { heard: Heard[]; until(wanted: (message: Heard) => boolean): Promise<void> } {
  const heard: Heard[] = [];
  const waiting = new Set<() => void>();
  for (const method of ['notifications/progress', 'notifications/message', 'notifications/tasks/status']) {
    client.setNotificationHandler(method as never, ((notification: { params: Record<string, unknown> }) => {
      heard.push({ method, params: notification.params });
      for (const check of waiting) check();
    }) as never);
  }
  return {
    heard,
    until: (wanted) =>
      new Promise((resolve) => {
        const check = (): void => {
          if (!heard.some(wanted)) return;
          waiting.delete(check);
          resolve();
        };
        waiting.add(check);
        check();
      }),
  };
}

function relatedTask(params: Record<string, unknown>): string | undefined {
  return (params._meta as Record<string, { taskId?: string }> | undefined)?.['io.modelcontextprotocol/related-task']?.taskId;
}

function startCountdown(client: Client, steps: number, progressToken: string, leak = false): Promise<z.infer<typeof created>> {
  return send(client, 'tools/call', { name: 'relay__countdown', arguments: { steps, ...(leak ? { leak } : {}) }, task: { ttl: 60_000 }, _meta: { progressToken } }, created);
}

test("relays a task's progress and log messages after its CreateTaskResult to the session that created it, under its own token, until the task ends", { timeout: 60_000 }, async () => {
  const client = await harness.connect(ownerKey);
  const sibling = await harness.connect(ownerKey);
  const mine = listen(client);
  const theirs = listen(sibling);
  const first = await startCountdown(client, 2, 'first');
  const second = await startCountdown(client, 3, 'second');
  // Each tick moves both on after it has answered: nothing of this client's is in flight when they report.
  await client.callTool({ name: 'relay__tick', arguments: {} });
  await client.callTool({ name: 'relay__tick', arguments: {} });
  // The server reports the second countdown after the first, which ended on this tick and then kept talking.
  await mine.until((message) => message.params.progressToken === 'second' && message.params.progress === 2);

  const about = (taskId: string, method: string): Heard[] => mine.heard.filter((message) => message.method === method && (relatedTask(message.params) ?? message.params.taskId) === taskId);
  const progress = about(first.task.taskId, 'notifications/progress').map((message) => [message.params.progressToken, message.params.progress, message.params.message]);
  assert.deepEqual(progress, [['first', 1, 'step 1'], ['first', 2, 'step 2']], 'the progress of the first task, under its token, and none after it ended');
  assert.deepEqual(about(first.task.taskId, 'notifications/message').map((message) => message.params.data), ['countdown at 1', 'countdown at 2']);
  assert.deepEqual(about(first.task.taskId, 'notifications/tasks/status').map((message) => message.params.status), ['completed']);
  assert.deepEqual(about(second.task.taskId, 'notifications/progress').map((message) => message.params.progress), [1, 2]);
  assert.ok(!JSON.stringify(mine.heard).includes('upstream-'), "the client never sees the server's own task ids");
  assert.deepEqual(theirs.heard, [], 'another session of the same agent is told nothing of these tasks');
  // The task's result is still there for its owner.
  const result = await send(client, 'tasks/result', { taskId: first.task.taskId }, anyResult);
  assert.match((result.content as { text: string }[])[0]!.text, /countdown of 2 completed/);
});

test("withholds a task's progress that carries a secret, and records that it did", { timeout: 60_000 }, async () => {
  const client = await harness.connect(ownerKey);
  const heard = listen(client);
  const { task } = await startCountdown(client, 1, 'leaky', true);
  await client.callTool({ name: 'relay__tick', arguments: {} });
  await heard.until((message) => message.method === 'notifications/tasks/status' && message.params.taskId === task.taskId);
  assert.ok(!JSON.stringify(heard.heard).includes(FIXTURE_SECRET), 'the secret never reached the client');
  assert.deepEqual(heard.heard.filter((message) => message.params.progressToken === 'leaky'), []);
  const withheld = harness.audit.records.find((record) => record.action === 'upstream.relay-refused' && record.details?.task === task.taskId);
  assert.equal(withheld?.effect, 'deny');
  assert.match(withheld?.reason ?? '', /notifications\/progress/);
});

test("records only the first of a task's many withheld progress messages", { timeout: 60_000 }, async () => {
  const client = await harness.connect(ownerKey);
  const heard = listen(client);
  const { task } = await startCountdown(client, 14, 'flood', true);
  for (let step = 0; step < 14; step += 1) await client.callTool({ name: 'relay__tick', arguments: {} });
  await heard.until((message) => message.method === 'notifications/tasks/status' && message.params.taskId === task.taskId);
  assert.ok(!JSON.stringify(heard.heard).includes(FIXTURE_SECRET), 'the secret never reached the client');
  const withheld = harness.audit.records.filter((record) => record.action === 'upstream.relay-refused' && record.details?.task === task.taskId);
  assert.equal(withheld.length, 11, 'ten, then one saying the rest go unrecorded');
  assert.match(withheld.at(-1)!.reason, /not recorded one by one/);
});

test("withholds from the client a task's question that carries a secret, asked while it fetches the task's result", { timeout: 60_000 }, async () => {
  const client = await harness.connect(ownerKey, { capabilities: { elicitation: { form: {} } } });
  const asked: Record<string, unknown>[] = [];
  client.setRequestHandler('elicitation/create', async (request) => {
    asked.push(request.params as Record<string, unknown>);
    return { action: 'accept', content: {} };
  });
  const plain = await send(client, 'tools/call', { name: 'relay__countdown', arguments: { steps: 5, confirm: true }, task: { ttl: 60_000 } }, created);
  const answered = await send(client, 'tasks/result', { taskId: plain.task.taskId }, anyResult);
  assert.match((answered.content as { text: string }[])[0]!.text, /completed; confirmed: accept$/);
  assert.equal(asked.length, 1, 'a question without a secret reaches the client');

  const leaky = await send(client, 'tools/call', { name: 'relay__countdown', arguments: { steps: 5, confirm: true, leak: true }, task: { ttl: 60_000 } }, created);
  const withheld = await send(client, 'tasks/result', { taskId: leaky.task.taskId }, anyResult);
  assert.match((withheld.content as { text: string }[])[0]!.text, /completed; not confirmed: .*Withheld by Gatehouse/);
  assert.equal(asked.length, 1, 'the question with the secret never reached the client');
  const record = harness.audit.records.find((entry) => entry.action === 'tools/call.server-question' && entry.resource === 'relay/countdown');
  assert.equal(record?.effect, 'deny');
  assert.equal(record?.principal.agent, 'tester');
});

test('polls a task the client runs for the server after the call that asked has ended, on that client alone', { timeout: 60_000 }, async () => {
  const { client, store, clientTaskIds } = await taskRunningClient();
  const bystander = await harness.connect(harness.agents.add('bystander').key);
  try {
    const asked = await client.callTool({ name: 'relay__ask-later', arguments: {} });
    assert.match((asked.content as { text: string }[])[0]!.text, /^asked; the client runs task task-/);
    assert.equal(clientTaskIds.length, 1);
    // The server polls the client's task on its own, outside any call of that client, while another agent's
    // call waits for the outcome.
    const outcome = await bystander.callTool({ name: 'relay__asked', arguments: {} });
    assert.match((outcome.content as { text: string }[])[0]!.text, /^polled: working, completed; result: \{"name":"Ada","favoriteColor":"Blue"\}$/);
    const recorded = harness.audit.records.filter((record) => record.action.startsWith('client.') && record.resource === 'relay/ask-later');
    assert.deepEqual([...new Set(recorded.map((record) => record.action))].sort(), ['client.elicitation/create', 'client.tasks/get', 'client.tasks/result']);
    assert.ok(recorded.every((record) => record.principal.agent === 'tester' && record.effect === 'allow'), 'recorded as the asking client\'s');
  } finally {
    store.cleanup();
    await client.close();
  }
});

test("keeps at most 1000 tasks per agent: past that the agent's oldest are forgotten, so no agent grows the table without bound", { timeout: 120_000 }, async () => {
  const client = await harness.connect(harness.agents.add('prolific').key);
  const batches: string[][] = [];
  for (let batch = 0; batch < 11; batch += 1) {
    const started = await Promise.all(Array.from({ length: 100 }, (_, i) => startCountdown(client, 1, `prolific-${batch}-${i}`)));
    batches.push(started.map((entry) => entry.task.taskId));
  }
  for (const taskId of [batches[0]![0]!, batches[0]![99]!]) await assert.rejects(send(client, 'tasks/get', { taskId }, taskShape), /Task not found/);
  const newest = batches[10]![99]!;
  assert.equal((await send(client, 'tasks/get', { taskId: newest }, taskShape)).taskId, newest);
});
