// Node's permission model (`--permission`; `--experimental-permission` on Node 20): what the
// agent needs granted, asked before it does anything the model would refuse with
// ERR_ACCESS_DENIED, so that a process started without those grants gets one line naming
// them and runs on untouched.
//
// Feature-tested, never by version: `process.permission` exists only while the model is on
// (under `--permission-audit` too, where has() answers as enforcement would: the same line
// then says what enforcement would need). has() answers false for a scope a line does not
// know, so a scope counts only where the line accepts its --allow-* flag
// (process.allowedNodeEnvironmentFlags): `net` (its UNIX socket's listen) and `inspector`.
// Loaded on both threads; it imports nothing of ispy.

import path from 'node:path';

export interface PermissionApi {
  has(scope: string, reference?: string): boolean;
}

/** The permission model's API while the model is on, else undefined. */
export function permissionModel(): PermissionApi | undefined {
  const p = (process as { permission?: Partial<PermissionApi> }).permission;
  return typeof p?.has === 'function' ? (p as PermissionApi) : undefined;
}

/** Whether this Node accepts `flag` (e.g. `--allow-net`). */
export function nodeKnowsFlag(flag: string): boolean {
  try {
    return process.allowedNodeEnvironmentFlags.has(flag);
  } catch {
    return false;
  }
}

export interface AgentNeeds {
  /** Files and folders the agent reads (its config file), each flag named as is. */
  read: string[];
  /**
   * Folders whose files it reads (its own package), each asked through a file in it: has()
   * on a granted folder answers false (and so does a stat of it) when a file inside was
   * granted too, while the files in it stay readable.
   */
  readInside: { folder: string; files: string[] }[];
  /** Folders it creates, lists and writes (the socket's, the artefacts', the audit log's). */
  readWrite: string[];
}

function has(p: PermissionApi, scope: string, ref?: string): boolean {
  try {
    return ref === undefined ? p.has(scope) : p.has(scope, ref);
  } catch {
    return false;
  }
}

/**
 * The flags that would grant what the agent lacks, in the order they are usually written;
 * empty when it has everything it needs to start. The inspector is left out: the agent
 * starts without it (see inspectorWithheld()).
 */
export function missingGrants(p: PermissionApi, needs: AgentNeeds): string[] {
  const flags: string[] = [];
  if (!has(p, 'worker')) flags.push('--allow-worker');
  if (nodeKnowsFlag('--allow-net') && !has(p, 'net')) flags.push('--allow-net');
  for (const { folder, files } of needs.readInside) if (!files.every((f) => has(p, 'fs.read', f))) flags.push(`--allow-fs-read=${path.resolve(folder)}`);
  const reads = new Set([...needs.read, ...needs.readWrite].map((f) => path.resolve(f)));
  for (const f of reads) if (!has(p, 'fs.read', f)) flags.push(`--allow-fs-read=${f}`);
  for (const f of new Set(needs.readWrite.map((d) => path.resolve(d)))) if (!has(p, 'fs.write', f)) flags.push(`--allow-fs-write=${f}`);
  return flags;
}

const INSPECTOR_USERS = 'process stack, process modules, profiles and heap commands';

/**
 * Why the inspector is unavailable to the agent under the permission model, or undefined
 * when it is available (the model is off, or --allow-inspector granted it). A line without
 * --allow-inspector gives no inspector session at all while the model is on.
 */
export function inspectorWithheld(p: PermissionApi | undefined = permissionModel()): string | undefined {
  if (!p) return undefined;
  if (nodeKnowsFlag('--allow-inspector')) {
    return has(p, 'inspector') ? undefined : "Node's permission model withholds the inspector; start node with --allow-inspector to use it";
  }
  return "this Node gives no inspector under its permission model (it has no --allow-inspector flag)";
}

/** The start-up refusal: the flags, and what the inspector would add. */
export function refusalMessage(p: PermissionApi, flags: string[]): string {
  let inspector = '';
  if (nodeKnowsFlag('--allow-inspector')) {
    if (!has(p, 'inspector')) inspector = ` (and --allow-inspector for ${INSPECTOR_USERS})`;
  } else {
    inspector = ` (this Node has no --allow-inspector: ${INSPECTOR_USERS} stay unavailable under the model)`;
  }
  return `the permission model is on and withholds what the agent needs; start node with ${flags.join(' ')}${inspector}`;
}

const MODEL_FLAG = /^--(no-)?(permission|experimental-permission|permission-audit|allow-[a-z-]+)(=|$)/;
const VALUE_FLAGS = new Set(['--allow-fs-read', '--allow-fs-write']);

/**
 * The permission-model flags of this process's command line, for the agent's worker: a
 * worker started with `execArgv: []` (no preloads) runs outside the model on every line
 * (measured on 20-26: it can write where the app cannot), and the agent must never widen
 * what the process may do. Flags from NODE_OPTIONS need no copy: workers parse it again.
 */
export function modelFlags(execArgv: readonly string[] = process.execArgv): string[] {
  const out: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    const a = execArgv[i]!;
    if (!MODEL_FLAG.test(a)) continue;
    out.push(a);
    if (VALUE_FLAGS.has(a) && i + 1 < execArgv.length) out.push(execArgv[++i]!);
  }
  return out;
}
