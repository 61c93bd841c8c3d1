// Terminal colour, decided once per stream. Colour is a courtesy for a person at a
// terminal; anything piped to a file, `jq` or `less` gets plain text, and NO_COLOR
// (https://no-color.org: present and not empty) always wins.

export interface Style {
  readonly enabled: boolean;
  key(text: string): string;
  head(text: string): string;
  dim(text: string): string;
  good(text: string): string;
  bad(text: string): string;
  warn(text: string): string;
}

const wrap = (open: number, close: number) => (text: string) => `\x1b[${open}m${text}\x1b[${close}m`;

const COLOURED: Style = {
  enabled: true,
  key: wrap(36, 39),
  head: wrap(1, 22),
  dim: wrap(2, 22),
  good: wrap(32, 39),
  bad: wrap(31, 39),
  warn: wrap(33, 39),
};

const id = (text: string) => text;
const PLAIN: Style = { enabled: false, key: id, head: id, dim: id, good: id, bad: id, warn: id };

export function colourWanted(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && !env.NO_COLOR;
}

export function styleFor(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv = process.env): Style {
  return colourWanted(stream, env) ? COLOURED : PLAIN;
}

export function style(enabled: boolean): Style {
  return enabled ? COLOURED : PLAIN;
}

/** Printable width of text that may carry colour codes. */
export function visibleLength(text: string): number {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, '').length;
}
