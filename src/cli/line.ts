// One line of the command vocabulary, as typed in the shell, given with `run -c` or read
// from a script: `<plugin> <command> [positional…] [--flag value…]`, or a shell word
// (`plugins`, `help`, `use`, `exit`). Parsed against the agent's own catalogue with the
// protocol's tokenize/parseWords/coerceArgs, so a bad flag is caught here, before it
// leaves the operator's machine, with the same wording the agent would use.
//
// Two flags belong to the client, not to any command, and are taken off the line first:
// `--json` (print raw JSON) and `-o FILE` (save the command's artefact here).

import {
  IspyError,
  coerceArgs,
  flagName,
  parseWords,
  tokenize,
  usageLine,
  type CommandInfo,
  type FailedPlugin,
  type PluginInfo,
} from '../protocol/index';
import { didYouMean } from './suggest';

/** What a line is parsed against: the plugins an agent announced in its welcome. */
export interface Catalogue {
  plugins: PluginInfo[];
  failedPlugins: FailedPlugin[];
}

export const SHELL_WORDS = ['plugins', 'help', 'use', 'exit', 'quit'] as const;

export interface CallLine {
  kind: 'call';
  text: string;
  plugin: PluginInfo;
  command: CommandInfo;
  /** Checked and converted against the declaration, defaults filled in. */
  args: Record<string, unknown>;
  json: boolean;
  /** `-o FILE`: save the artefact here instead of only reporting where the agent wrote it. */
  output?: string;
}

export type Line =
  | { kind: 'empty' }
  | { kind: 'plugins'; json: boolean }
  | { kind: 'help'; plugin?: PluginInfo; command?: CommandInfo; word?: string }
  | { kind: 'use'; plugin?: PluginInfo }
  | { kind: 'exit' }
  | CallLine;

/** `process stack [--limit <integer>] [--app-only]`, plus `[-o <file>]` when it produces a file. */
export function commandUsage(plugin: string, command: CommandInfo): string {
  const base = usageLine(`${plugin} ${command.name}`, command.args);
  return takesClientOutput(command) ? `${base} [-o <file>]` : base;
}

/** The command claims -o/--output itself, so the client leaves it alone. */
function ownsFlag(command: CommandInfo, long: string, short?: string): boolean {
  return command.args.some((a) => !a.positional && (flagName(a.name) === long || (short !== undefined && a.short === short)));
}

function takesClientOutput(command: CommandInfo): boolean {
  return command.artefact && !ownsFlag(command, 'output', 'o');
}

function usageError(message: string, usage?: string): IspyError {
  return new IspyError(usage ? 'ISPY_ERR_BAD_ARGS' : 'ISPY_ERR_USAGE', message, usage ? { details: { usage } } : undefined);
}

/** The usage a line error carries, if any (shown on its own line under the message). */
export function errorUsage(err: unknown): string | undefined {
  const usage = (err as IspyError | undefined)?.details?.usage;
  return typeof usage === 'string' ? usage : undefined;
}

function findPlugin(cat: Catalogue, name: string): PluginInfo | undefined {
  return cat.plugins.find((p) => p.name === name);
}

function unknownPlugin(cat: Catalogue, name: string, current?: PluginInfo): IspyError {
  const failed = cat.failedPlugins.find((f) => f.name === name);
  if (failed) {
    return new IspyError('ISPY_ERR_UNKNOWN_PLUGIN', `plugin "${name}" failed to load in this process (${failed.source}): ${failed.error.message}`);
  }
  // A bare command name ("info") most likely meant that command of some plugin.
  const owner = cat.plugins.find((p) => p.commands.some((c) => c.name === name));
  const candidates = [...cat.plugins.map((p) => p.name), ...SHELL_WORDS, ...(current?.commands.map((c) => c.name) ?? [])];
  const hint =
    (owner && owner !== current ? `; did you mean "${owner.name} ${name}"?` : '') ||
    didYouMean(name, candidates) ||
    `; type \`help\` to list ${current ? `${current.name} commands and ` : ''}plugins`;
  const what = current ? `command or plugin "${name}"` : `plugin "${name}"`;
  return new IspyError(current ? 'ISPY_ERR_UNKNOWN_COMMAND' : 'ISPY_ERR_UNKNOWN_PLUGIN', `unknown ${what}${hint}`);
}

function unknownCommand(plugin: PluginInfo, name: string): IspyError {
  const names = plugin.commands.map((c) => c.name);
  const hint = didYouMean(name, names);
  return new IspyError(
    'ISPY_ERR_UNKNOWN_COMMAND',
    `plugin ${plugin.name} has no command "${name}"${hint || `; its commands: ${names.join(', ')}`}`,
  );
}

