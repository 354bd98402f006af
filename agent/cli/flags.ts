// Declarative flags with environment-variable fallbacks and generated help.
// A problem with a flag is a UsageError: the CLI prints its one line and
// exits 2. Precedence: command line, then environment, then default.
import { DEFAULT_COMMAND } from './command.js';
import { offersRootRefusal, rootRefusal } from './privileges.js';

export class UsageError extends Error {
  readonly code = 'ERR_TCPCHRONO_USAGE';
}

export interface FlagSpec<T> {
  /** Long name without dashes: `max-connections`. */
  name: string;
  short?: string;
  /** Placeholder in help; absent for boolean switches. */
  arg?: string;
  help: string;
  /** Default as the user would type it (parsed like user input). */
  default?: string;
  /** Repeatable; values may also be comma-separated. Env: comma-separated. */
  multiple?: boolean;
  /** Turns the raw text into a value; throws Error whose message says what is expected. */
  parse: (raw: string) => T;
}

export type FlagValues<S extends Record<string, FlagSpec<unknown>>> = {
  [K in keyof S]: S[K] extends FlagSpec<infer T> ? (S[K]['multiple'] extends true ? T[] : T) : never;
};

/**
 * Flags whose variable is one for every command: log.ts reads
 * TCP_CHRONOGRAPH_LOG_FORMAT for the whole process, whichever command runs.
 */
const PROCESS_WIDE = new Set(['log-format']);

/**
 * The environment variable of a command's flag. The same flag name means
 * different things in different commands (`--listen` is watch's metrics
 * address but proxy's client-facing one), so each command has its own:
 * TCP_CHRONOGRAPH_MAX_CONNECTIONS for watch (the default command),
 * TCP_CHRONOGRAPH_PROXY_MAX_CONNECTIONS for proxy.
 */
export function envName(command: string, flag: string): string {
  const scope = command === DEFAULT_COMMAND || PROCESS_WIDE.has(flag) ? '' : `${command}_`;
  return `TCP_CHRONOGRAPH_${`${scope}${flag}`.toUpperCase().replace(/-/g, '_')}`;
}

/**
 * --refuse-root, offered by the commands that work without privilege (proxy,
 * top, diagnose: privileges.ts): as root they run and drop what they do not
 * need; with it they refuse root instead.
 */
export const REFUSE_ROOT_FLAG = {
  name: 'refuse-root',
  help: 'Refuse to start as root (euid 0). Without it, as root this command keeps only the capabilities\nit needs and drops the rest (docs/privileges.md).',
  parse: parseBool,
} satisfies FlagSpec<boolean>;

/** Accepted for scripts written for 0.1 (root was refused then); root is allowed now. */
export const ALLOW_ROOT_FLAG = {
  name: 'allow-root',
  help: 'Deprecated, has no effect: root is allowed without it since 0.2.0 (see --refuse-root).',
  parse: parseBool,
} satisfies FlagSpec<boolean>;

/** The command's flags plus those every command of its kind takes (--refuse-root, --allow-root). */
export function withCommon(command: string, specs: Record<string, FlagSpec<unknown>>): Record<string, FlagSpec<unknown>> {
  return offersRootRefusal(command) ? { ...specs, refuseRoot: REFUSE_ROOT_FLAG, allowRoot: ALLOW_ROOT_FLAG } : specs;
}

export interface Parsed<S extends Record<string, FlagSpec<unknown>>> {
  values: FlagValues<S>;
  help: boolean;
}

/**
 * Parses argv (after the command name). Throws UsageError, also when a
 * command is asked to refuse root (--refuse-root) and runs as root.
 */
