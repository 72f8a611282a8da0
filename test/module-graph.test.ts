// The source modules import each other without cycles (DESIGN.md: data flows
// up, each layer calls the one below), type-only imports included: the types
// the layers share live in src/types.ts, which imports none of them.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const srcDir = fileURLToPath(new URL('../src/', import.meta.url));

function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of readdirSync(srcDir).filter((f) => /\.m?ts$/.test(f))) {
    const text = readFileSync(`${srcDir}${file}`, 'utf8');
    const imports = [...text.matchAll(/^(?:import|export)\b[^;]*?from '\.\/([\w-]+)\.m?js'/gms)].map((m) => m[1]!);
    graph.set(file.replace(/\.m?ts$/, ''), imports);
  }
  return graph;
}

it('has no import cycle among the modules of src/, type imports included', () => {
  const graph = importGraph();
  const cycles: string[] = [];
  const visit = (name: string, path: string[]): void => {
    const at = path.indexOf(name);
    if (at >= 0) {
      cycles.push([...path.slice(at), name].join(' -> '));
      return;
    }
    for (const next of graph.get(name) ?? []) visit(next, [...path, name]);
  };
  for (const name of graph.keys()) if (name !== 'index') visit(name, []);
  expect(graph.get('errors')?.length).toBeGreaterThan(0); // the scan sees imports at all
  expect(cycles).toEqual([]);
});

it('keeps src/types.ts a leaf', () => {
  expect(importGraph().get('types')).toEqual([]);
});
