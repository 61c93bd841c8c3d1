// How much memory this process may still take before the kernel kills it, and the guard
// that every command which makes the app allocate in proportion to its heap runs first.
//
// Runs in the agent worker. The room left is the smallest of MemAvailable and, for every
// cgroup from the process's own up to the top of what is mounted, that cgroup's limit less
// its usage: an app in its own cgroup (a systemd service with MemoryMax, a container without
// a cgroup namespace, any cgroup v1 hierarchy) is killed at its own limit, which the
// top-level /sys/fs/cgroup files do not show. Everything is read from files under `root`
// (so tests can build a fake /proc and /sys), and nothing here throws: what cannot be read
// is left out, and the rest still counts.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IspyError } from 'ispy/plugin';

/** A v1 limit at or above this means none: the kernel writes "no limit" as about 2^63. */
const V1_NO_LIMIT = 2 ** 60;
/** statfs f_type of tmpfs: files there are held in memory (and charged to the cgroup as shmem). */
const TMPFS_MAGIC = 0x01021994;

export interface Available {
  bytes: number;
  /** What limited it, for people: `the cgroup /system.slice/app.service (memory.max 1024 MB, 700 MB in use)`. */
  source: string;
}

export interface MemoryRoom extends Available {
  /** Every limit that was read, the tightest (the one returned) among them. */
  considered: Available[];
}

