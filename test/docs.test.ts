// The docs promise every error code is documented (docs/errors.md) and every protocol
// limit is stated as the code has it (docs/protocol.md). These fail when the code moves on
// and the docs do not.

import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../src/protocol/errors';
import { HARD_MAX_FRAME_BYTES, MAX_CALLS_PER_CONNECTION, PROTOCOL_VERSION, WS_PATH } from '../src/protocol/index';

const DOCS = path.resolve(__dirname, '..', 'docs');
const read = (name: string) => readFileSync(path.join(DOCS, name), 'utf8');

describe('docs/errors.md', () => {
  const text = read('errors.md');

  it('has a section for every code in ERROR_CODES', () => {
    const missing = Object.keys(ERROR_CODES).filter((code) => !text.includes(`### ${code}\n`));
    expect(missing, `add a "### <code>" section to docs/errors.md for each of these`).toEqual([]);
  });

  it('documents no code that does not exist', () => {
    const documented = [...text.matchAll(/^### (ISPY_ERR_[A-Z_]+)$/gm)].map((m) => m[1]);
    expect(documented.filter((code) => !(code! in ERROR_CODES))).toEqual([]);
  });
});

describe('docs/protocol.md', () => {
  const text = read('protocol.md');

  it('states the version and limits the code has', () => {
    expect(text).toContain(`Protocol version: **${PROTOCOL_VERSION}**`);
    expect(text).toContain(`**\`${WS_PATH}\`**`);
    expect(text).toContain(`\`MAX_CALLS_PER_CONNECTION\` = **${MAX_CALLS_PER_CONNECTION}**`);
    expect(HARD_MAX_FRAME_BYTES).toBe(64 * 1024 * 1024);
    expect(text).toContain('| `HARD_MAX_FRAME_BYTES` | 64 MiB |');
  });
});
