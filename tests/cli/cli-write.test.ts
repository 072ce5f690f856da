/**
 * The write verbs end to end through the ext4ts command (child processes), one per invocation
 * and as an `ext4ts shell` script, checked with debugfs and e2fsck; the shell's error contract
 * (stops at the first failing line, names it, keeps what succeeded, exits 1).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const CLI = resolve(import.meta.dirname, '../../src/cli/main.js');
const work = mkdtempSync(join(tmpdir(), 'ext4ts-cliw-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

function ext4ts(args: string[], input?: string): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { input, maxBuffer: 1 << 26 });
  return { code: r.status, out: r.stdout.toString(), err: r.stderr.toString() };
}

function debugfs(img: string, cmd: string): string {
  return execFileSync('debugfs', ['-R', cmd, img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
}

function assertClean(img: string): void {
  const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const noise = r.stdout.split('\n').filter((l) => l !== '' && !/^Pass \d|^e2fsck \d|^[^:]+: \d+\/\d+ files/.test(l));
  assert.deepEqual(noise, [], r.stdout);
}

function mkimg(name: string): string {
  const img = join(work, name);
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', img, '32M'], { stdio: 'pipe' });
  return img;
}

test('write verbs one per invocation: mkdir -p, touch -d, ln, ln -s, chmod, chown, truncate, setfattr, mv, rm -r', () => {
  const img = mkimg('verbs.img');
  const ok = (...a: string[]): void => {
    const r = ext4ts(a);
    assert.equal(r.code, 0, `${a.join(' ')}: ${r.err}`);
  };
  ok('mkdir', '-p', img, '/a/b/c');
  ok('touch', img, '/a/f');
  ok('touch', '-d', '@1700000000.25', img, '/a/f');
  ok('ln', img, '/a/f', '/a/b/hard');
  ok('ln', '-s', img, '../f', '/a/b/soft');
  ok('chmod', img, '0640', '/a/f');
  ok('chown', img, '1000:100', '/a/f');
  ok('truncate', img, '5M', '/a/f');
  ok('setfattr', img, 'user.note', 'hello', '/a/f');
  ok('mkdir', img, '/gone');
  ok('touch', img, '/gone/x');
  ok('rm', '-r', img, '/gone');
  ok('mv', img, '/a/b/c', '/c2');
  assertClean(img);
  const st = debugfs(img, 'stat /a/f');
  assert.match(st, /Mode:\s+0640/);
  assert.match(st, /User:\s+1000\s+Group:\s+100/);
  assert.match(st, /Size: 5242880/);
  assert.match(st, /Links: 2/);
  assert.match(st, /atime: 0x6553f100:3b9aca00/); // 1700000000 s; extra = 250000000 ns << 2 (truncate later moved mtime)
  assert.match(debugfs(img, 'ea_get /a/f user.note'), /hello/);
  assert.match(debugfs(img, 'stat /a/b/soft'), /Fast link dest: "..\/f"/);
  const root = debugfs(img, 'ls -p /');
  assert.match(root, /\/c2\//);
  assert.doesNotMatch(root, /\/gone\//);
  const r = ext4ts(['rmdir', img, '/a']);
  assert.equal(r.code, 1);
  assert.match(r.err, /^ext4ts: ENOTEMPTY/);
  assert.equal(r.err.trim().split('\n').length, 1, 'one line');
});

test('ext4ts shell: many verbs on one open image, quoted names, comments', () => {
  const img = mkimg('shell.img');
  const lines = ['# build a small tree', 'mkdir -p /etc/conf.d', 'touch "/etc/with space"', "touch '/etc/quote\"d'", 'mkdir /var'];
  for (let i = 0; i < 300; i++) lines.push(`touch /var/file-${i}`);
  lines.push('ln -s /etc/conf.d /link', 'chmod 0700 /var', 'mv /var /var2', 'setfattr user.x 0x00ff /etc/conf.d');
  const r = ext4ts(['shell', img], lines.join('\n') + '\n');
  assert.equal(r.code, 0, r.err);
  assertClean(img);
  const ls = debugfs(img, 'ls /var2');
  assert.equal((ls.match(/file-\d+/g) ?? []).length, 300);
  assert.match(debugfs(img, 'ls /etc'), /with space/);
  assert.match(debugfs(img, 'ls /etc'), /quote"d/);
});

test('ext4ts shell: stops at the first failing line, names it, keeps the lines before it', () => {
  const img = mkimg('shellfail.img');
  const r = ext4ts(['shell', img], 'mkdir /ok\nmkdir /ok\nmkdir /never\n');
  assert.equal(r.code, 1);
  assert.match(r.err, /line 2: EEXIST/);
  assertClean(img);
  const ls = debugfs(img, 'ls /');
  assert.match(ls, /\bok\b/);
  assert.doesNotMatch(ls, /never/);
  const bad = ext4ts(['shell', img], 'frobnicate /x\n');
  assert.equal(bad.code, 1);
  assert.match(bad.err, /line 1: .*frobnicate/);
});
