// What a subcommand is. main.ts dispatches to these; adding a subcommand
// (proxy, attach, top, …) is one file exporting a Command plus one line in
// commands.ts.

export interface Command {
  name: string;
  /** One line for the command list in `tcp-chronograph --help`. */
  summary: string;
  /**
   * Runs the command with the arguments after its name. Resolves with the
   * exit code; throws UsageError (exit 2) for bad flags or values, any other
   * error (exit 1) for runtime failures whose message is one sentence.
   */
  run(argv: readonly string[]): Promise<number>;
}

/** The command run when none is named; its flags' variables carry no command prefix (flags.ts). */
export const DEFAULT_COMMAND = 'watch';
