// A host and port, as the flags give them and the listeners report them; one
// type for every layer (the proxy's upstream, every mode's HTTP listener).
export interface HostPort {
  host: string;
  port: number;
}

/** "127.0.0.1:9465", "[::1]:9465". */
export const hostPort = (a: HostPort): string => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);
