// `ispy connect <target>`: the shell on one process.
//
// At a terminal it is interactive: a prompt naming the process (`node 4242 process>`),
// Tab completion and `help` from the agent's catalogue, persistent history, and Ctrl-C
// that cancels the running command instead of killing the client. With stdin piped it
// runs each line in order and exits with the worst status (0 ok, 1 failed, 2 usage).
//
// Lines go through readline's async iterator one at a time, so a line typed (or piped)
// while a command runs waits its turn rather than racing it on the same connection.

import * as readline from 'node:readline';
import type { Client, PluginInfo } from '../client/index';
import { complete } from './complete';
import { artefactLines, execute } from './execute';
import { formatItem, formatValue } from './format';
import { commandHelp, overviewHelp, pluginHelp, pluginsTable, shellWordHelp } from './help';
import { historyFile, loadHistory, saveHistory, HISTORY_LIMIT } from './history';
import { parseLine, type CallLine } from './line';
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, errorJson, errorLines, goneMessage } from './report';
import { styleFor, type Style } from './style';

export interface ShellIO {
  input: NodeJS.ReadableStream & { isTTY?: boolean };
  output: NodeJS.WriteStream;
  error: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
}

export interface ShellOptions {
  /** Per-line limit; none by default (Ctrl-C is the limit at a terminal). */
  timeoutMs?: number;
}

interface Running {
  controller: AbortController;
  cancelRequested: boolean;
  /** Stops waiting for a call the agent is slow to cancel (a second Ctrl-C). */
  abandon(): void;
}

type Next = 'next' | 'exit' | 'gone';

/** process.title is often the full path of node; a prompt only needs its name. */
function shortTitle(title: string): string {
  return title.includes('/') ? title.slice(title.lastIndexOf('/') + 1) : title;
}

export class Shell {
  private current: PluginInfo | undefined;
  private worst = EXIT_OK;
  private gone = false;
  private leaving = false;
  private running: Running | undefined;
  private progressShown = false;
  private printedResult = false;
  private rl: readline.Interface | undefined;
  private sigintArmed = false;
  private readonly out: Style;
  private readonly err: Style;
  readonly interactive: boolean;

  constructor(
    private readonly client: Client,
    private readonly io: ShellIO,
    private readonly opts: ShellOptions = {},
  ) {
    this.interactive = io.input.isTTY === true;
    this.out = styleFor(io.output, io.env);
    this.err = styleFor(io.error, io.env);
  }

  get prompt(): string {
    const w = this.client.welcome;
    const plugin = this.current ? ` ${this.out.key(this.current.name)}` : '';
    return `${shortTitle(w.title)} ${w.pid}${plugin}> `;
  }

  private print(text: string): void {
    this.clearProgress();
    this.io.output.write(`${text}\n`);
  }

  private complain(lines: string[]): void {
    this.clearProgress();
    this.io.error.write(`${lines.join('\n')}\n`);
  }

  private showProgress(u: { done?: number; total?: number; message?: string }): void {
    // A line rewritten in place only makes sense on a terminal; piped output stays clean.
    if (!this.io.output.isTTY) return;
    const parts: string[] = [];
    if (u.message) parts.push(u.message);
    if (u.done !== undefined && u.total) parts.push(`${u.done}/${u.total} (${Math.floor((u.done / u.total) * 100)}%)`);
    else if (u.done !== undefined) parts.push(String(u.done));
    const cols = this.io.output.columns || 80;
    this.io.output.write(`\r\x1b[K${this.out.dim(parts.join(' ').slice(0, cols - 1))}`);
    this.progressShown = true;
  }

  private clearProgress(): void {
    if (!this.progressShown) return;
    this.io.output.write('\r\x1b[K');
    this.progressShown = false;
  }

  private fail(status: number): void {
    this.worst = Math.max(this.worst, status);
  }

  private agentGone(): void {
    if (this.gone) return;
    this.gone = true;
    this.fail(EXIT_FAILED);
    this.complain([this.err.bad(goneMessage(this.client))]);
  }

  /** Runs one line; tells the loop whether to go on. */
  async handle(text: string): Promise<Next> {
    if (this.gone) return 'gone';
    let line;
    try {
      line = parseLine(text, this.client.welcome, this.current);
    } catch (err) {
      this.complain(errorLines(err, this.err));
      this.fail(EXIT_USAGE);
      return 'next';
    }
    const color = this.out.enabled;
    switch (line.kind) {
      case 'empty':
        return 'next';
      case 'exit':
        return 'exit';
      case 'plugins':
        this.separate(line.json);
        this.print(line.json ? JSON.stringify({ plugins: this.client.plugins, failedPlugins: this.client.welcome.failedPlugins }) : pluginsTable(this.client.welcome, color));
        return 'next';
      case 'help':
        this.separate();
        if (line.command && line.plugin) this.print(commandHelp(line.plugin, line.command, color));
        else if (line.plugin) this.print(pluginHelp(line.plugin, color));
        else if (line.word) this.print(shellWordHelp(line.word));
        else this.print(overviewHelp(this.client.welcome, this.current, color));
        return 'next';
      case 'use':
        this.current = line.plugin;
        this.rl?.setPrompt(this.prompt);
        return 'next';
      case 'call':
        return this.call(line);
    }
  }

  /**
   * A blank line between results when lines are piped, so consecutive tables stay apart.
   * Never before JSON: `--json` output stays one value per line for jq.
   */
  private separate(json = false): void {
    if (!json && !this.interactive && this.printedResult) this.io.output.write('\n');
    this.printedResult = true;
  }

