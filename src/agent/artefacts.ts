// Artefacts (reports, profiles, snapshots) hold secrets, so they are written 0600, and a
// partial file never masquerades as complete: bytes go to `<name>.partial` and are renamed
// to the final name only once all of them are on disk.

import * as fs from 'node:fs';
import * as path from 'node:path';

function stamp(d = new Date()): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** `report.json` → `report-<pid>-20261122T200102Z.json`. */
export function artefactName(requested: string, pid = process.pid): string {
  const base = path.basename(requested);
  const dot = base.indexOf('.');
  const stem = dot > 0 ? base.slice(0, dot) : base;
  const ext = dot > 0 ? base.slice(dot) : '';
  return `${stem}-${pid}-${stamp()}${ext}`;
}

export async function writeArtefact(dir: string, requested: string, data: string | Uint8Array): Promise<{ path: string; name: string; size: number }> {
  await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
  let name = artefactName(requested);
  let file = path.join(dir, name);
  for (let n = 2; fs.existsSync(file); n++) {
    name = artefactName(requested).replace(/(\.[^.]*)?$/, (ext) => `-${n}${ext}`);
    file = path.join(dir, name);
  }
  const partial = `${file}.partial`;
  const handle = await fs.promises.open(partial, 'wx', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await fs.promises.unlink(partial).catch(() => {});
    throw err;
  }
  await handle.close();
  await fs.promises.rename(partial, file);
  const size = typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
  return { path: file, name, size };
}
