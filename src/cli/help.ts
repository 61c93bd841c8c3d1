// `help` and `plugins`, written from the agent's catalogue alone: the declaration a
// plugin makes once is what the operator reads here, so help can never drift from what
// the agent accepts.

import { flagName, formatDuration, type ArgInfo, type CommandInfo, type PluginInfo } from '../protocol/index';
import { formatTable } from './format';
import { commandUsage, type Catalogue } from './line';
import { style as makeStyle, type Style } from './style';

const SHELL_HELP: Record<string, string> = {
  plugins: 'list the plugins this process has loaded (`plugins --json` for the raw catalogue)',
  help: 'help [plugin [command]]: what a plugin or command does and the arguments it takes',
  use: 'use <plugin>: leave the plugin name out of the following lines; `use` alone goes back',
  exit: 'leave the shell (also quit, Ctrl-D, or Ctrl-C twice at an empty prompt)',
  quit: 'leave the shell (same as exit)',
};

function argType(a: ArgInfo): string {
  return a.type === 'enum' ? (a.choices ?? []).join('|') : a.type;
}

function argNotes(a: ArgInfo): string {
  const notes: string[] = [];
  if (a.required) notes.push('required');
  if (a.default !== undefined && !(a.type === 'boolean' && a.default === false)) notes.push(`default ${a.default}`);
  const unit = (n: number) => (a.type === 'duration' ? formatDuration(n) : String(n));
  if (a.min !== undefined && a.max !== undefined) notes.push(`${unit(a.min)}–${unit(a.max)}`);
  else if (a.min !== undefined) notes.push(`at least ${unit(a.min)}`);
  else if (a.max !== undefined) notes.push(`at most ${unit(a.max)}`);
  return notes.length ? ` (${notes.join(', ')})` : '';
}

function argName(a: ArgInfo): string {
  if (a.positional) return `<${a.name}>`;
  const short = a.short ? `-${a.short}, ` : '';
  return a.type === 'boolean' ? `${short}--${flagName(a.name)}` : `${short}--${flagName(a.name)} <${argType(a)}>`;
}

export function commandHelp(plugin: PluginInfo, command: CommandInfo, color = false): string {
  const s = makeStyle(color);
  const lines = [`${s.head('usage:')} ${commandUsage(plugin.name, command)}`, '', command.summary];
  const rows: [string, string][] = command.args.map((a) => [argName(a), `${a.summary}${argNotes(a)}`]);
  if (command.artefact && !command.args.some((a) => a.short === 'o' || a.name === 'output')) {
    rows.push(['-o <file>', 'save the file it produces here (written 0600); without it, the agent reports where it wrote it']);
  }
  rows.push(['--json', 'print the raw JSON result']);
  const width = Math.max(...rows.map(([n]) => n.length));
  lines.push('', s.head('arguments:'));
  for (const [name, text] of rows) lines.push(`  ${s.key(name.padEnd(width))}  ${text}`);
  const notes: string[] = [];
  if (command.stream) notes.push('streams results as they come, until it ends or you press Ctrl-C');
  notes.push(command.thread === 'worker' ? "runs in the agent's worker: answers even while the app is blocked" : "runs on the app's main thread");
  lines.push('', ...notes.map((n) => s.dim(n)));
  return lines.join('\n');
}

export function pluginHelp(plugin: PluginInfo, color = false): string {
  const s = makeStyle(color);
  const lines = [`${s.head(plugin.name)}: ${plugin.summary}`, ''];
  const width = Math.max(...plugin.commands.map((c) => c.name.length));
  for (const c of plugin.commands) lines.push(`  ${s.key(c.name.padEnd(width))}  ${c.summary}${c.stream ? s.dim(' (streams)') : ''}`);
  lines.push('', s.dim(`help ${plugin.name} <command> shows a command's arguments`));
  return lines.join('\n');
}

function failedLines(cat: Catalogue, s: Style): string[] {
  return cat.failedPlugins.map((f) => s.warn(`  ${f.name} (${f.source}) failed to load: ${f.error.message}`));
}

export function overviewHelp(cat: Catalogue, current: PluginInfo | undefined, color = false): string {
  const s = makeStyle(color);
  const lines = [
    `A line is ${s.key('<plugin> <command> [positional…] [--flag value…]')}${current ? ` (after use ${current.name}: ${s.key('<command> …')})` : ''}.`,
    `Add ${s.key('--json')} for raw JSON, ${s.key('-o FILE')} to save a file a command produces.`,
    '',
    s.head('plugins:'),
  ];
  const width = Math.max(0, ...cat.plugins.map((p) => p.name.length));
  for (const p of cat.plugins) lines.push(`  ${s.key(p.name.padEnd(width))}  ${p.summary}`);
  lines.push(...failedLines(cat, s));
  if (current) lines.push('', pluginHelp(current, color));
  lines.push('', s.head('shell:'));
  const w = Math.max(...Object.keys(SHELL_HELP).map((k) => k.length));
  for (const [word, text] of Object.entries(SHELL_HELP)) lines.push(`  ${s.key(word.padEnd(w))}  ${text}`);
  lines.push('', s.dim('Tab completes plugins, commands and flags; Ctrl-C cancels the running command.'));
  return lines.join('\n');
}

export function shellWordHelp(word: string): string {
  return `${word}: ${SHELL_HELP[word] ?? ''}`;
}

export function pluginsTable(cat: Catalogue, color = false): string {
  const rows = cat.plugins.map((p) => ({ plugin: p.name, commands: p.commands.map((c) => c.name).join(' '), source: p.source, summary: p.summary }));
  const out = [rows.length ? formatTable(rows, { color }) : '(no plugins loaded)'];
  out.push(...failedLines(cat, makeStyle(color)));
  return out.join('\n');
}
