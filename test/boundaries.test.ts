// Which part may use which (DESIGN.md): the lint rule, as a test.
//
//   cli ──► client ──► protocol ◄── agent ◄── plugin API ◄── plugins/*

import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { builtinModules } from 'node:module';

const ROOT = path.resolve(__dirname, '..');

function files(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) out.push(...files(full));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(full);
  }
  return out;
}

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+'([^']+)'/g), ...text.matchAll(/(?:require|import)\('([^']+)'\)/g)].map((m) => m[1]!);
}

/** Each folder under src/ an import resolves into, or the bare package name. */
function target(file: string, spec: string): string {
  if (spec.startsWith('.')) {
    const resolved = path.relative(ROOT, path.resolve(path.dirname(file), spec));
    const parts = resolved.split(path.sep);
    return parts[0] === 'src' ? `src/${parts[1]}` : parts.slice(0, 2).join('/');
  }
  return spec;
}

const isBuiltin = (spec: string) => spec.startsWith('node:') || builtinModules.includes(spec);

describe('import boundaries', () => {
  it('protocol imports nothing of ispy but itself', () => {
    for (const f of files(path.join(ROOT, 'src/protocol'))) {
      for (const spec of imports(f)) expect(isBuiltin(spec) || target(f, spec) === 'src/protocol', `${f} imports ${spec}`).toBe(true);
    }
  });

  it('client and cli never import the agent or the plugin API', () => {
    for (const dir of ['src/client', 'src/cli']) {
      let dirFiles: string[] = [];
      try {
        dirFiles = files(path.join(ROOT, dir));
      } catch {
        continue;
      }
      for (const f of dirFiles) {
        for (const spec of imports(f)) {
          const t = target(f, spec);
          expect(t !== 'src/agent' && t !== 'src/plugin' && t !== 'src/register.ts', `${f} imports ${spec}`).toBe(true);
        }
      }
    }
  });

  it('the agent never imports the client or the cli', () => {
    for (const f of files(path.join(ROOT, 'src/agent'))) {
      for (const spec of imports(f)) expect(['src/client', 'src/cli'].includes(target(f, spec)), `${f} imports ${spec}`).toBe(false);
    }
  });

  it('built-in plugins use only ispy/plugin, Node built-ins and their own files', () => {
    for (const f of files(path.join(ROOT, 'plugins'))) {
      const pluginDir = path.relative(ROOT, f).split(path.sep).slice(0, 2).join('/');
      for (const spec of imports(f)) {
        const ok = spec === 'ispy/plugin' || isBuiltin(spec) || (spec.startsWith('.') && path.relative(ROOT, path.resolve(path.dirname(f), spec)).startsWith(pluginDir));
        expect(ok, `${f} imports ${spec}`).toBe(true);
      }
    }
  });
});