  private async call(line: CallLine): Promise<Next> {
    const controller = new AbortController();
    let abandon!: () => void;
    const abandoned = new Promise<'abandoned'>((resolve) => (abandon = () => resolve('abandoned')));
    const running: Running = { controller, cancelRequested: false, abandon };
    this.running = running;
    const color = this.out.enabled;
    let streamed = false;
    const execution = execute(this.client, line, {
      signal: controller.signal,
      ...(this.opts.timeoutMs !== undefined ? { timeoutMs: this.opts.timeoutMs } : {}),
      ...(line.output !== undefined ? { outputFile: line.output } : {}),
      onData: (item) => {
        if (!streamed) this.separate(line.json);
        streamed = true;
        this.print(line.json ? JSON.stringify(item) : formatItem(item, { color }));
      },
      onProgress: (u) => this.showProgress(u),
    });
    const outcome = await Promise.race([execution, abandoned]);
    this.running = undefined;
    this.clearProgress();
    if (outcome === 'abandoned') {
      this.complain([this.err.warn('stopped waiting for it (the cancel was sent; a late answer is ignored)')]);
      return 'next';
    }
    if (outcome.ok) {
      const notes = artefactLines(outcome.artefacts);
      if (line.json) {
        // A stream's items were the output; its closing null is not worth a line.
        if (outcome.value !== undefined && !(streamed && outcome.value === null)) {
          if (!streamed) this.separate(true);
          this.print(JSON.stringify(outcome.value));
        }
        if (notes.length) this.complain(notes.map((n) => this.err.dim(n)));
      } else {
        const text = formatValue(outcome.value, { color });
        if (text || notes.length) {
          if (!streamed) this.separate();
          if (text) this.print(text);
          for (const n of notes) this.print(this.out.dim(n));
        }
      }
      return 'next';
    }
    const error = outcome.error;
    if (error.code === 'ISPY_ERR_CANCELLED' && running.cancelRequested) {
      this.complain([this.err.warn('cancelled')]);
      if (!this.interactive) this.fail(EXIT_FAILED);
      return 'next';
    }
    if (error.code === 'ISPY_ERR_DISCONNECTED' || !this.client.isOpen) {
      this.agentGone();
      return 'gone';
    }
    this.fail(EXIT_FAILED);
    if (line.json) this.print(JSON.stringify({ error: errorJson(error) }));
    else this.complain(errorLines(error, this.err));
    return 'next';
  }

  private onSigint(rl: readline.Interface): void {
    const running = this.running;
    if (running) {
      if (!running.cancelRequested) {
        running.cancelRequested = true;
        running.controller.abort();
        this.clearProgress();
        this.io.output.write(this.out.dim('^C cancelling… (Ctrl-C again to stop waiting)\n'));
      } else running.abandon();
      return;
    }
    if (rl.line.length > 0) {
      // Like a shell: Ctrl-C discards what was typed and offers a fresh prompt.
      rl.write('', { ctrl: true, name: 'u' });
      this.io.output.write('^C\n');
      this.sigintArmed = false;
      rl.prompt();
      return;
    }
    if (this.sigintArmed) {
      this.io.output.write('\n');
      this.leaving = true;
      rl.close();
      return;
    }
    this.sigintArmed = true;
    this.io.output.write(`^C\n${this.out.dim('(press Ctrl-C again, Ctrl-D or type exit to leave)')}\n`);
    rl.prompt();
  }

  private banner(): void {
    const w = this.client.welcome;
    const s = this.out;
    this.print(
      `connected to ${s.head(`${shortTitle(w.title)} ${w.pid}`)} on ${w.hostname} (node ${w.node.replace(/^v/, '')}, ispy ${w.ispy}, plugins: ${w.plugins.map((p) => p.name).join(' ') || 'none'})\n` +
        s.dim('type help for commands; Tab completes; Ctrl-C cancels a command; Ctrl-D leaves'),
    );
    for (const f of w.failedPlugins) this.complain([this.err.warn(`plugin ${f.name} (${f.source}) failed to load: ${f.error.message}`)]);
  }

  /** Reads lines until exit, end of input or the agent going away; resolves with the exit status. */
  async run(): Promise<number> {
    const history = this.interactive ? historyFile(this.io.env) : undefined;
    const rl = readline.createInterface({
      input: this.io.input,
      output: this.interactive ? this.io.output : undefined,
      terminal: this.interactive,
      prompt: this.prompt,
      crlfDelay: Infinity,
      ...(this.interactive
        ? {
            completer: (l: string) => complete(l, this.client.welcome, this.current),
            history: loadHistory(history!),
            historySize: HISTORY_LIMIT,
            removeHistoryDuplicates: true,
          }
        : {}),
    });
    this.rl = rl;
    if (history) rl.on('history', (h: string[]) => saveHistory(history, h));
    if (this.interactive) rl.on('SIGINT', () => this.onSigint(rl));
    const onClose = () => {
      if (this.leaving) return;
      if (this.interactive && !this.running) this.io.output.write('\n');
      this.agentGone();
      rl.close();
    };
    this.client.on('close', onClose);
    try {
      if (this.interactive) {
        this.banner();
        rl.prompt();
      }
      let ended: Next | 'eof' = 'eof';
      for await (const text of rl) {
        this.sigintArmed = false;
        ended = await this.handle(text);
        if (ended !== 'next') break;
        ended = 'eof';
        if (this.interactive) rl.prompt();
      }
      // Ctrl-D leaves the cursor after the prompt; end the line like a shell does.
      if (this.interactive && ended === 'eof' && !this.gone && !this.leaving) this.io.output.write('\n');
    } finally {
      this.leaving = true;
      this.client.off('close', onClose);
      rl.close();
      await this.client.close();
    }
    // At a terminal, typing mistakes are part of the conversation, not an outcome.
    if (this.interactive) return this.gone ? EXIT_FAILED : EXIT_OK;
    return this.worst;
  }
}
