// `ispy run <target…> -c <line>…`: the same lines on many processes at once.
//
// Each target gets its own connection and runs the lines in order; targets run
// concurrently (bounded by --concurrency), each line bounded by --timeout, so a slow or
// dead process costs its own slot and nothing more. Output is grouped per target and
// printed as each finishes, never interleaved:
//
//   ── /tmp/ispy-1000/4242.sock (pid 4242, node) ──
//   pid  4242
//   …
//   ── /tmp/ispy-1000/4243.sock ──
//   error: stale socket /tmp/ispy-1000/4243.sock: nothing is listening on it …
//
// and a summary `N ok, M failed` on stderr. With --json, one object per target per line
// on stdout (NDJSON): {target, pid, host, line, ok, result | error: {code, message}}.
//
// Remote targets (ssh://host/…) read the same, labelled `host:/path`; a remote glob is
// expanded on its host when its turn comes, and its sockets join the queue. With
// --merge, each line's answers become one table across all targets (merge.ts), printed
// once every target is done, after the blocks of the targets that failed.

import type { Client, PluginInfo } from '../client/index';
import { IspyError, tokenize } from '../protocol/index';
import { insertBeforeExtension } from './artefact';
import { artefactLines, execute, type ArtefactNote } from './execute';
import { formatItem, formatTable, formatValue } from './format';
import { commandHelp, overviewHelp, pluginHelp, pluginsTable, shellWordHelp } from './help';
import { parseLine } from './line';
import { mergeResults } from './merge';
import { drain } from './pool';
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, errorJson, errorLines, goneMessage } from './report';
import { styleFor, type Style } from './style';
import type { Target } from './targets';

export const DEFAULT_CONCURRENCY = 32;
export const DEFAULT_TIMEOUT_MS = 10_000;

export interface RunOptions {
  lines: string[];
  json: boolean;
  /** One table per line across all targets instead of one block per target. */
  merge?: boolean;
  concurrency: number;
  timeoutMs: number;
  output: NodeJS.WriteStream;
  error: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
}

interface LineResult {
  line: string;
  /** `<plugin> <command>` when the line was a command call. */
  command?: string;
  /** When the result arrived (ms since the epoch). */
  answeredAt?: number;
  ok: boolean;
  /** The line was rejected against this target's catalogue before being sent. */
  usage?: boolean;
  value?: unknown;
  /** Text for human output, when the line was a shell word (help, plugins). */
  text?: string;
  data: unknown[];
  error?: IspyError;
  artefacts: ArtefactNote[];
}

interface TargetResult {
  label: string;
  pid: number | null;
  title: string | null;
  host: string | null;
  connected: boolean;
  results: LineResult[];
}

/** Checks every line can be split into words before any target is contacted. */
export function checkLines(lines: readonly string[]): void {
  if (lines.length === 0) throw new IspyError('ISPY_ERR_USAGE', 'nothing to run: give lines with -c "<plugin> <command>" or a script with -f FILE');
  for (const line of lines) tokenize(line);
}

/** Lines of a script: one per line, `#` comments and blank lines skipped. */
export function scriptLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

