// Command-line options of the bench scripts: `--name value` pairs.

/** The value after `--name` in the process arguments, or `def`. */
export function option(name, def) {
  const args = process.argv.slice(2);
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
}
