// Turns the script list of the main thread (from the inspector's Debugger.scriptParsed
// events) into the loaded packages and files.

import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface LoadedFile {
  file: string;
  kind: 'cjs' | 'esm';
  package?: string;
}

export interface PackageSummary {
  name: string;
  version: string;
  files: number;
  dir: string;
}

const NODE_MODULES = /^(.*[\\/]node_modules[\\/])((?:@[^\\/]+[\\/])?[^\\/]+)/;

export interface ParsedScript {
  url: string;
  /** From Debugger.scriptParsed: the script is an ES module. */
  isModule?: boolean;
}

export function classify(scripts: Iterable<ParsedScript>): { files: LoadedFile[]; builtins: number } {
  const files: LoadedFile[] = [];
  let builtins = 0;
  const seen = new Set<string>();
  for (const { url, isModule } of scripts) {
    if (!url) continue;
    if (url.startsWith('node:')) {
      builtins++;
      continue;
    }
    let file: string;
    if (url.startsWith('file://')) {
      try {
        file = fileURLToPath(url);
      } catch {
        continue;
      }
    } else if (path.isAbsolute(url)) file = url;
    else continue;
    const kind = isModule ? 'esm' : 'cjs';
    if (seen.has(file)) continue;
    seen.add(file);
    const m = NODE_MODULES.exec(file);
    files.push(m ? { file, kind, package: m[2]!.replace(/\\/g, '/') } : { file, kind });
  }
  files.sort((a, b) => a.file.localeCompare(b.file));
  return { files, builtins };
}

export function summarisePackages(files: readonly LoadedFile[]): PackageSummary[] {
  const byDir = new Map<string, PackageSummary>();
  for (const f of files) {
    const m = NODE_MODULES.exec(f.file);
    if (!m) continue;
    const dir = m[1]! + m[2]!;
    let entry = byDir.get(dir);
    if (!entry) {
      let version = '?';
      try {
        version = (JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version?: string }).version ?? '?';
      } catch {
        // no readable package.json
      }
      entry = { name: m[2]!.replace(/\\/g, '/'), version, files: 0, dir };
      byDir.set(dir, entry);
    }
    entry.files++;
  }
  return [...byDir.values()].sort((a, b) => a.name.localeCompare(b.name) || a.dir.localeCompare(b.dir));
}
