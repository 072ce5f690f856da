/**
 * Layer check (STYLE.md §1): every src/ folder may import only the folders listed for it, and
 * testing/ is never imported from src/. Also bans nondeterministic globals in the engine's core
 * layers (STYLE.md §15): time, randomness and timers go through runtime/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname, resolve, sep } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../../..');
const SRC = join(ROOT, 'src');

/** Allowed imports per top-level folder of src/ (besides itself). */
const ALLOWED: Record<string, readonly string[]> = {
  util: [],
  runtime: ['util'],
  blockdev: ['util', 'runtime'],
  format: ['util'],
  cache: ['util', 'runtime', 'blockdev'],
  journal: ['util', 'runtime', 'blockdev', 'format', 'cache'],
  fs: ['util', 'runtime', 'blockdev', 'format', 'cache', 'journal'],
  io: ['util', 'runtime', 'blockdev', 'format', 'cache', 'journal', 'fs'],
  vfs: ['util', 'runtime', 'blockdev', 'format', 'cache', 'journal', 'fs', 'io'],
  api: ['util', 'runtime', 'blockdev', 'format', 'cache', 'journal', 'fs', 'io', 'vfs'],
  /** The image builder: a client of the public API (it writes through the same engine). */
  build: ['util', 'runtime', 'api'],
  cli: ['index.ts'],
  fuse: ['index.ts'],
  testing: ['util', 'runtime', 'blockdev', 'format', 'cache', 'fs'],
  'index.ts': ['api', 'util', 'blockdev', 'build'],
};

/** Globals that make runs nondeterministic, banned outside runtime/, cli/ and fuse/. */
const BANNED = [/\bDate\.now\(/, /\bMath\.random\(/, /\bsetTimeout\(/, /\bsetInterval\(/, /\bconsole\./];
const BANNED_OK = new Set(['runtime', 'cli', 'fuse', 'testing']);

function walk(dir: string, out: string[] = []): string[] {
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (n.endsWith('.ts')) out.push(p);
  }
  return out;
}

function layerOf(file: string): string {
  const rel = relative(SRC, file).split(sep);
  return rel.length === 1 ? (rel[0] ?? '') : (rel[0] ?? '');
}

const IMPORT_RE = /^\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|^\s*import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm;

function importsOf(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec !== undefined) out.push(spec);
  }
  return out;
}

test('layers: each src/ folder imports only the layers below it', () => {
  const violations: string[] = [];
  for (const file of walk(SRC)) {
    const layer = layerOf(file);
    const allowed = ALLOWED[layer];
    if (allowed === undefined) {
      violations.push(`${relative(ROOT, file)}: folder "${layer}" has no entry in the layer table`);
      continue;
    }
    for (const spec of importsOf(readFileSync(file, 'utf8'))) {
      if (!spec.startsWith('.')) continue;
      const target = resolve(dirname(file), spec);
      if (!target.startsWith(SRC + sep)) {
        violations.push(`${relative(ROOT, file)} imports ${spec}, outside src/`);
        continue;
      }
      const tl = layerOf(target.replace(/\.js$/, '.ts'));
      if (tl !== layer && !allowed.includes(tl)) {
        violations.push(`${relative(ROOT, file)} (${layer}) imports ${spec} (${tl})`);
      }
    }
  }
  assert.deepEqual(violations, []);
});

test('layers: nondeterministic globals stay in runtime/, cli/ and fuse/', () => {
  const violations: string[] = [];
  for (const file of walk(SRC)) {
    if (BANNED_OK.has(layerOf(file))) continue;
    const lines = readFileSync(file, 'utf8').split('\n');
    lines.forEach((line, i) => {
      if (line.trim().startsWith('*') || line.trim().startsWith('//')) return;
      for (const re of BANNED) if (re.test(line)) violations.push(`${relative(ROOT, file)}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(violations, []);
});

test('layers: the checker sees a violation when one exists (canary)', () => {
  const text = "import { x } from '../fs/inode.js';\nexport * from './y.js';\nimport './z.js';";
  assert.deepEqual(importsOf(text), ['../fs/inode.js', './y.js', './z.js']);
});
