// The `process` plugin: the whole process at a glance. Written against the public plugin
// API only (`ispy/plugin`), like any third-party plugin.
//
// Commands that must answer while the app is stuck (info, stack, modules) run in the
// agent worker and reach the main thread through the inspector; commands that need the
// main thread's own state (loop, handles, env, report, gc) run on it.

import * as os from 'node:os';
import { arg, command, definePlugin, IspyError, redactedValue, redactUrlPassword, secretMatcher, type CommandContext } from 'ispy/plugin';
import { GcRecorder } from './gc';
import type { ThreadCpu } from './cpu';

// One per thread that loads this module; only the main thread's is started.
const gc = new GcRecorder();

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const mb = (bytes: number) => round(bytes / (1024 * 1024), 1);

function isAppFrame(file: string): boolean {
  return !file.startsWith('node:') && !file.includes('/node_modules/') && !file.startsWith('<');
}

const GLOBAL_KEY = 'ispy.process';
const API = `globalThis[Symbol.for(${JSON.stringify(GLOBAL_KEY)})]`;

/** What the main thread tells about itself, read in one inspector round trip. */
interface MainSide {
  memory: Record<string, number>;
  /** process.threadCpuUsage() run on the main thread, or null where the line lacks it. */
  cpu: { user: number; system: number } | null;
}

/**
 * The main thread's memory and own CPU, read through the inspector so they answer while
 * the thread spins (the expression runs in a V8 interrupt). A thread blocked in native code
 * runs no interrupts: after 500 ms that is reported rather than waited out.
 */
async function mainSide(ctx: CommandContext): Promise<MainSide | { unavailable: string }> {
  try {
    return (await ctx.mainThread.evaluate(`({ memory: process.memoryUsage(), cpu: ${API} ? ${API}.threadCpu() : null })`, { timeoutMs: 500 })) as MainSide;
  } catch (err) {
    return { unavailable: (err as Error).message };
  }
}

function mainMemory(side: MainSide | { unavailable: string }): Record<string, number> | { unavailable: string } {
  if ('unavailable' in side) return side;
  const m = side.memory;
  return { rssMB: mb(m.rss ?? 0), heapUsedMB: mb(m.heapUsed ?? 0), heapTotalMB: mb(m.heapTotal ?? 0), externalMB: mb(m.external ?? 0), arrayBuffersMB: mb(m.arrayBuffers ?? 0) };
}

/**
 * The main thread's own CPU: threadCpuUsage() as it answered on that thread; else (a line
 * without it, or a thread the inspector could not reach) its /proc entry, read from here.
 */
function mainThreadCpu(side: MainSide | { unavailable: string }): ThreadCpu {
  const { fromUsage, fromProc, mainThreadStatFile } = require('./cpu') as typeof import('./cpu');
  if (!('unavailable' in side) && side.cpu) return fromUsage(side.cpu);
  if (process.platform === 'linux') return fromProc(mainThreadStatFile());
  return { unavailable: 'unavailable' in side ? `unavailable while the main thread is busy (${side.unavailable})` : `this Node line has no process.threadCpuUsage(), and ${process.platform} has no /proc` };
}

/**
 * The agent's own thread (where this command runs): what ispy itself holds, so an operator
 * can tell the agent's share of the process's memory from the app's.
 */
function agentWorkerMemory(): Record<string, number> {
  const m = process.memoryUsage();
  return { heapUsedMB: mb(m.heapUsed), heapTotalMB: mb(m.heapTotal) };
}

/** What the agent itself holds: its connections against their limit (a share of the fds), and its audit log. */
function agentSide(ctx: CommandContext): Record<string, unknown> {
  const c = ctx.agent.connections();
  return {
    connections: c.open,
    connectionLimit: c.limit,
    limitedBy: c.limitedBy,
    ...(c.fdLimit !== undefined ? { fdLimit: c.fdLimit } : {}),
    auditLog: ctx.settings.audit === false ? 'off ("audit": false)' : ctx.settings.audit,
  };
}

