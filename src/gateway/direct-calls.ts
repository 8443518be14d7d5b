/**
 * tools/call and tools/list on a 2025-era session, served without the SDK server's request pipeline. That
 * pipeline validated each call's params twice and its result once more with zod, and built a context, an abort
 * controller and a chain of promises around a handler that only hands the call to `GatewayCore.callTool`: more
 * CPU than the rest of the call's way through the gateway. For a list it also walked every tool to see whether
 * one needs its outputSchema wrapped: a third of what a warm 960-tool list cost the gateway. Here the params
 * are checked by hand, the request goes to the core with the same binding (requests and notifications related
 * to a call go back through the SDK server, so they travel on the call's own response), and the answer goes
 * out on the transport.
 *
 * What a call depends on stays true: cancellation (`notifications/cancelled` and the session closing abort it
 * and suppress its answer, as the SDK does), the session's `logging/setLevel` threshold for log messages
 * relayed during the call, and a result of the right shape. A list is the core's list, recorded once; one with
 * a tool whose outputSchema a 2025 client must see wrapped still goes out through the SDK server, which wraps
 * it. Every other message still goes to the SDK server.
 */
import type { CallToolResult, JSONRPCMessage, JSONRPCRequest, LoggingLevel, MessageExtraInfo, RequestId, Server, Tool, Transport } from '@modelcontextprotocol/server';
import { requestCaller, type Caller, type GatewayCore } from './gateway.js';
import { presentedBy } from './session-transport.js';
import { relayRequest } from './tasks.js';
import type { CallBinding } from './upstream.js';

/** Keys of results that are not tool results (tasks, 2026-07-28 input requests), which keep their shape. */
const FOREIGN_RESULT_KEYS = ['task', 'inputRequests', 'requestState'];
const SEVERITY: readonly LoggingLevel[] = ['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency'];

/** Whether each tool list (the core's views are frozen and kept) goes out as it is; see `needsWrapping`. */
const plainLists = new WeakMap<readonly Tool[], boolean>();

/**
 * Takes tools/call (and the cancellations of such calls) and tools/list off the transport before the SDK
 * server sees them; the session's tools/list handler is replaced by one that answers with the list fetched here.
 */
