/**
 * policy/: the model, compiler, decision function, explain and test runner, and signed bundles.
 * Imports only config/ (for the validated document type) and util/. Knows nothing of sockets or data planes.
 */
export type * from './types.js';
export type { CredentialGrant, FilesystemView, PolicyEngine, PolicyHolder } from './engine.js';
export { isAllowed, SURFACES } from './types.js';
export { compilePolicy, canonicalJson, policyDigest, nodeCompileOptions, type CompileOptions } from './compile.js';
