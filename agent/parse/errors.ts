// The one error the pure decoders throw. Callers branch on `code`, never on
// the message; `what` names the structure that did not decode.
export class ParseError extends Error {
  readonly code = 'ERR_TCPCHRONO_PARSE';

  constructor(
    message: string,
    readonly what: string,
  ) {
    super(`${what}: ${message}`);
    this.name = 'ParseError';
  }
}

export function isParseError(e: unknown): e is ParseError {
  return e instanceof ParseError;
}
