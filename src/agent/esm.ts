// `import()` for ispy's own modules. The agent's loader (loader.ts) compiles our modules
// itself, and an import() in code compiled that way has no module loader behind it
// (Node offers one only as an experimental flag that prints a warning into the app's
// stderr). So the one import() we need lives here, in a file Node loads itself.

/** Imports an ES module (or any module) by URL, with Node's own loader. */
export function importModule(url: string): Promise<unknown> {
  return import(url);
}
