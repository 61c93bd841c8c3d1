// Which keys hold secrets, and how to show a value without showing the secret. Part of
// the public plugin API: every plugin that shows environment, headers or arguments
// redacts the same way, extended by the config's "redact" patterns.

/** Key names that hold secrets in most apps (env vars, headers). The config's "redact" patterns add to these. */
export const DEFAULT_SECRET_KEY =
  /pass(word|wd|phrase)?|secret|token|api[-_]?key|private[-_]?key|access[-_]?key|credential|auth|cookie|session|signature|salt|dsn|bearer|jwt|_key$|^x-.*-key$/i;

export function secretMatcher(extra: readonly string[]): (key: string) => boolean {
  const patterns = [DEFAULT_SECRET_KEY, ...extra.map((p) => new RegExp(p, 'i'))];
  return (key) => patterns.some((re) => re.test(key));
}

export function redactedValue(value: string): string {
  return `[redacted, ${value.length} chars]`;
}

/** `postgres://user:pw@host/db` → `postgres://user:***@host/db`: the password in a URL is a secret whatever its key. */
export function redactUrlPassword(value: string): string {
  return value.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*):([^@\s]+)@/i, '$1:***@');
}

/**
 * A URL with its secrets hidden: the password of `user:pw@`, and the values of query
 * parameters whose names look secret (`?token=…`, `&api_key=…`). Works on a path with a
 * query (`/export?token=x`) as on a full URL. Cheap when there is nothing to hide.
 */
export function redactUrl(url: string, isSecret: (key: string) => boolean): string {
  let out = redactUrlPassword(url);
  const q = out.indexOf('?');
  if (q === -1) return out;
  const hash = out.indexOf('#', q);
  const query = out.slice(q + 1, hash === -1 ? undefined : hash);
  const parts = query.split('&').map((pair) => {
    const eq = pair.indexOf('=');
    if (eq === -1) return pair;
    let key = pair.slice(0, eq);
    try {
      key = decodeURIComponent(key);
    } catch {
      // keep it as written
    }
    return isSecret(key) ? `${pair.slice(0, eq)}=***` : pair;
  });
  out = `${out.slice(0, q + 1)}${parts.join('&')}${hash === -1 ? '' : out.slice(hash)}`;
  return out;
}