export default definePlugin({
  name: 'process',
  summary: 'The process at a glance: identity, stack, event loop, handles, environment, modules, report, GC',
  setup: {
    main(ctx) {
      gc.start();
      ctx.onUnload(() => gc.stop());
      // Read by the worker through Runtime.evaluate, so it answers while the thread spins.
      // threadCpuUsage() measures the thread it runs on: it has to be called here.
      const api = {
        threadCpu: (): { user: number; system: number } | null => {
          const threadCpuUsage = (process as { threadCpuUsage?: () => { user: number; system: number } }).threadCpuUsage;
          try {
            return typeof threadCpuUsage === 'function' ? threadCpuUsage.call(process) : null;
          } catch {
            // Then /proc answers for it; the memory read beside it must not fail with it.
            return null;
          }
        },
      };
      const key = Symbol.for(GLOBAL_KEY);
      Object.defineProperty(globalThis, key, { value: api, configurable: true, enumerable: false });
      ctx.onUnload(() => {
        delete (globalThis as Record<symbol, unknown>)[key];
      });
    },
  },
  commands: {
    info: command({
      summary: 'pid, title, argv, versions, uptime, memory and CPU (the process, its main thread, the agent worker)',
      thread: 'worker',
      async run(_args, ctx) {
        const heartbeat = ctx.mainThread.heartbeatAgeMs();
        const side = await mainSide(ctx);
        const { ownThreadCpu } = require('./cpu') as typeof import('./cpu');
        const mainCpu = mainThreadCpu(side);
        const workerCpu = ownThreadCpu();
        // The process total last, so it is never below the threads' figures read before it.
        const cpu = process.cpuUsage();
        const uptime = process.uptime();
        return {
          pid: process.pid,
          ppid: process.ppid,
          title: process.title,
          argv: ctx.app.argv,
          execArgv: ctx.app.execArgv,
          execPath: ctx.app.execPath,
          cwd: process.cwd(),
          user: os.userInfo().username,
          hostname: os.hostname(),
          platform: `${process.platform} ${process.arch} ${os.release()}`,
          versions: { node: process.versions.node, v8: process.versions.v8, uv: process.versions.uv, openssl: process.versions.openssl },
          uptimeSeconds: round(uptime, 1),
          agentUptimeSeconds: round((Date.now() - ctx.app.agentStartedAt) / 1000, 1),
          mainThread: ctx.mainThread.stuck() ? `not turning its event loop for ${heartbeat} ms` : 'event loop turning',
          memory: { processRssMB: mb(process.memoryUsage.rss()), mainThread: mainMemory(side), agentWorker: agentWorkerMemory() },
          agent: agentSide(ctx),
          cpu: {
            userSeconds: round(cpu.user / 1e6),
            systemSeconds: round(cpu.system / 1e6),
            averagePercent: round(((cpu.user + cpu.system) / 1e6 / Math.max(uptime, 0.001)) * 100, 1),
            cores: os.availableParallelism(),
            // The total's split by thread, each figure naming its source; a table keeps it to three lines.
            threads: [
              { thread: 'main', ...mainCpu },
              { thread: 'agent worker', ...workerCpu },
            ],
          },
        };
      },
    }),

    stack: command({
      summary: "The main thread's JavaScript stack right now (works while the event loop is blocked)",
      thread: 'worker',
      args: {
        limit: arg.integer({ summary: 'show at most this many frames', default: 50, min: 1, max: 1000 }),
        appOnly: arg.boolean({ summary: 'hide node: internals and node_modules frames' }),
      },
      async run(args, ctx) {
        const stack = await ctx.mainThread.captureStack();
        if (stack.state === 'idle') {
          return { state: 'idle', message: 'the event loop is idle: no JavaScript is running on the main thread', heartbeatAgeMs: stack.heartbeatAgeMs };
        }
        if (stack.state === 'blocked') {
          return {
            state: 'blocked',
            message: `main thread blocked outside JavaScript for ${stack.blockedForMs} ms (a synchronous call into native code: execSync, a sync fs call, a native addon); the inspector cannot interrupt it`,
            blockedForMs: stack.blockedForMs,
          };
        }
        const frames = stack.frames
          .filter((f) => !args.appOnly || isAppFrame(f.file))
          .slice(0, args.limit)
          .map((f) => ({ function: f.functionName, file: f.file, line: f.line, column: f.column, app: isAppFrame(f.file) }));
        return {
          state: 'running',
          busyForMs: ctx.mainThread.stuck() ? ctx.mainThread.heartbeatAgeMs() : 0,
          capturedInMs: stack.capturedInMs,
          frames,
        };
      },
    }),

    loop: command({
      summary: 'Event-loop delay percentiles and utilisation, sampled over a short window',
      thread: 'main',
      args: {
        duration: arg.duration({ summary: 'how long to sample', default: '1s', min: '20ms', max: '60s' }),
      },
      async run(args, ctx) {
        const { monitorEventLoopDelay } = require('node:perf_hooks') as typeof import('node:perf_hooks');
        const histogram = monitorEventLoopDelay({ resolution: 10 });
        const eluStart = performance.eventLoopUtilization();
        const started = performance.now();
        histogram.enable();
        try {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, args.duration);
            timer.unref();
            ctx.signal.addEventListener('abort', () => {
              clearTimeout(timer);
              resolve();
            }, { once: true });
          });
        } finally {
          histogram.disable();
        }
        const elu = performance.eventLoopUtilization(eluStart);
        const ms = (ns: number) => round(ns / 1e6);
        if (histogram.count === 0) {
          return { sampledMs: 0, note: 'cancelled before the first sample', utilisationSinceStart: round(performance.eventLoopUtilization().utilization, 3) };
        }
        return {
          sampledMs: Math.round(performance.now() - started),
          ...(ctx.signal.aborted ? { cancelled: true } : {}),
          delayMs: {
            min: ms(histogram.min),
            mean: ms(histogram.mean),
            p50: ms(histogram.percentile(50)),
            p90: ms(histogram.percentile(90)),
            p99: ms(histogram.percentile(99)),
            max: ms(histogram.max),
          },
          utilisation: round(elu.utilization, 3),
          utilisationSinceStart: round(performance.eventLoopUtilization().utilization, 3),
        };
      },
    }),

    handles: command({
      summary: 'Active handles and requests keeping the event loop alive (servers, sockets, timers, ...)',
      thread: 'main',
      run() {
        const counts = new Map<string, number>();
        for (const type of process.getActiveResourcesInfo()) counts.set(type, (counts.get(type) ?? 0) + 1);
        const details: Record<string, unknown>[] = [];
        // _getActiveHandles is undocumented; used only for details, and only if present.
        const getHandles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles;
        for (const h of typeof getHandles === 'function' ? getHandles.call(process) : []) {
          const o = h as Record<string, any>;
          const type = o?.constructor?.name ?? typeof h;
          if (type === 'Server' && typeof o.address === 'function') {
            const a = o.address();
            details.push({ type: 'server', address: typeof a === 'string' ? a : a ? `${a.address}:${a.port}` : '(not listening)', connections: o._connections ?? null });
          } else if (type === 'Socket' && o.remoteAddress) {
            details.push({ type: 'socket', local: `${o.localAddress}:${o.localPort}`, remote: `${o.remoteAddress}:${o.remotePort}`, bytesRead: o.bytesRead, bytesWritten: o.bytesWritten });
          } else if (type === 'ChildProcess') {
            details.push({ type: 'child process', pid: o.pid, command: o.spawnfile });
          }
        }
        return {
          total: [...counts.values()].reduce((a, b) => a + b, 0),
          byType: [...counts].sort((a, b) => b[1] - a[1]).map(([type, count]) => ({ type, count })),
          details,
        };
      },
    }),

    env: command({
      summary: 'Environment variables, with secret-looking values redacted',
      thread: 'main',
      args: {
        filter: arg.string({ summary: 'only keys containing this text (case-insensitive)', positional: true }),
      },
      run(args, ctx) {
        const secret = secretMatcher(ctx.settings.redact);
        const needle = args.filter?.toLowerCase();
        const vars: Record<string, string> = {};
        let redacted = 0;
        for (const key of Object.keys(process.env).sort()) {
          if (needle && !key.toLowerCase().includes(needle)) continue;
          const value = process.env[key] ?? '';
          if (secret(key)) {
            vars[key] = redactedValue(value);
            redacted++;
          } else vars[key] = redactUrlPassword(value);
        }
        return { count: Object.keys(vars).length, redacted, vars };
      },
    }),

    modules: command({
      summary: 'Loaded modules (CommonJS and ES) grouped by package, with versions',
      thread: 'worker',
      args: {
        files: arg.boolean({ summary: 'list every loaded file, not just packages' }),
      },
      async run(args, ctx) {
        const scripts: { url: string; isModule?: boolean }[] = [];
        const off = ctx.inspector.on('Debugger.scriptParsed', (p: { url: string; isModule?: boolean }) => scripts.push({ url: p.url, isModule: p.isModule }));
        try {
          // Enabling the debugger replays a scriptParsed event for every script already loaded.
          await ctx.inspector.withDomains(['Debugger'], async () => {});
        } finally {
          off();
        }
        // Loaded when first asked for: an idle agent keeps only what it needs in the app.
        const { classify, summarisePackages } = require('./modules') as typeof import('./modules');
        const { files, builtins } = classify(scripts);
        const packages = summarisePackages(files);
        const result: Record<string, unknown> = {
          files: files.length,
          appFiles: files.filter((f) => !f.package).length,
          esm: files.filter((f) => f.kind === 'esm').length,
          cjs: files.filter((f) => f.kind === 'cjs').length,
          nodeInternals: builtins,
          packages: packages.map(({ name, version, files: n }) => ({ name, version, files: n })),
        };
        if (args.files) result.list = files;
        return result;
      },
    }),

    report: command({
      summary: "Node's diagnostic report (JSON), saved as an artefact",
      thread: 'main',
      artefact: true,
      async run(_args, ctx) {
        const report = process.report.getReport() as unknown as Record<string, any>;
        const file = await ctx.artefacts.writeFile('report.json', JSON.stringify(report, null, 2));
        const header = report.header ?? {};
        return {
          file,
          nodejsVersion: header.nodejsVersion,
          event: header.event,
          libuvHandles: Array.isArray(report.libuv) ? report.libuv.length : undefined,
          heapUsedMB: report.javascriptHeap ? mb(report.javascriptHeap.usedMemory ?? 0) : undefined,
          resourceUsage: report.resourceUsage ? { userCpuSeconds: report.resourceUsage.userCpuSeconds, kernelCpuSeconds: report.resourceUsage.kernelCpuSeconds, maxRssMB: mb(report.resourceUsage.maxRss ?? 0) } : undefined,
        };
      },
    }),

    gc: command({
      summary: 'Recent garbage-collection pauses of the main thread, and totals since the agent started',
      thread: 'main',
      changes: true,
      args: {
        limit: arg.integer({ summary: 'show at most this many recent pauses', default: 20, min: 1, max: 100 }),
      },
      run(args) {
        if (!gc.observing) throw new IspyError('ISPY_ERR_UNAVAILABLE', 'GC observation is not running in this process');
        return gc.snapshot(args.limit);
      },
    }),
  },
});
