/**
 * The YAML (or JSON) text of a template spec file, read at the edge: parsed, its syntax
 * errors reported by line, every node indexed by its path so the domain's checks can name
 * lines. The checks themselves are the domain's (`normalizeTemplateSpec`), pure.
 */
import { LineCounter, isMap, isNode, isScalar, isSeq, parseDocument, type YAMLError } from 'yaml';
import {
  normalizeTemplateSpec,
  throwTemplateSpecIssues,
  type NormalizeOptions,
  type RawTemplateDoc,
  type TemplateSourceMap,
  type TemplateSpec,
  type TemplateSpecPath as Path,
} from '../domain/index.js';

interface NodeInfo {
  readonly line: number;
  readonly written?: string;
  /** For a `|` block: the line its text starts on. */
  readonly firstTextLine?: number;
}

const pathKey = (path: Path) => JSON.stringify(path);

/** Indexes every node of a parsed document by its path; a map entry's line is its key's. */
function indexNodes(node: unknown, path: Path, line: number, lineOf: (offset: number) => number, out: Map<string, NodeInfo>): void {
  if (isScalar(node)) {
    const block = node.type === 'BLOCK_LITERAL' && node.range ? { firstTextLine: lineOf(node.range[0]) + 1 } : {};
    const written = node.type === 'PLAIN' && node.source !== undefined ? { written: node.source } : {};
    out.set(pathKey(path), { line, ...block, ...written });
  } else {
    out.set(pathKey(path), { line });
  }
  if (isMap(node)) {
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const at = isScalar(pair.key) && pair.key.range ? lineOf(pair.key.range[0]) : line;
      indexNodes(pair.value, [...path, key], at, lineOf, out);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => {
      const range = isNode(item) ? item.range : undefined;
      indexNodes(item, [...path, i], range ? lineOf(range[0]) : line, lineOf, out);
    });
  }
}

function sourceMapOf(nodes: ReadonlyMap<string, NodeInfo>): TemplateSourceMap {
  const nearest = (path: Path): NodeInfo | undefined => {
    for (let n = path.length; n >= 0; n--) {
      const info = nodes.get(pathKey(path.slice(0, n)));
      if (info) return info;
    }
    return undefined;
  };
  return {
    line: (path) => nearest(path)?.line,
    lineAt: (path, text, offset) => {
      const info = nodes.get(pathKey(path));
      if (info?.firstTextLine === undefined) return nearest(path)?.line;
      return info.firstTextLine + (text.slice(0, offset).match(/\n/g)?.length ?? 0);
    },
    written: (path) => nodes.get(pathKey(path))?.written,
  };
}

/**
 * Parses a spec file's text (YAML; JSON is YAML). Syntax errors — all of them — are thrown
 * as one InputError, each as `FILE:LINE: …`. Checks nothing else.
 */
export function parseTemplateSpecText(text: string, fileName: string): RawTemplateDoc {
  const lines = new LineCounter();
  // logLevel 'error': the library would print its warnings (e.g. about complex keys) to the console.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true, logLevel: 'error' });
  // Warnings too: an unknown tag (`!!binary`) silently becomes a string, not what was meant.
  const problems: YAMLError[] = [...doc.errors, ...doc.warnings];
  if (problems.length > 0) {
    throwTemplateSpecIssues(
      problems.map((e) => ({ field: '', line: lines.linePos(e.pos[0]).line, message: `${/json$/i.test(fileName) ? 'JSON' : 'YAML'} syntax: ${e.message}` })),
      fileName,
    );
  }
  const nodes = new Map<string, NodeInfo>();
  const lineOf = (offset: number) => lines.linePos(offset).line;
  indexNodes(doc.contents, [], doc.contents?.range ? lineOf(doc.contents.range[0]) : 1, lineOf, nodes);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    // Aliases expanding past the limit (a "billion laughs" file) end here.
    throwTemplateSpecIssues([{ field: '', line: 1, message: `YAML: ${e instanceof Error ? e.message : String(e)}` }], fileName);
  }
  return { fileName, value, source: sourceMapOf(nodes) };
}

/** Parses and normalizes in one step. */
export function readTemplateSpecText(text: string, fileName: string, options: NormalizeOptions = {}): TemplateSpec {
  return normalizeTemplateSpec(parseTemplateSpecText(text, fileName), options);
}