/** Takes `--json` and `-o FILE` off the words (unless the command declares them itself). */
function takeClientFlags(words: string[], command: CommandInfo, usage: string, cat: Catalogue, pluginName: string): { rest: string[]; json: boolean; output?: string } {
  const rest: string[] = [];
  let json = false;
  let output: string | undefined;
  const claimsJson = ownsFlag(command, 'json');
  const claimsOutput = ownsFlag(command, 'output', 'o');
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === '--') {
      rest.push(...words.slice(i));
      break;
    }
    if (w === '--json' && !claimsJson) {
      json = true;
      continue;
    }
    const m = claimsOutput ? null : /^(?:-o|--output)(?:=(.*))?$/.exec(w);
    if (m) {
      if (!command.artefact) {
        const example = cat.plugins.flatMap((p) => p.commands.filter((c) => c.artefact).map((c) => `${p.name} ${c.name}`))[0];
        throw usageError(`${pluginName} ${command.name} produces no file to save; -o FILE applies to commands that do${example ? `, such as ${example}` : ''}`, usage);
      }
      const value = m[1] ?? words[++i];
      if (value === undefined || value === '') throw usageError(`${w} needs a file name`, usage);
      output = value;
      continue;
    }
    rest.push(w);
  }
  return output === undefined ? { rest, json } : { rest, json, output };
}

/** Re-throws a protocol BAD_ARGS error with its "(usage: …)" tail moved into details.usage. */
function withUsage(err: unknown, usage: string): never {
  if (err instanceof IspyError && err.code === 'ISPY_ERR_BAD_ARGS') {
    const tail = ` (usage: ${usage})`;
    const message = err.message.endsWith(tail) ? err.message.slice(0, -tail.length) : err.message;
    throw new IspyError('ISPY_ERR_BAD_ARGS', message, { details: { ...err.details, usage } });
  }
  throw err;
}

function parseCall(text: string, cat: Catalogue, plugin: PluginInfo, command: CommandInfo, words: string[]): CallLine {
  const usage = commandUsage(plugin.name, command);
  const { rest, json, output } = takeClientFlags(words, command, usage, cat, plugin.name);
  let args: Record<string, unknown>;
  try {
    args = coerceArgs(command.args, parseWords(command.args, rest, usage), usage);
  } catch (err) {
    withUsage(err, usage);
  }
  // Undefined optional values would only be dropped by JSON anyway.
  for (const key of Object.keys(args)) if (args[key] === undefined) delete args[key];
  const line: CallLine = { kind: 'call', text, plugin, command, args, json };
  if (output !== undefined) line.output = output;
  return line;
}

/**
 * Parses one line. `current` is the plugin chosen with `use`. Throws IspyError for
 * anything a person typed wrong (code USAGE, UNKNOWN_PLUGIN, UNKNOWN_COMMAND or
 * BAD_ARGS, the latter with details.usage), each naming what would have been right.
 */
export function parseLine(text: string, cat: Catalogue, current?: PluginInfo): Line {
  const words = tokenize(text);
  const [first, ...rest] = words;
  if (first === undefined) return { kind: 'empty' };
  switch (first) {
    case 'exit':
    case 'quit':
      if (rest.length) throw usageError(`${first} takes no arguments`);
      return { kind: 'exit' };
    case 'plugins': {
      const json = rest.length === 1 && rest[0] === '--json';
      if (rest.length && !json) throw usageError('usage: plugins [--json]');
      return { kind: 'plugins', json };
    }
    case 'use': {
      if (rest.length > 1) throw usageError('usage: use <plugin> (or `use` alone to go back to naming plugins)');
      const name = rest[0];
      if (name === undefined || name === '..' || name === '/') return { kind: 'use' };
      const plugin = findPlugin(cat, name);
      if (!plugin) throw unknownPlugin(cat, name);
      return { kind: 'use', plugin };
    }
    case 'help': {
      if (rest.length > 2) throw usageError('usage: help [plugin [command]]');
      const [a, b] = rest;
      if (a === undefined) return { kind: 'help' };
      const plugin = findPlugin(cat, a);
      if (!plugin) {
        if (b === undefined && current) {
          const command = current.commands.find((c) => c.name === a);
          if (command) return { kind: 'help', plugin: current, command };
        }
        if (b === undefined && (SHELL_WORDS as readonly string[]).includes(a)) return { kind: 'help', word: a };
        throw unknownPlugin(cat, a, current);
      }
      if (b === undefined) return { kind: 'help', plugin };
      const command = plugin.commands.find((c) => c.name === b);
      if (!command) throw unknownCommand(plugin, b);
      return { kind: 'help', plugin, command };
    }
  }
  if (current) {
    const command = current.commands.find((c) => c.name === first);
    if (command) return parseCall(text, cat, current, command, rest);
  }
  const plugin = findPlugin(cat, first);
  if (!plugin) throw unknownPlugin(cat, first, current);
  const name = rest[0];
  if (name === undefined || name.startsWith('-')) {
    throw usageError(`${plugin.name} needs a command: ${plugin.commands.map((c) => c.name).join(', ')} (or \`use ${plugin.name}\` to leave the plugin name out)`);
  }
  const command = plugin.commands.find((c) => c.name === name);
  if (!command) throw unknownCommand(plugin, name);
  return parseCall(text, cat, plugin, command, rest.slice(1));
}