function read(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function isDir(dir: string): boolean {
  try {
    return fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/** A byte count; `max` (cgroup v2's "no limit") is Infinity; anything else unreadable is undefined. */
function readBytes(file: string): number | undefined {
  const text = read(file)?.trim();
  if (text === undefined || text === '') return undefined;
  if (text === 'max') return Infinity;
  const n = Number(text);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

/** One `key value` line of a memory.stat file. */
function statField(file: string, key: string): number | undefined {
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(read(file) ?? '');
  return m ? Number(m[1]) : undefined;
}

function mbText(bytes: number): string {
  return `${mb(bytes)} MB`;
}

export function mb(bytes: number): number {
  return Math.round(bytes / 104857.6) / 10;
}

// ---- where the process's cgroups are -------------------------------------------------

interface OwnCgroups {
  /** The path of the unified (v2) hierarchy's `0::` line. */
  v2?: string;
  /** The path of the v1 hierarchy that has the memory controller. */
  v1?: string;
}

/** /proc/self/cgroup: `hierarchy-id:controllers:path`, one line per hierarchy. */
export function parseProcCgroup(text: string): OwnCgroups {
  const own: OwnCgroups = {};
  for (const line of text.split('\n')) {
    const a = line.indexOf(':');
    const b = line.indexOf(':', a + 1);
    if (a < 0 || b < 0) continue;
    const id = line.slice(0, a);
    const controllers = line.slice(a + 1, b);
    const where = line.slice(b + 1).trim();
    if (!where.startsWith('/')) continue;
    if (id === '0' && controllers === '') own.v2 = where;
    else if (controllers.split(',').includes('memory')) own.v1 = where;
  }
  return own;
}

export interface CgroupMount {
  /** The directory of the hierarchy this mount shows (mountinfo's root field; `/` for the whole). */
  root: string;
  /** Where it is mounted. */
  point: string;
}

/** mountinfo escapes spaces and the like as \ooo. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/**
 * The cgroup mounts in /proc/self/mountinfo: `cgroup2` for v2, or `cgroup` with the `memory`
 * super option for v1. Fields: id parent major:minor root point options [optional…] - type source super-options.
 */
export function parseCgroupMounts(text: string, version: 1 | 2): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    if (dash < 0 || fields.length < dash + 4) continue;
    const type = fields[dash + 1];
    const superOptions = fields[dash + 3]!.split(',');
    if (version === 2 ? type !== 'cgroup2' : type !== 'cgroup' || !superOptions.includes('memory')) continue;
    mounts.push({ root: unescapeMountField(fields[3]!), point: unescapeMountField(fields[4]!) });
  }
  return mounts;
}

/** One cgroup on the way up from the process's own. */
interface Level {
  dir: string;
  /** How messages name it: its path in the hierarchy (`/system.slice/app.service`), or where it is mounted. */
  name: string;
}

function label(level: Level): string {
  return `the cgroup ${level.name}`;
}

/** `rel` split into its parts, or undefined when it could climb out (`..`) of where it is joined. */
function parts(rel: string): string[] | undefined {
  const p = rel.split('/').filter((s) => s !== '' && s !== '.');
  return p.includes('..') ? undefined : p;
}

/** The levels from `top/<p…>` up to `top`, each labelled `base` joined with its part of the path. */
function walkUp(top: string, p: string[], base: string): Level[] {
  const levels: Level[] = [];
  for (let n = p.length; n >= 0; n--) {
    levels.push({ dir: path.join(top, ...p.slice(0, n)), name: path.posix.join(base, ...p.slice(0, n)) });
  }
  return levels;
}

/**
 * The process's cgroup and its ancestors, as far up as the mount shows, nearest first.
 *
 * A path in /proc/self/cgroup is relative to the hierarchy's root as the process's cgroup
 * namespace sees it; a mount shows the hierarchy from its root field down. Without a cgroup
 * namespace (a host, or a container that shares the host's) the mount root is a prefix of
 * the path. Inside a namespace, or with a mount made elsewhere, the path may instead be
 * relative to the mount root itself. When neither leads to a directory, the top of the mount
 * is all there is to read (in a container that is the container's own cgroup).
 */
function cgroupLevels(own: string, mounts: CgroupMount[], root: string): Level[] {
  const ownParts = parts(own);
  for (const m of mounts) {
    if (!ownParts) break;
    const rootParts = parts(m.root);
    if (!rootParts || rootParts.some((s, i) => ownParts[i] !== s)) continue;
    const top = path.join(root, m.point);
    const below = ownParts.slice(rootParts.length);
    if (isDir(path.join(top, ...below))) return walkUp(top, below, m.root);
  }
  for (const m of mounts) {
    if (!ownParts) break;
    const top = path.join(root, m.point);
    if (ownParts.length > 0 && isDir(path.join(top, ...ownParts))) return walkUp(top, ownParts, '/');
  }
  for (const m of mounts) {
    const top = path.join(root, m.point);
    if (isDir(top)) return [{ dir: top, name: parts(m.root) ? m.root : `mounted at ${m.point}` }];
  }
  return [];
}

// ---- what each cgroup leaves ---------------------------------------------------------

/**
 * What a cgroup counts as in use, less its inactive file cache: the kernel reclaims clean
 * page cache before it kills anything, so counting it would refuse in every cgroup whose app
 * has written files (v1 lets cache grow to the limit). The same working set the kubelet uses.
 */
function inUse(usage: number, inactiveFile: number | undefined): number {
  return Math.max(0, usage - (inactiveFile ?? 0));
}

interface LevelReading {
  level: Level;
  limit?: { bytes: number; file: string };
  used?: number;
}

function describe(r: LevelReading, used: number | undefined): string {
  const usedText = used === undefined ? 'its usage could not be read' : `${mbText(used)} in use`;
  return `${label(r.level)} (${r.limit!.file} ${mbText(r.limit!.bytes)}, ${usedText})`;
}

function v2Reading(level: Level): LevelReading {
  const max = readBytes(path.join(level.dir, 'memory.max'));
  const high = readBytes(path.join(level.dir, 'memory.high'));
  // memory.high throttles and reclaims rather than kills, but a snapshot pushed past it
  // stalls the app for as long as it runs there: treat it as the limit when it is tighter.
  let limit: LevelReading['limit'];
  if (max !== undefined && max !== Infinity) limit = { bytes: max, file: 'memory.max' };
  if (high !== undefined && high !== Infinity && (!limit || high < limit.bytes)) limit = { bytes: high, file: 'memory.high' };
  const usage = readBytes(path.join(level.dir, 'memory.current'));
  const used = usage === undefined || usage === Infinity ? undefined : inUse(usage, statField(path.join(level.dir, 'memory.stat'), 'inactive_file'));
  return { level, ...(limit && { limit }), ...(used !== undefined && { used }) };
}

function v1Reading(level: Level): LevelReading {
  const max = readBytes(path.join(level.dir, 'memory.limit_in_bytes'));
  const limit = max !== undefined && max < V1_NO_LIMIT ? { bytes: max, file: 'memory.limit_in_bytes' } : undefined;
  const usage = readBytes(path.join(level.dir, 'memory.usage_in_bytes'));
  // usage_in_bytes counts the children too, so the cache to leave out is the hierarchical total.
  const used = usage === undefined || usage === Infinity ? undefined : inUse(usage, statField(path.join(level.dir, 'memory.stat'), 'total_inactive_file'));
  return { level, ...(limit && { limit }), ...(used !== undefined && { used }) };
}

/** The room each limited cgroup on the way up leaves. */
function cgroupRoom(levels: Level[], version: 1 | 2): Available[] {
  const readings: LevelReading[] = [];
  for (const [i, level] of levels.entries()) {
    // v1 with use_hierarchy 0 (old kernels): a parent's limit does not cover its children.
    if (version === 1 && i > 0 && read(path.join(level.dir, 'memory.use_hierarchy'))?.trim() === '0') break;
    readings.push(version === 2 ? v2Reading(level) : v1Reading(level));
  }
  const out: Available[] = [];
  // A parent uses at least what its child does: when a level's usage is unreadable, the
  // largest usage read below it is the best lower bound there is.
  let usedBelow: number | undefined;
  for (const r of readings) {
    if (r.used !== undefined) usedBelow = Math.max(usedBelow ?? 0, r.used);
    if (!r.limit) continue;
    const used = r.used ?? usedBelow;
    out.push({ bytes: Math.max(0, r.limit.bytes - (used ?? 0)), source: describe(r, r.used) });
  }
  if (version === 1 && readings.length > 0) {
    // The kernel's own view of the tightest limit above: it sees ancestors this mount hides
    // (a container's parent slice). Their usage is unknown; the topmost visible one's is
    // the best lower bound.
    const hier = statField(path.join(readings[0]!.level.dir, 'memory.stat'), 'hierarchical_memory_limit');
    const visible = Math.min(...readings.map((r) => r.limit?.bytes ?? Infinity));
    if (hier !== undefined && hier < V1_NO_LIMIT && hier < visible) {
      const top = readings[readings.length - 1]!;
      const used = top.used ?? usedBelow;
      out.push({
        bytes: Math.max(0, hier - (used ?? 0)),
        source: `a cgroup above ${label(top.level)}, not mounted here (hierarchical_memory_limit ${mbText(hier)}, ${used === undefined ? 'usage unknown' : `at least ${mbText(used)} in use`})`,
      });
    }
  }
  return out;
}

export interface MemoryRoomOptions {
  /** Where /proc and /sys are; tests pass a fake tree. Default `/`. */
  root?: string;
  /** When /proc/meminfo cannot be read. Default os.freemem. */
  fallbackFree?: () => number;
}

/**
 * How much more memory this process can take: the smallest of MemAvailable and the room
 * every cgroup on the way up from its own leaves (v2, and v1's memory hierarchy; a hybrid
 * host has both, with the memory controller on one of them).
 */
export function availableMemory(opts: MemoryRoomOptions = {}): MemoryRoom {
  const root = opts.root ?? '/';
  const considered: Available[] = [];
  const meminfo = /^MemAvailable:\s+(\d+) kB$/m.exec(read(path.join(root, 'proc/meminfo')) ?? '');
  if (meminfo) considered.push({ bytes: Number(meminfo[1]) * 1024, source: 'MemAvailable in /proc/meminfo' });
  else considered.push({ bytes: (opts.fallbackFree ?? os.freemem)(), source: 'free memory (os.freemem)' });
  const own = parseProcCgroup(read(path.join(root, 'proc/self/cgroup')) ?? '');
  const mountinfo = own.v1 !== undefined || own.v2 !== undefined ? (read(path.join(root, 'proc/self/mountinfo')) ?? '') : '';
  for (const version of [2, 1] as const) {
    const where = version === 2 ? own.v2 : own.v1;
    if (where === undefined) continue;
    considered.push(...cgroupRoom(cgroupLevels(where, parseCgroupMounts(mountinfo, version), root), version));
  }
  const tightest = considered.reduce((a, b) => (b.bytes < a.bytes ? b : a));
  return { bytes: tightest.bytes, source: tightest.source, considered };
}

// ---- the guard -----------------------------------------------------------------------

/** The nearest folder that exists at or above `dir` is on tmpfs (the output folder may not exist yet). */
async function onTmpfs(dir: string): Promise<boolean> {
  const statfs = fs.promises.statfs as typeof fs.promises.statfs | undefined;
  if (typeof statfs !== 'function') return false;
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      return (await statfs(d)).type === TMPFS_MAGIC;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || d === path.dirname(d)) return false;
    }
  }
}

