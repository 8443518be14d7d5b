/**
 * agents/: agent identities and their API keys. A key is shown once, when it is made, and only its SHA-256
 * is stored (a key carries 256 random bits, so a fast hash is enough and keeps the hot path cheap).
 * Imports only store/ and util/. The MCP gateway and the egress proxy authenticate through
 * `AgentRegistry.authenticateAgentKey`.
 */
export { AgentRegistry, openAgentRegistry, parseAgentKey, type AgentInfo, type NewAgentKey } from './registry.js';