export function parseFlags<S extends Record<string, FlagSpec<unknown>>>(
  command: string,
  commandSpecs: S,
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  euid: number = process.geteuid?.() ?? -1,
): Parsed<S> {
  const specs = withCommon(command, commandSpecs);
  const byName = new Map<string, [string, FlagSpec<unknown>]>();
  for (const [key, s] of Object.entries(specs)) {
    byName.set(`--${s.name}`, [key, s]);
    if (s.short !== undefined) byName.set(`-${s.short}`, [key, s]);
  }
  const seeHelp = `see \`tcp-chronograph ${command} --help\``;
  const raw = new Map<string, string[]>();
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      help = true;
      continue;
    }
    if (!a.startsWith('-') || a === '-') throw new UsageError(`unexpected argument "${a}" (${seeHelp})`);
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    const entry = byName.get(flag);
    if (entry === undefined) throw new UsageError(`unknown flag ${flag} (${seeHelp})`);
    const [key, spec] = entry;
    let value: string;
    if (spec.arg === undefined) {
      value = eq > 0 ? a.slice(eq + 1) : 'true';
    } else if (eq > 0) {
      value = a.slice(eq + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) {
        throw new UsageError(`--${spec.name} needs a value, e.g. --${spec.name} ${spec.default ?? spec.arg} (${seeHelp})`);
      }
      value = next;
      i++;
    }
    if (!spec.multiple && raw.has(key)) throw new UsageError(`--${spec.name} given twice; give it once`);
    raw.set(key, [...(raw.get(key) ?? []), value]);
  }
  const values: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(specs)) {
    let texts = raw.get(key);
    let from = 'flag';
    if (texts === undefined) {
      const name = envName(command, spec.name);
      const e = env[name];
      if (e !== undefined && e !== '') {
        texts = [e];
        from = name;
      }
    }
    if (texts === undefined && spec.default !== undefined) {
      texts = [spec.default];
      from = 'default';
    }
    const parseOne = (t: string): unknown => {
      try {
        return spec.parse(t.trim());
      } catch (err) {
        const where = from === 'flag' ? `--${spec.name}` : from === 'default' ? `default of --${spec.name}` : `${from}`;
        throw new UsageError(`${where} "${t}": ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    if (spec.multiple) {
      const parts = (texts ?? []).flatMap((t) => t.split(',')).filter((t) => t.trim() !== '');
      values[key] = parts.map(parseOne);
    } else {
      values[key] = texts === undefined ? undefined : parseOne(texts[0]!);
    }
  }
  if (offersRootRefusal(command)) {
    if (!help && euid === 0 && values.refuseRoot === true) throw new UsageError(rootRefusal(command));
    delete values.refuseRoot;
    delete values.allowRoot;
  }
  return { values: values as FlagValues<S>, help };
}

/** Help text: usage line, then one entry per flag with its env var and default. */
export function formatHelp(command: string, summary: string, commandSpecs: Record<string, FlagSpec<unknown>>): string {
  const specs = withCommon(command, commandSpecs);
  const lines = [`Usage: tcp-chronograph ${command} [flags]`, '', summary, '', 'Flags:'];
  for (const s of Object.values(specs)) {
    const name = `${s.short !== undefined ? `-${s.short}, ` : ''}--${s.name}${s.arg !== undefined ? ` ${s.arg}` : ''}`;
    lines.push(`  ${name}`);
    for (const l of s.help.split('\n')) lines.push(`      ${l}`);
    const extra = [`env ${envName(command, s.name)}`];
    if (s.default !== undefined) extra.push(`default ${s.default}`);
    if (s.multiple) extra.push('repeatable or comma-separated');
    lines.push(`      (${extra.join('; ')})`);
  }
  lines.push('  -h, --help', '      Show this help.');
  return lines.join('\n') + '\n';
}

// Value parsers shared by commands.

/** "1s", "500ms", "2m", "1h", or a plain number of seconds. Returns seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  if (m === null) throw new Error('expected a duration like 1s, 500ms or 2m');
  const n = Number(m[1]);
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] ?? 's'] ?? 1;
  return n * unit;
}

export function parseIntIn(min: number, max: number): (text: string) => number {
  return (text) => {
    const n = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new Error(`expected a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

export function parseBool(text: string): boolean {
  if (/^(1|true|yes|on)$/i.test(text)) return true;
  if (/^(0|false|no|off)$/i.test(text)) return false;
  throw new Error('expected true or false');
}

export function parseChoice<T extends string>(choices: readonly T[]): (text: string) => T {
  return (text) => {
    if ((choices as readonly string[]).includes(text)) return text as T;
    throw new Error(`expected one of ${choices.join(', ')}`);
  };
}

/** "host:port", "[v6]:port", or ":port" (all interfaces). */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d+)$/.exec(text);
  if (m === null) throw new Error('expected host:port, e.g. 127.0.0.1:9465 or [::1]:9465 or :9465');
  const port = Number(m[3]);
  if (port > 65535) throw new Error('port must be at most 65535');
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '0.0.0.0' : host, port };
}