export interface PreflightRequest {
  /** What is about to happen, after "refusing to": `take a heap snapshot`. */
  action: string;
  heapUsedBytes: number;
  /** Extra memory it takes while it runs, as a multiple of the used heap. */
  factor: number;
  /** The size of the file it writes into `outputDir`, as a multiple of the used heap (0 or none: no file). */
  fileFactor?: number;
  outputDir?: string;
  /** limits.snapshotMemory from the config: when set, it is the memory allowed, instead of what is read. */
  configuredBytes?: number;
  force?: boolean;
  /** Said after the reason in a refusal, e.g. that the main thread freezes. */
  note?: string;
  /** Passed to availableMemory (tests). */
  room?: MemoryRoomOptions;
}

export interface PreflightEstimate {
  heapUsedMB: number;
  estimatedNeedMB: number;
  availableMB: number;
  limitedBy: string;
  /** Only when the output folder is on tmpfs: the part of the need that is the file itself. */
  fileInMemoryMB?: number;
}

/**
 * The guard every command that makes the app allocate in proportion to its heap runs first:
 * estimates the need, compares it with the room left, and throws ISPY_ERR_UNAVAILABLE
 * (unless forced) when it would not fit. Returns the estimate for the command's result.
 */
export async function memoryPreflight(req: PreflightRequest): Promise<PreflightEstimate> {
  let need = req.heapUsedBytes * req.factor;
  let file = 0;
  if (req.fileFactor && req.outputDir !== undefined && (await onTmpfs(req.outputDir))) {
    file = req.heapUsedBytes * req.fileFactor;
    need += file;
  }
  const available = req.configuredBytes !== undefined ? { bytes: req.configuredBytes, source: 'limits.snapshotMemory in the config' } : availableMemory(req.room);
  const estimate: PreflightEstimate = {
    heapUsedMB: mb(req.heapUsedBytes),
    estimatedNeedMB: mb(need),
    availableMB: mb(available.bytes),
    limitedBy: available.source,
    ...(file > 0 && { fileInMemoryMB: mb(file) }),
  };
  if (need > available.bytes && !req.force) {
    const why = file > 0 ? `${req.factor}x the heap, plus about ${mb(file)} MB for the file: ${req.outputDir} is on tmpfs, which holds files in memory` : `${req.factor}x the heap`;
    throw new IspyError(
      'ISPY_ERR_UNAVAILABLE',
      `refusing to ${req.action}: with ${estimate.heapUsedMB} MB of heap it may need about ${estimate.estimatedNeedMB} MB more memory ` +
        `(${why}), and only ${estimate.availableMB} MB is available (${available.source}); ` +
        `running out would get the process killed.${req.note ? ` ${req.note}` : ''} Use --force to ${file > 0 ? 'take it anyway, or set outputDir to a folder on disk' : 'take it anyway'}.`,
      { details: { ...estimate } },
    );
  }
  return estimate;
}

