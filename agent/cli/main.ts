#!/usr/bin/env node
// tcp-chronograph: the command-line entry point (package.json "bin").
// Dispatches to a subcommand (agent/cli/commands.ts); `watch` is the default,
// so `tcp-chronograph --interval 2s` is `tcp-chronograph watch --interval 2s`.
// Exit codes: 0 done, 1 runtime failure (one sentence), 2 usage error.
import { commands, defaultCommand } from './commands.js';
import { UsageError } from './flags.js';
import { version } from './version.js';

function topHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'Usage: tcp-chronograph [command] [flags]',
    '',
    'Explains slow TCP delivery with the kernel\'s sender chronographs',
    '(busy, receive-window-limited and send-buffer-limited time).',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}${c === defaultCommand ? ' (default)' : ''}`),
    '',
    'Run `tcp-chronograph <command> --help` for its flags.',
    '',
  ].join('\n');
}

export async function main(argv: readonly string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === '--help' || first === '-h' || first === 'help') {
    process.stdout.write(topHelp());
    return 0;
  }
  if (first === '--version' || first === '-V') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  let command = defaultCommand;
  let args = argv;
  if (first !== undefined && !first.startsWith('-')) {
    const found = commands.find((c) => c.name === first);
    if (found === undefined) {
      throw new UsageError(`unknown command "${first}"; commands: ${commands.map((c) => c.name).join(', ')}`);
    }
    command = found;
    args = rest;
  }
  return command.run(args);
}

main(process.argv.slice(2)).then(
  // Exit explicitly: a keep-alive socket or a stray handle must not keep a stopped agent alive.
  (code) => process.exit(code),
  (err: unknown) => {
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`tcp-chronograph: ${msg}\n`);
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);
