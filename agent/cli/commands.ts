// The subcommand table; DEFAULT_COMMAND (command.ts) names the default.
import { DEFAULT_COMMAND, type Command } from './command.js';
import { attachCommand } from './attach.js';
import { diagnoseCommand } from './diagnose.js';
import { proxyCommand } from './proxy.js';
import { topCommand } from './top.js';
import { traceCommand } from './trace.js';
import { watchCommand } from './watch.js';

export const commands: readonly Command[] = [watchCommand, traceCommand, proxyCommand, attachCommand, topCommand, diagnoseCommand];

export const defaultCommand: Command = commands.find((c) => c.name === DEFAULT_COMMAND)!;