export function serveDirectly(server: Server, transport: Transport, core: GatewayCore, caller: Caller): void {
  const sdk = transport.onmessage!;
  const calls = new Map<RequestId, AbortController>();
  let threshold: LoggingLevel | undefined;

  const answer = (message: JSONRPCMessage): void => {
    transport.send(message).catch((error: unknown) => transport.onerror?.(error instanceof Error ? error : new Error(String(error))));
  };

  const answerError = (id: RequestId, error: unknown): void => {
    const { code, message, data } = error as { code?: unknown; message?: unknown; data?: unknown };
    const wireCode = Number.isSafeInteger(code) ? (code === -32002 ? -32602 : (code as number)) : -32603;
    answer({ jsonrpc: '2.0', id, error: { code: wireCode, message: typeof message === 'string' ? message : 'Internal error', ...(data !== undefined ? { data } : {}) } });
  };

  // Lists fetched here whose answer the SDK server encodes, by request id: one list, one audit record.
  const fetched = new Map<RequestId, Tool[]>();
  server.setRequestHandler('tools/list', async (_request, ctx) => {
    const tools = fetched.get(ctx.mcpReq.id);
    fetched.delete(ctx.mcpReq.id);
    return { tools: tools ?? (await core.listTools(requestCaller(caller, presentedBy(ctx.http)))) };
  });

  const list = async (request: JSONRPCRequest, extra: MessageExtraInfo | undefined): Promise<void> => {
    const invalid = invalidListParams(request.params);
    if (invalid) return answer({ jsonrpc: '2.0', id: request.id, error: { code: -32602, message: `Invalid tools/list request: ${invalid}` } });
    let tools: Tool[];
    try {
      tools = await core.listTools(requestCaller(caller, presentedBy(extra)));
    } catch (error) {
      return answerError(request.id, error);
    }
    let plain = plainLists.get(tools);
    if (plain === undefined) plainLists.set(tools, (plain = !tools.some(needsWrapping)));
    if (plain) return answer({ jsonrpc: '2.0', id: request.id, result: { tools } });
    fetched.set(request.id, tools);
    sdk(request, extra);
  };

  const call = async (request: JSONRPCRequest, extra: MessageExtraInfo | undefined): Promise<void> => {
    const id = request.id;
    const params = request.params as Record<string, unknown> | undefined;
    const invalid = invalidCallParams(params);
    if (invalid) return answer({ jsonrpc: '2.0', id, error: { code: -32602, message: `Invalid tools/call request: ${invalid}` } });
    const controller = new AbortController();
    calls.set(id, controller);
    const binding: CallBinding = {
      session: caller.session,
      send: (message) =>
        relayRequest(server, message, (request) => server.request(request, { relatedRequestId: id }), (request, schema) => server.request(request, schema, { relatedRequestId: id })),
      notify: (notification) => {
        // Log messages go through the session's own logging/setLevel filter.
        if (notification.method === 'notifications/message') {
          const level = (notification.params as { level?: LoggingLevel } | undefined)?.level;
          if (level !== undefined && threshold !== undefined && SEVERITY.indexOf(level) < SEVERITY.indexOf(threshold)) return Promise.resolve();
        }
        return server.notification(notification as never, { relatedRequestId: id });
      },
    };
    const meta = params!._meta as Record<string, unknown> | undefined;
    const progressToken = meta?.progressToken as string | number | undefined;
    const task = params!.task as Record<string, unknown> | undefined;
    try {
      const result = await core.callTool(requestCaller(caller, presentedBy(extra)), params!.name as string, params!.arguments as Record<string, unknown> | undefined, binding, {
        signal: controller.signal,
        ...(progressToken !== undefined ? { progressToken } : {}),
        ...(meta ? { meta } : {}),
        ...(task ? { task } : {}),
      });
      if (controller.signal.aborted) return;
      // A result with no content gets an empty list, as the SDK server does.
      const normalised = isObject(result) && result.content === undefined && !FOREIGN_RESULT_KEYS.some((key) => key in result) ? { ...result, content: [] } : result;
      const malformed = isObject(normalised) && 'task' in normalised ? malformedTaskCreated(normalised) : malformedResult(normalised);
      if (malformed) answer({ jsonrpc: '2.0', id, error: { code: -32602, message: `Invalid tools/call result: ${malformed}` } });
      else answer({ jsonrpc: '2.0', id, result: normalised as never });
    } catch (error) {
      if (controller.signal.aborted) return;
      answerError(id, error);
    } finally {
      if (calls.get(id) === controller) calls.delete(id);
    }
  };

  transport.onmessage = (message, extra) => {
    if ('method' in message) {
      if (message.method === 'tools/call' && 'id' in message) return void call(message, extra);
      if (message.method === 'tools/list' && 'id' in message) return void list(message, extra);
      if (message.method === 'notifications/cancelled') {
        const requestId = (message.params as { requestId?: RequestId } | undefined)?.requestId;
        const running = requestId === undefined ? undefined : calls.get(requestId);
        if (running) return void running.abort((message.params as { reason?: unknown }).reason ?? 'cancelled by the client');
      }
      if (message.method === 'logging/setLevel') {
        const level = (message.params as { level?: unknown } | undefined)?.level;
        if (SEVERITY.includes(level as LoggingLevel)) threshold = level as LoggingLevel;
      }
    }
    sdk(message, extra);
  };
  const sdkClose = transport.onclose;
  transport.onclose = () => {
    for (const controller of calls.values()) controller.abort('the session closed');
    calls.clear();
    sdkClose?.();
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Why tools/call params are not valid, or undefined: the rules of the SDK's CallToolRequestParams schema. */
function invalidCallParams(params: Record<string, unknown> | undefined): string | undefined {
  if (!isObject(params)) return 'params must be an object';
  if (typeof params.name !== 'string') return 'params.name must be a string';
  if (params.arguments !== undefined && !isObject(params.arguments)) return 'params.arguments must be an object';
  const meta = params._meta;
  if (meta !== undefined) {
    if (!isObject(meta)) return 'params._meta must be an object';
    const token = meta.progressToken;
    if (token !== undefined && typeof token !== 'string' && !(typeof token === 'number' && Number.isSafeInteger(token))) return 'the progress token must be a string or an integer';
  }
  if (params.task !== undefined && !isObject(params.task)) return 'params.task must be an object';
  return undefined;
}

/** Why tools/list params are not valid, or undefined: the rules of the SDK's PaginatedRequestParams schema. */
function invalidListParams(params: Record<string, unknown> | undefined): string | undefined {
  if (params === undefined) return undefined;
  if (!isObject(params)) return 'params must be an object';
  if (params.cursor !== undefined && typeof params.cursor !== 'string') return 'params.cursor must be a string';
  if (params._meta !== undefined && !isObject(params._meta)) return 'params._meta must be an object';
  return undefined;
}

/**
 * Whether a 2025 client must see this tool's outputSchema wrapped in an object (SEP-2106: a 2026-07-28
 * upstream may declare any root, a 2025 client only an object one). The SDK server's test, word for word.
 */
function needsWrapping(tool: Tool): boolean {
  return isObject(tool) && isObject(tool.outputSchema) && tool.outputSchema.type !== 'object';
}

/** What is wrong with the shape of a CreateTaskResult (a call run as a task), or undefined. */
function malformedTaskCreated(result: Record<string, unknown>): string | undefined {
  const task = result.task;
  if (!isObject(task) || typeof task.taskId !== 'string' || typeof task.status !== 'string') return 'task must be an object with a taskId and a status';
  return undefined;
}

/** What is wrong with a tools/call result's shape, or undefined: content blocks, structured content, isError. */
function malformedResult(result: CallToolResult): string | undefined {
  if (!isObject(result)) return 'not an object';
  if (!Array.isArray(result.content)) return 'content must be an array';
  for (const block of result.content as unknown[]) if (!isObject(block) || typeof block.type !== 'string') return 'every content block needs a type';
  if (result.structuredContent !== undefined && !isObject(result.structuredContent)) return 'structuredContent must be an object';
  if (result.isError !== undefined && typeof result.isError !== 'boolean') return 'isError must be a boolean';
  return undefined;
}