async function runLines(client: Client, lines: readonly string[], opts: RunOptions, color: boolean, tag: string): Promise<LineResult[]> {
  const results: LineResult[] = [];
  let current: PluginInfo | undefined;
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i]!;
    if (!client.isOpen) {
      const error = new IspyError('ISPY_ERR_DISCONNECTED', `not run: ${goneMessage(client)}`);
      for (const rest of lines.slice(i)) results.push({ line: rest, ok: false, error, data: [], artefacts: [] });
      break;
    }
    let parsed;
    try {
      parsed = parseLine(text, client.welcome, current);
    } catch (err) {
      results.push({ line: text, ok: false, usage: true, error: err as IspyError, data: [], artefacts: [] });
      continue;
    }
    switch (parsed.kind) {
      case 'empty':
        continue;
      case 'exit':
        return results;
      case 'use':
        current = parsed.plugin;
        results.push({ line: text, ok: true, value: null, data: [], artefacts: [] });
        continue;
      case 'plugins':
        results.push({
          line: text,
          ok: true,
          value: { plugins: client.plugins, failedPlugins: client.welcome.failedPlugins },
          text: pluginsTable(client.welcome, color),
          data: [],
          artefacts: [],
        });
        continue;
      case 'help': {
        const help = parsed.command && parsed.plugin
          ? commandHelp(parsed.plugin, parsed.command, color)
          : parsed.plugin
            ? pluginHelp(parsed.plugin, color)
            : parsed.word
              ? shellWordHelp(parsed.word)
              : overviewHelp(client.welcome, current, color);
        results.push({ line: text, ok: true, value: help, text: help, data: [], artefacts: [] });
        continue;
      }
      case 'call': {
        const data: unknown[] = [];
        const command = `${parsed.plugin.name} ${parsed.command.name}`;
        const outcome = await execute(client, parsed, {
          timeoutMs: opts.timeoutMs,
          // Many processes writing one file would overwrite each other: each gets its pid
          // (and, for a remote one, its host: pids repeat across hosts).
          ...(parsed.output !== undefined ? { outputFile: insertBeforeExtension(parsed.output, tag) } : {}),
          onData: (item) => data.push(item),
        });
        if (outcome.ok) results.push({ line: text, command, answeredAt: Date.now(), ok: true, value: outcome.value, data, artefacts: outcome.artefacts });
        else {
          const error = outcome.error.code === 'ISPY_ERR_DISCONNECTED' || !client.isOpen ? new IspyError('ISPY_ERR_DISCONNECTED', goneMessage(client)) : outcome.error;
          results.push({ line: text, command, ok: false, usage: outcome.error.code === 'ISPY_ERR_USAGE', error, data, artefacts: outcome.artefacts });
        }
      }
    }
  }
  return results;
}

function unreachable(target: Target, err: unknown, lines: readonly string[]): TargetResult {
  const error = err instanceof IspyError ? err : new IspyError('ISPY_ERR_CONNECT', (err as Error).message);
  return {
    label: target.label,
    pid: null,
    title: null,
    host: target.host ?? null,
    connected: false,
    results: lines.map((line) => ({ line, ok: false, error, data: [], artefacts: [] })),
  };
}

async function runTarget(target: Target, opts: RunOptions, color: boolean, closing: Promise<void>[]): Promise<TargetResult> {
  let client: Client;
  try {
    client = await target.connect({ timeoutMs: opts.timeoutMs });
  } catch (err) {
    return unreachable(target, err, opts.lines);
  }
  const w = client.welcome;
  try {
    const tag = target.host !== undefined ? `${target.host.replace(/[^A-Za-z0-9._-]/g, '_')}-${w.pid}` : String(w.pid);
    const results = await runLines(client, opts.lines, opts, color, tag);
    // A remote target's host is the name the operator gave; a local one's, the agent's own.
    return { label: target.label, pid: w.pid, title: w.title, host: target.host ?? w.hostname, connected: true, results };
  } finally {
    // Closing is a courtesy to the agent; the block is printed without waiting for it.
    closing.push(client.close());
  }
}

/** One target's block; `failedOnly` (for --merge, where answers go to the tables) keeps only its errors. */
function humanBlock(r: TargetResult, multiLine: boolean, s: Style, failedOnly = false): string {
  const who = r.pid !== null ? ` (pid ${r.pid}${r.title ? `, ${r.title}` : ''})` : '';
  const ok = r.connected && r.results.every((x) => x.ok);
  const out = [`${s.head(`── ${r.label}${who} ──`)}${ok ? '' : ` ${s.bad('failed')}`}`];
  if (!r.connected) {
    // One reason is enough when nothing could run at all.
    out.push(...errorLines(r.results[0]?.error, s));
    return out.join('\n');
  }
  for (const x of r.results) {
    if (failedOnly && x.ok) continue;
    if (multiLine) out.push(s.dim(`» ${x.line}`));
    for (const item of x.data) out.push(formatItem(item, { color: s.enabled }));
    if (x.ok) {
      const text = x.text ?? formatValue(x.value, { color: s.enabled });
      if (text) out.push(text);
      out.push(...artefactLines(x.artefacts).map((l) => s.dim(l)));
    } else out.push(...errorLines(x.error, s));
  }
  return out.join('\n');
}

function jsonLines(r: TargetResult): string {
  return r.results
    .map((x) => {
      const o: Record<string, unknown> = { target: r.label, pid: r.pid, host: r.host, line: x.line, ok: x.ok };
      if (x.ok) o.result = x.value === undefined ? null : x.value;
      else o.error = errorJson(x.error);
      if (x.data.length) o.data = x.data;
      if (x.artefacts.length) o.artefacts = x.artefacts;
      return JSON.stringify(o);
    })
    .join('\n');
}

