// `ispy flamegraph <profile> [-o out.svg|out.html]`: a self-contained flame graph of a
// .cpuprofile (or of collapsed stacks) that opens in any browser, with no network and no
// dependency. Width is time; each row is one level of the call stack, the root at the
// bottom. The SVG shows a tooltip per frame; the HTML adds click-to-zoom and search.

import { readFileSync } from 'node:fs';
import { collapse, type CpuProfile } from '../protocol/cpuprofile';
import { IspyError } from '../protocol/errors';

interface Node {
  name: string;
  value: number;
  children: Map<string, Node>;
}

/** Parses collapsed stacks (`a;b;c 12` per line) into a tree. */
export function parseCollapsed(text: string): Node {
  const root: Node = { name: 'all', value: 0, children: new Map() };
  for (const line of text.split('\n')) {
    const m = /^(.*) (\d+)$/.exec(line.trim());
    if (!m) continue;
    const count = Number(m[2]);
    root.value += count;
    let node = root;
    for (const frame of m[1]!.split(';')) {
      let child = node.children.get(frame);
      if (!child) node.children.set(frame, (child = { name: frame, value: 0, children: new Map() }));
      child.value += count;
      node = child;
    }
  }
  return root;
}

/** Reads a .cpuprofile (JSON) or collapsed stacks (text) into collapsed text. */
export function loadProfile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new IspyError('ISPY_ERR_NOT_FOUND', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (text.trimStart().startsWith('{')) {
    let profile: CpuProfile;
    try {
      profile = JSON.parse(text) as CpuProfile;
    } catch (err) {
      throw new IspyError('ISPY_ERR_USAGE', `${file} is not valid JSON: ${(err as Error).message}`);
    }
    if (!Array.isArray(profile.nodes)) throw new IspyError('ISPY_ERR_USAGE', `${file} is JSON but not a .cpuprofile (no "nodes")`);
    return collapse(profile);
  }
  return text;
}

const escapeXml = (s: string) => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A warm colour per name, stable across renders (same function, same colour). */
function colour(name: string): string {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  const app = !name.includes('node:') && !name.includes('node_modules') && !name.startsWith('(');
  const hue = app ? 10 + (h % 40) : 45 + (h % 15);
  return `hsl(${hue}, ${app ? 85 : 55}%, ${55 + (h % 15)}%)`;
}

export interface FlameOptions {
  title: string;
  width?: number;
}

/** The flame graph as a standalone SVG document. */
export function renderSvg(root: Node, opts: FlameOptions): string {
  const width = opts.width ?? 1200;
  const rowH = 17;
  const pad = 10;
  const top = 30;
  const depthOf = (n: Node): number => 1 + Math.max(0, ...[...n.children.values()].map(depthOf));
  const depth = depthOf(root);
  const height = top + depth * rowH + pad * 2;
  const rects: string[] = [];
  const scale = root.value ? (width - pad * 2) / root.value : 0;
  const place = (n: Node, x: number, level: number) => {
    const w = n.value * scale;
    if (w < 0.3) return;
    const y = height - pad - (level + 1) * rowH;
    const pct = root.value ? ((n.value / root.value) * 100).toFixed(2) : '0';
    const label = w > 30 ? escapeXml(n.name.length * 6.5 > w - 6 ? `${n.name.slice(0, Math.max(0, Math.floor((w - 6) / 6.5) - 1))}…` : n.name) : '';
    rects.push(
      `<g class="f" data-x="${x.toFixed(2)}" data-w="${w.toFixed(2)}"><title>${escapeXml(n.name)} — ${n.value} samples, ${pct}%</title>` +
        `<rect x="${x.toFixed(2)}" y="${y}" width="${Math.max(0.5, w - 0.5).toFixed(2)}" height="${rowH - 1}" rx="2" fill="${level === 0 ? '#c8c8c8' : colour(n.name)}"/>` +
        (label ? `<text x="${(x + 3).toFixed(2)}" y="${y + 12}">${label}</text>` : '') +
        `</g>`,
    );
    let cx = x;
    for (const c of [...n.children.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      place(c, cx, level + 1);
      cx += c.value * scale;
    }
  };
  place(root, pad, 0);
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="monospace" font-size="11">\n` +
    `<rect width="100%" height="100%" fill="#fbfbf8"/>\n` +
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(opts.title)} — ${root.value} samples</text>\n` +
    rects.join('\n') +
    `\n</svg>\n`
  );
}

/** The SVG inside a page with click-to-zoom (click a frame; click the root to reset) and search. */
export function renderHtml(root: Node, opts: FlameOptions): string {
  const svg = renderSvg(root, opts).replace(/^<\?xml[^>]*>\n/, '');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${escapeXml(opts.title)}</title>
<style>body{margin:0;font-family:monospace;background:#fbfbf8}#bar{padding:6px 10px}g.f{cursor:pointer}g.f.hit rect{fill:#e040fb!important}</style></head>
<body><div id="bar">click a frame to zoom, click the bottom bar to reset · search: <input id="q" size="30"> <span id="n"></span></div>
${svg}
<script>
(function () {
  var svg = document.querySelector('svg');
  var W = svg.viewBox.baseVal.width, H = svg.viewBox.baseVal.height;
  svg.setAttribute('width', '100%');
  svg.addEventListener('click', function (e) {
    var g = e.target.closest('g.f'); if (!g) return;
    var x = +g.dataset.x, w = +g.dataset.w;
    svg.setAttribute('viewBox', (w >= W - 21 ? '0 0 ' + W : (x - 10) + ' 0 ' + (w + 20)) + ' ' + H);
  });
  document.getElementById('q').addEventListener('input', function () {
    var q = this.value, n = 0;
    document.querySelectorAll('g.f').forEach(function (g) {
      var hit = q && g.querySelector('title').textContent.indexOf(q) !== -1;
      g.classList.toggle('hit', !!hit); if (hit) n++;
    });
    document.getElementById('n').textContent = q ? n + ' frames' : '';
  });
})();
</script></body></html>
`;
}
