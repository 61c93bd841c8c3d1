// `ispy run --merge`: one table across every target instead of one block per target.
// Each row carries the host and pid it came from; rows are sorted by the command's
// natural key, across the whole fleet (the oldest request anywhere comes first).
//
// Which part of a result is "the list", and how it sorts, is this one table. A command
// not in it still merges, by shape:
//
//   result is an array of objects              → its items are the rows
//   result has an array-of-objects property    → the first such property's items
//   anything else (a record, a scalar)         → one row per target
//
// so a third-party plugin's list merges without being named here; it is only unsorted
// (rows keep the order of host, pid, then the plugin's own order).

export interface MergeRule {
  /** The result property holding the list; null: the result is one record, one row per target. */
  list: string | null;
  /** Record rows: the columns shown, column name → dotted path into the result. Default: every scalar, nested objects flattened (`delayMs.p99`). */
  columns?: Readonly<Record<string, string>>;
  /** Record rows: properties left out of the default columns. */
  omit?: readonly string[];
  /**
   * The natural order: a dotted path into each row (the item, or the record) and a
   * direction. `age`: the key is a duration in ms measured when the target answered;
   * targets answer at different moments, so it is advanced to one moment (the merge's)
   * before rows are compared, and shown that way.
   */
  sort?: { key: string; order: 'asc' | 'desc'; age?: boolean };
}

/** Keyed by `<plugin> <command>` as the agent names them. */
export const MERGE_RULES: Readonly<Record<string, MergeRule>> = {
  'requests list': { list: 'requests', sort: { key: 'ageMs', order: 'desc', age: true } },
  'requests slow': { list: 'requests', sort: { key: 'durationMs', order: 'desc' } },
  'trace list': { list: 'traces', sort: { key: 'id', order: 'asc' } },
  'profile gates': { list: 'gates', sort: { key: 'id', order: 'asc' } },
  'process modules': { list: 'packages', sort: { key: 'name', order: 'asc' } },
  'process info': {
    list: null,
    columns: {
      title: 'title',
      node: 'versions.node',
      uptimeSeconds: 'uptimeSeconds',
      rssMB: 'memory.processRssMB',
      heapUsedMB: 'memory.mainThread.heapUsedMB',
      cpuPercent: 'cpu.averagePercent',
      mainThread: 'mainThread',
    },
    sort: { key: 'pid', order: 'asc' },
  },
  'process loop': { list: null, sort: { key: 'delayMs.p99', order: 'desc' } },
  'heap stats': { list: null, omit: ['spaces'], sort: { key: 'usedMB', order: 'desc' } },
};

/** One target's answer to one line. */
export interface MergeInput {
  host: string | null;
  pid: number | null;
  /** The target's label (socket path, or host:path for a remote one). */
  source: string;
  value: unknown;
  /** When the answer arrived (ms since the epoch), for `age` keys. */
  answeredAt?: number;
}

export interface Merged {
  /** Full rows for --json: host, pid, source, then the item's own fields. */
  rows: Record<string, unknown>[];
  /** Flat rows for the table: host, pid, then the chosen columns. */
  table: Record<string, unknown>[];
  /** How the rows are ordered, for the heading: `ageMs, descending`. */
  order?: string;
}

type Plain = Record<string, unknown>;

function isPlain(v: unknown): v is Plain {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isScalar(v: unknown): boolean {
  return v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
}

function at(obj: unknown, dotted: string): unknown {
  let v: unknown = obj;
  for (const part of dotted.split('.')) {
    if (!isPlain(v)) return undefined;
    v = v[part];
  }
  return v;
}

/** Scalars and scalar arrays as they are, nested objects as `a.b` keys; lists of objects left out (they do not fit a cell). */
function flatten(obj: Plain, omit: readonly string[] = [], prefix = '', out: Plain = {}, depth = 0): Plain {
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || (depth === 0 && omit.includes(k))) continue;
    const key = prefix + k;
    if (isScalar(v) || (Array.isArray(v) && v.every(isScalar))) out[key] = v;
    else if (isPlain(v) && depth < 3) flatten(v, omit, `${key}.`, out, depth + 1);
  }
  return out;
}