/** The merged tables, one per line, once every target is done (--merge). */
function mergedOutput(done: readonly TargetResult[], lines: readonly string[], json: boolean, s: Style): string[] {
  const out: string[] = [];
  lines.forEach((line, i) => {
    const answers = done.map((r) => ({ r, x: r.connected ? r.results[i] : undefined })).filter((a) => a.x?.ok && a.x.line === line);
    const command = answers.find((a) => a.x!.command !== undefined)?.x!.command;
    // `use <plugin>` and the like answer nothing worth a table.
    if (answers.every((a) => a.x!.value === null || a.x!.value === undefined) && !json) return;
    const merged = mergeResults(
      command,
      answers.map(({ r, x }) => ({ host: r.host, pid: r.pid, source: r.label, value: x!.value, ...(x!.answeredAt !== undefined ? { answeredAt: x!.answeredAt } : {}) })),
    );
    if (json) {
      const failed = done
        .filter((r) => !(r.connected ? r.results[i]?.ok : false))
        .map((r) => ({ target: r.label, host: r.host, pid: r.pid, error: errorJson(r.results[i]?.error ?? r.results[0]?.error) }));
      out.push(JSON.stringify({ line, ...(command ? { command } : {}), targets: answers.length, rows: merged.rows, failed }));
      return;
    }
    const order = merged.order ? `, by ${merged.order}` : '';
    out.push(s.head(`── ${line}: ${answers.length} target${answers.length === 1 ? '' : 's'} merged${order} ──`));
    out.push(merged.table.length ? formatTable(merged.table, { color: s.enabled }) : s.dim('(none)'));
  });
  return out;
}

/**
 * Runs the lines on every target; resolves with the exit status: 0 when every target
 * answered every line, 2 when a line was rejected as mistyped by every target that could
 * be reached (a typo, not a fleet problem), 1 otherwise.
 */
export async function runFanout(targets: readonly Target[], opts: RunOptions): Promise<number> {
  checkLines(opts.lines);
  const s = styleFor(opts.output, opts.env);
  const closing: Promise<void>[] = [];
  const multiLine = opts.lines.length > 1;
  const merge = opts.merge === true;
  const done: TargetResult[] = [];
  let ok = 0;
  let failed = 0;
  let connected = 0;
  const usageRejections = new Map<string, number>();
  const finish = (r: TargetResult) => {
    const allOk = r.connected && r.results.every((x) => x.ok);
    if (allOk) ok++;
    else failed++;
    if (r.connected) {
      connected++;
      for (const x of r.results) if (x.usage) usageRejections.set(x.line, (usageRejections.get(x.line) ?? 0) + 1);
    }
    if (merge) {
      done.push(r);
      // Failures are told at once, in their own blocks; answers wait for the tables.
      if (!allOk && !opts.json) opts.output.write(`${humanBlock(r, multiLine, s, true)}\n`);
      return;
    }
    const text = opts.json ? jsonLines(r) : humanBlock(r, multiLine, s);
    if (text) opts.output.write(`${text}\n`);
  };
  // A remote glob's sockets are known only once its host has listed them.
  const seen = new Set(targets.filter((t) => !t.expand).map((t) => t.label));
  // Each target's block is printed the moment it finishes, not in the order given.
  await drain(targets, opts.concurrency, async (target) => {
    if (target.expand) {
      try {
        return (await target.expand({ timeoutMs: opts.timeoutMs })).filter((t) => !seen.has(t.label) && seen.add(t.label));
      } catch (err) {
        finish(unreachable(target, err, opts.lines));
        return;
      }
    }
    finish(await runTarget(target, opts, s.enabled, closing));
  });
  if (merge) {
    const text = mergedOutput(done, opts.lines, opts.json, s);
    if (text.length) opts.output.write(`${text.join('\n')}\n`);
  }
  const es = styleFor(opts.error, opts.env);
  opts.error.write(`${failed ? es.bad(`${ok} ok, ${failed} failed`) : es.good(`${ok} ok, ${failed} failed`)}\n`);
  await Promise.all(closing);
  if (failed === 0) return EXIT_OK;
  const typo = connected > 0 && [...usageRejections.values()].some((n) => n === connected);
  return typo ? EXIT_USAGE : EXIT_FAILED;
}
