// The flame-graph renderer and `ispy flamegraph`, on a profile whose shape we know.

import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cleanup, runCli, tempDir } from './helpers';
import { parseCollapsed, renderSvg } from '../src/cli/flame';
import { collapse, type CpuProfile } from '../src/protocol/cpuprofile';

afterAll(cleanup);

const frame = (id: number, functionName: string, children: number[] = []) => ({ id, callFrame: { functionName, url: id > 1 ? 'file:///app/server.js' : '', lineNumber: id, columnNumber: 0 }, children });

// root → main → (hot ×6, cold ×2)
const profile: CpuProfile = {
  nodes: [frame(1, '(root)', [2]), frame(2, 'main', [3, 4]), frame(3, 'hot'), frame(4, 'cold')],
  startTime: 0,
  endTime: 8000,
  samples: [3, 3, 4, 3, 3, 4, 3, 3],
  timeDeltas: [0, 1000, 1000, 1000, 1000, 1000, 1000, 1000],
};

describe('flame graphs', () => {
  it('collapses a profile into stacks and draws one box per frame, widths by samples', () => {
    const text = collapse(profile);
    expect(text).toBe('main (/app/server.js:3);cold (/app/server.js:5) 2\nmain (/app/server.js:3);hot (/app/server.js:4) 6\n');
    const root = parseCollapsed(text);
    expect(root.value).toBe(8);
    const svg = renderSvg(root, { title: 'test', width: 1010 });
    const boxes = [...svg.matchAll(/<g class="f" data-x="([\d.]+)" data-w="([\d.]+)"><title>([^<]*)<\/title>/g)].map((m) => ({ x: Number(m[1]), w: Number(m[2]), title: m[3] }));
    expect(boxes.map((b) => b.title)).toEqual([
      'all — 8 samples, 100.00%',
      'main (/app/server.js:3) — 8 samples, 100.00%',
      'cold (/app/server.js:5) — 2 samples, 25.00%',
      'hot (/app/server.js:4) — 6 samples, 75.00%',
    ]);
    expect(boxes[3]!.w / boxes[2]!.w).toBeCloseTo(3, 5);
    expect(boxes[3]!.x).toBeCloseTo(boxes[2]!.x + boxes[2]!.w, 5);
  });

  it('ispy flamegraph writes HTML or SVG, and says what is wrong with a bad input', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'p.cpuprofile');
    writeFileSync(file, JSON.stringify(profile));
    const html = await runCli(['flamegraph', file]);
    expect(html.code).toBe(0);
    expect(html.stdout).toBe(`${path.join(dir, 'p.html')}: 8 samples\n`);
    expect(readFileSync(path.join(dir, 'p.html'), 'utf8')).toMatch(/^<!doctype html>[\s\S]*<svg[\s\S]*hot \(\/app\/server\.js:4\)[\s\S]*<\/html>\n$/);
    const svg = await runCli(['flamegraph', file, '-o', path.join(dir, 'x.svg')]);
    expect(svg.code).toBe(0);
    expect(readFileSync(path.join(dir, 'x.svg'), 'utf8')).toMatch(/^<\?xml/);
    const bad = await runCli(['flamegraph', file, '-o', path.join(dir, 'x.png')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/written as \.html or \.svg/);
    writeFileSync(path.join(dir, 'broken.cpuprofile'), '{ nope');
    const broken = await runCli(['flamegraph', path.join(dir, 'broken.cpuprofile')]);
    expect(broken.stderr).toMatch(/is not valid JSON/);
    expect(broken.stderr).not.toMatch(/\n\s+at /);
  });
});
