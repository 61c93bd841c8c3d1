// The preload's deferred start (src/agent/early.ts): when the config keeps the setup before
// the app's first line, and the recording of what the app publishes meanwhile.

import { afterAll, describe, expect, it } from 'vitest';
import dc from 'node:diagnostics_channel';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, tempDir } from './helpers';
import { earlyMessages, recordEarly, recordedFromStart, setupMustPrecedeApp, stopRecording } from '../dist/src/agent/early.js';

afterAll(cleanup);

describe('setupMustPrecedeApp', () => {
  const write = (dir: string, name: string, text: string) => writeFileSync(path.join(dir, name), text);

  it('no: no config file, or one without traces and plugins', () => {
    const dir = tempDir();
    expect(setupMustPrecedeApp({}, dir)).toBe(false);
    write(dir, 'ispy.config.json', JSON.stringify({ outputDir: './out', traces: [], plugins: [] }));
    expect(setupMustPrecedeApp({}, dir)).toBe(false);
  });

  it('yes: traces or plugins in ./ispy.config.json or the file ISPY_CONFIG names', () => {
    const dir = tempDir();
    write(dir, 'ispy.config.json', JSON.stringify({ traces: [{ target: './lib.cjs:work' }] }));
    expect(setupMustPrecedeApp({}, dir)).toBe(true);
    write(dir, 'other.json', JSON.stringify({ plugins: ['./p.cjs'] }));
    expect(setupMustPrecedeApp({ ISPY_CONFIG: path.join(dir, 'other.json') }, tempDir())).toBe(true);
  });

  it('yes when the file cannot be read as JSON or is missing though named: the start as before reports it', () => {
    const dir = tempDir();
    write(dir, 'ispy.config.json', '{ not json');
    expect(setupMustPrecedeApp({}, dir)).toBe(true);
    expect(setupMustPrecedeApp({ ISPY_CONFIG: 'missing.json' }, dir)).toBe(true);
  });
});

describe('the recording', () => {
  it('holds what fastify.initialization publishes until stopped, then lets it go and unsubscribes', () => {
    const channel = dc.channel('fastify.initialization');
    expect(recordedFromStart()).toBe(false);
    recordEarly();
    expect(recordedFromStart()).toBe(true);
    const instance = { findRoute() {}, hasRoute() {} };
    channel.publish({ fastify: instance });
    expect(earlyMessages('fastify.initialization')).toEqual([{ fastify: instance }]);
    expect(earlyMessages('http.server.request.start')).toEqual([]);
    stopRecording();
    expect(recordedFromStart()).toBe(false);
    expect(earlyMessages('fastify.initialization')).toEqual([]);
    expect(channel.hasSubscribers).toBe(false);
  });
});
