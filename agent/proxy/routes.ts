// Route names for chunk labels: the user maps path prefixes to names
// (`--route segment=/video/`), so the label's values are the names they chose
// and nothing else. A request whose path matches no prefix has no route.

export interface Route {
  name: string;
  prefix: string;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$/;

/** "NAME=/PATH_PREFIX" → Route; throws with what is expected. */
export function parseRoute(text: string): Route {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new Error('expected NAME=PATH_PREFIX, e.g. segment=/video/');
  const name = text.slice(0, eq);
  const prefix = text.slice(eq + 1);
  if (!NAME.test(name)) throw new Error('the name must be a letter or _ then up to 63 letters, digits, _ . : or -');
  if (!prefix.startsWith('/')) throw new Error('the path prefix must start with /');
  return { name, prefix };
}

export class RouteMap {
  private readonly routes: Route[];

  constructor(routes: readonly Route[]) {
    // Longest prefix first: /video/live/ wins over /video/.
    this.routes = [...routes].sort((a, b) => b.prefix.length - a.prefix.length);
  }

  get size(): number {
    return this.routes.length;
  }

  /** The route name of a request-target (origin or absolute form), or undefined. */
  match(target: string): string | undefined {
    if (this.routes.length === 0) return undefined;
    const path = pathOf(target);
    for (const r of this.routes) if (path.startsWith(r.prefix)) return r.name;
    return undefined;
  }
}

/** "/a/b?x" → "/a/b?x"; "http://h:1/a?x" → "/a?x"; anything else (authority, *) → "". */
export function pathOf(target: string): string {
  if (target.startsWith('/')) return target;
  const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*(.*)$/.exec(target);
  if (m === null) return '';
  const rest = m[1]!;
  return rest.startsWith('/') ? rest : `/${rest}`;
}
