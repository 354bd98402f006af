// The subcommand table. The first entry is the default command.
import type { Command } from './command.js';
import { attachCommand } from './attach.js';
import { diagnoseCommand } from './diagnose.js';
import { proxyCommand } from './proxy.js';
import { topCommand } from './top.js';
import { watchCommand } from './watch.js';

export const commands: readonly Command[] = [watchCommand, proxyCommand, attachCommand, topCommand, diagnoseCommand];

export const defaultCommand: Command = watchCommand;
