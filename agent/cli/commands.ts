// The subcommand table. The first entry is the default command.
import type { Command } from './command.js';
import { attachCommand } from './attach.js';
import { proxyCommand } from './proxy.js';
import { watchCommand } from './watch.js';

export const commands: readonly Command[] = [watchCommand, proxyCommand, attachCommand];

export const defaultCommand: Command = watchCommand;