/** host, pid, source first; an item field of the same name with another value is kept as `item.<name>`. */
function withIdentity(item: Plain, identity: Plain): Plain {
  const row: Plain = { ...identity };
  for (const [k, v] of Object.entries(item)) {
    if (k in identity) {
      if (identity[k] !== v) row[`item.${k}`] = v;
    } else row[k] = v;
  }
  return row;
}

/** Which property of the results is the list: the rule's, else the first array of objects they all have. */
function listProperty(values: unknown[], rule: MergeRule | undefined): string | null | '' {
  if (rule) return rule.list;
  if (values.length > 0 && values.every(Array.isArray)) return '';
  if (values.length === 0 || !values.every(isPlain)) return null;
  const keys: string[] = [];
  for (const v of values as Plain[]) for (const k of Object.keys(v)) if (!keys.includes(k)) keys.push(k);
  const isObjectList = (x: unknown) => Array.isArray(x) && x.every(isPlain);
  return (
    keys.find((k) => (values as Plain[]).every((v) => isObjectList(v[k])) && (values as Plain[]).some((v) => (v[k] as unknown[]).length > 0)) ?? null
  );
}

function compare(a: unknown, b: unknown): number {
  const missing = (x: unknown) => x === undefined || x === null;
  if (missing(a) || missing(b)) return missing(a) === missing(b) ? 0 : missing(a) ? 1 : -1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b), 'en', { numeric: true });
}

/** Merges one line's answers from every target that gave one. `command` is `<plugin> <command>`. */
export function mergeResults(command: string | undefined, inputs: readonly MergeInput[], now = Date.now()): Merged {
  const rule = command !== undefined ? MERGE_RULES[command] : undefined;
  const answered = inputs.filter((i) => i.value !== undefined && i.value !== null);
  const list = listProperty(
    answered.map((i) => i.value),
    rule,
  );
  const entries: { item: Plain; row: Plain; cells: Plain; n: number }[] = [];
  for (const input of answered) {
    const identity: Plain = { host: input.host, pid: input.pid, source: input.source };
    const items: unknown[] =
      list === null ? [input.value] : list === '' ? (input.value as unknown[]) : Array.isArray(at(input.value, list)) ? (at(input.value, list) as unknown[]) : [];
    const ageKey = rule?.sort?.age && !rule.sort.key.includes('.') && input.answeredAt !== undefined ? rule.sort.key : undefined;
    for (const raw of items) {
      let item: Plain = isPlain(raw) ? raw : { value: raw };
      if (ageKey !== undefined && typeof item[ageKey] === 'number') {
        item = { ...item, [ageKey]: Math.round(((item[ageKey] as number) + Math.max(0, now - input.answeredAt!)) * 10) / 10 };
      }
      const shown: Plain =
        list === null && rule?.columns ? Object.fromEntries(Object.entries(rule.columns).map(([name, p]) => [name, at(item, p)])) : flatten(item, list === null ? rule?.omit : []);
      entries.push({ item, row: withIdentity(item, identity), cells: withIdentity(shown, { host: input.host, pid: input.pid }), n: entries.length });
    }
  }
  const sort = rule?.sort;
  entries.sort((x, y) => {
    if (sort) {
      const c = compare(at(x.item, sort.key), at(y.item, sort.key));
      if (c !== 0) return sort.order === 'desc' ? -c : c;
    }
    return compare(x.row.host, y.row.host) || compare(x.row.pid, y.row.pid) || x.n - y.n;
  });
  return {
    rows: entries.map((e) => e.row),
    table: entries.map((e) => e.cells),
    ...(sort ? { order: `${sort.key}, ${sort.order === 'desc' ? 'descending' : 'ascending'}` } : {}),
  };
}
