// A CommonJS handler (compiles to dist/examples/handlers/legacy.cjs): module.exports is the
// handler; named exports work too ({module: ".../legacy.cjs", export: "shout"}).
function legacy(item: { text?: string }): { length: number } {
  return { length: String(item?.text ?? '').length };
}
function shout(item: { text?: string }): string {
  return String(item?.text ?? '').toUpperCase();
}
export = Object.assign(legacy, { shout });
