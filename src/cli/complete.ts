// Tab completion for the shell, from the agent's catalogue: plugin names and shell words
// first, then a plugin's commands, then a command's --flags (and an enum flag's values).
// Works on whitespace-split words rather than tokenize(), because the line being typed
// may well hold an unclosed quote.

import { flagName, type CommandInfo, type PluginInfo } from '../protocol/index';
import { SHELL_WORDS, type Catalogue } from './line';

function commandFlags(command: CommandInfo, used: readonly string[]): string[] {
  const flags = command.args.filter((a) => !a.positional).map((a) => `--${flagName(a.name)}`);
  if (command.artefact && !flags.includes('--output')) flags.push('-o');
  if (!flags.includes('--json')) flags.push('--json');
  return flags.filter((f) => !used.includes(f));
}

function argsCompletion(command: CommandInfo, typed: readonly string[], last: string): string[] {
  const prev = typed[typed.length - 1];
  if (prev?.startsWith('--')) {
    const spec = command.args.find((a) => !a.positional && `--${flagName(a.name)}` === prev);
    if (spec?.type === 'enum') return [...(spec.choices ?? [])];
    // The word being typed is this flag's value: nothing sensible to offer.
    if (spec && spec.type !== 'boolean') return [];
  }
  if (prev === '-o') return [];
  if (last === '' || last.startsWith('-')) return commandFlags(command, typed);
  return [];
}

/**
 * The readline completer: `[candidates, word being completed]`. A single match gets a
 * trailing space so the next word can be typed straight away.
 */
export function complete(line: string, cat: Catalogue, current?: PluginInfo): [string[], string] {
  const words = line.trimStart().split(/\s+/);
  const last = words.pop() ?? '';
  const findPlugin = (name: string | undefined) => cat.plugins.find((p) => p.name === name);
  let candidates: string[] = [];
  const [first, second] = words;
  if (first === undefined) {
    candidates = [...(current?.commands.map((c) => c.name) ?? []), ...cat.plugins.map((p) => p.name), ...SHELL_WORDS];
  } else if (first === 'help' || first === 'use') {
    if (words.length === 1) candidates = [...cat.plugins.map((p) => p.name), ...(first === 'help' ? (current?.commands.map((c) => c.name) ?? []) : ['..'])];
    else if (first === 'help' && words.length === 2) candidates = findPlugin(second)?.commands.map((c) => c.name) ?? [];
  } else if (first === 'plugins') {
    candidates = words.length === 1 ? ['--json'] : [];
  } else {
    const own = current?.commands.find((c) => c.name === first);
    if (own) candidates = argsCompletion(own, words.slice(1), last);
    else {
      const plugin = findPlugin(first);
      if (plugin && words.length === 1) candidates = plugin.commands.map((c) => c.name);
      else if (plugin) {
        const command = plugin.commands.find((c) => c.name === second);
        if (command) candidates = argsCompletion(command, words.slice(2), last);
      }
    }
  }
  const hits = [...new Set(candidates)].filter((c) => c.startsWith(last));
  return [hits.length === 1 ? [`${hits[0]} `] : hits, last];
}
