// Where the package's own files are, whether running from dist/ (built) or src/ (tests).

import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

let root: string | undefined;

/** The folder holding ispy's package.json. */
export function packageRoot(): string {
  if (root) return root;
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'ispy') return (root = dir);
      } catch {
        // unreadable: keep looking
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return (root = path.resolve(__dirname, '..', '..', '..'));
    dir = up;
  }
}
