#!/usr/bin/env bash
# make-fixtures.sh — builds the golden test-fixture corpus in tests/fixtures/.
#
# Every image is made by the real mkfs (e2fsprogs) and populated THROUGH THE LINUX KERNEL:
# the image is loop-mounted (`mount -o loop,noatime`), files are created with ordinary tools
# (mkdir, ln, mknod, mkfifo, fallocate, setfattr, touch -d, chown, a seeded Node generator for
# file data, python3 for a unix socket), and while it is still mounted scripts/manifest.mjs
# records the kernel's view (lstat/readlink/read/getfattr) as <name>.manifest.json. Then the
# image is unmounted, `e2fsck -fn` must exit 0, selected extent lists / block maps / htree roots
# are dumped with debugfs into <name>.debugfs-ex.txt, and the image is stored as
# <name>.img.gz (gzip -9 -n).
#
# Requirements: root, loop devices (/dev/loop-control), the kernel's ext4 driver, e2fsprogs
# (mkfs.ext2/3/4, tune2fs, debugfs, e2fsck, dumpe2fs; written for 1.47.0), util-linux
# (fallocate, mount, losetup), attr (setfattr/getfattr: `apt-get install attr`), python3, node.
#
# Usage: sudo bash scripts/make-fixtures.sh [NAME...]    (default: every fixture)
#
# Determinism: mkfs runs with a pinned mke2fs.conf (below, = the e2fsprogs 1.47.0 Debian default),
# E2FSPROGS_FAKE_TIME, a fixed UUID and hash seed per image. File data comes from a seeded PRNG,
# names, modes, owners, atime and mtime are fixed. What the kernel decides is NOT reproducible
# bit for bit between runs: ctime and crtime (the clock at population time), block/inode
# allocation details, mount counts/times in the superblock, journal contents. The manifests
# record whatever the kernel produced, so the corpus is self-consistent; re-running the script
# regenerates images and manifests together.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/tests/fixtures
MANIFEST_JS=$ROOT/scripts/manifest.mjs

if [ "$(id -u)" != 0 ]; then echo "make-fixtures: must run as root (loop mounts)" >&2; exit 1; fi
[ -e /dev/loop-control ] || { echo "make-fixtures: no /dev/loop-control" >&2; exit 1; }
grep -qw ext4 /proc/filesystems || modprobe ext4 2>/dev/null || true
grep -qw ext4 /proc/filesystems || { echo "make-fixtures: kernel has no ext4" >&2; exit 1; }
for t in mkfs.ext4 mkfs.ext3 mkfs.ext2 tune2fs debugfs e2fsck dumpe2fs fallocate losetup setfattr getfattr python3 node gzip mknod mkfifo; do
  command -v "$t" >/dev/null || { echo "make-fixtures: missing tool $t" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/ext4ts-fixtures.XXXXXX)
MNT=$WORK/mnt
mkdir -p "$MNT" "$OUT"
CUR_IMG=""

cleanup() {
  local rc=$?
  set +e
  if mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi
  # Detach only loop devices backed by files in our work dir.
  for img in "$WORK"/*.img; do
    [ -e "$img" ] || continue
    for dev in $(losetup -j "$img" -O NAME -n 2>/dev/null); do losetup -d "$dev"; done
  done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

# ---------------------------------------------------------------- pinned mkfs configuration
export MKE2FS_CONFIG=$WORK/mke2fs.conf
cat >"$MKE2FS_CONFIG" <<'EOF'
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext3 = {
		features = has_journal
	}
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	small = {
		blocksize = 1024
		inode_ratio = 4096
	}
	floppy = {
		blocksize = 1024
		inode_ratio = 8192
	}
EOF
export E2FSPROGS_FAKE_TIME=1700000000
MKFS_ENV="MKE2FS_CONFIG=<pinned copy of e2fsprogs 1.47.0 default, see make-fixtures.sh> E2FSPROGS_FAKE_TIME=1700000000"

# ---------------------------------------------------------------- deterministic data generator
# node gen.mjs MODE SEED LEN PATH [OFFSET]
#   MODE text: 64-byte lines "<seed> @<offset hex> <8 pseudo-random letters>....\n" — every
#              line is unique (catches misplaced blocks) yet compresses well (corpus stays small).
#   MODE rand: xorshift32 bytes (incompressible; used sparingly).
# With OFFSET the file is opened without truncation and written at that offset (pwrite).
cat >"$WORK/gen.mjs" <<'EOF'
import { openSync, writeSync, closeSync } from 'node:fs';
const [mode, seedStr, lenStr, path, offStr] = process.argv.slice(2);
const len = Number(lenStr), off = offStr === undefined ? 0 : Number(offStr);
let s = 0x9e3779b9 ^ [...seedStr].reduce((h, c) => Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0, 2166136261);
if (s === 0) s = 1;
const next = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
const buf = Buffer.alloc(len);
if (mode === 'rand') {
  for (let i = 0; i < len; i++) buf[i] = next() & 0xff;
} else {
  const tag = seedStr.slice(0, 16).padEnd(16, '.');
  for (let pos = 0; pos < len; pos += 64) {
    let line = `${tag} @${(off + pos).toString(16).padStart(10, '0')} `;
    const r = next();
    for (let k = 0; k < 8; k++) line += String.fromCharCode(97 + ((r >>> (4 * k)) & 15));
    line = line.padEnd(63, '.') + '\n';
    buf.write(line.slice(0, Math.min(64, len - pos)), pos, 'latin1');
  }
}
let fd;
if (offStr === undefined) fd = openSync(path, 'w');
else {
  try { fd = openSync(path, 'r+'); } catch { fd = openSync(path, 'w'); }
}
writeSync(fd, buf, 0, len, off);
closeSync(fd);
EOF
gen() { node "$WORK/gen.mjs" "$@"; }
# hex string of N generated text bytes (for setfattr -v 0x...)
genhex() { gen text "$1" "$2" "$WORK/hex.tmp" && od -An -v -tx1 "$WORK/hex.tmp" | tr -d ' \n'; }

# ---------------------------------------------------------------- image lifecycle helpers
IMG_NAME="" IMG="" MKFS_CMD="" IMG_BS="" FSTYPE="" NOTES=""

# new_image NAME SIZE_MIB FSTYPE MKFS-ARGV...   (the image path is appended to MKFS-ARGV)
new_image() {
  IMG_NAME=$1; local size=$2; FSTYPE=$3; shift 3
  IMG=$WORK/$IMG_NAME.img
  rm -f "$IMG"
  truncate -s "${size}M" "$IMG"
  "$@" "$IMG" >/dev/null
  MKFS_CMD="$* $IMG_NAME.img"   # the image file was made by: truncate -s ${size}M (manifest: imageBytes)
  IMG_BS=$(dumpe2fs -h "$IMG" 2>/dev/null | awk -F: '/^Block size/ {gsub(/ /,"",$2); print $2}')
  NOTES=""
  echo "== $IMG_NAME (${size} MiB, ${IMG_BS}-byte blocks): $*"
}

mount_img() { mount -t "$FSTYPE" -o loop,noatime "$IMG" "$MNT"; }

# Fixed, per-path atime/mtime for every entry (touch never changes the parent, so order is free).
# Entry i (in C-locale path order) gets distinct seconds and nanoseconds for atime and mtime.
fixed_times() {
  local i=0 p as an ms mn
  while IFS= read -r -d '' p; do
    as=$((1600000000 + i * 7919)); an=$(( (i * 104729 + 1) % 1000000000 ))
    ms=$((1500000000 + i * 6007)); mn=$(( (i * 15485863 + 7) % 1000000000 ))
    touch -h -a -d "@$as.$(printf %09d "$an")" "$p"
    touch -h -m -d "@$ms.$(printf %09d "$mn")" "$p"
    i=$((i + 1))
  done < <(find "$MNT" -path "$MNT/lost+found/*" -prune -o -print0 | LC_ALL=C sort -z)
}

# Special timestamps: before 1970, after 2038, boundaries, ns extremes.
special_times() {
  local d=$MNT/times
  mkdir -p "$d"
  local spec
  for spec in \
    "apollo|1969-07-20 20:17:40.123456789 UTC|1969-07-20 20:17:40.987654321 UTC" \
    "pi-day-2242|2242-03-16 12:56:31.999999999 UTC|2242-03-16 12:56:32.000000001 UTC" \
    "epoch|1970-01-01 00:00:00.000000000 UTC|1970-01-01 00:00:00.000000000 UTC" \
    "before-epoch-1ns|1969-12-31 23:59:59.999999999 UTC|1969-12-31 23:59:59.999999999 UTC" \
    "y2038-last|2038-01-19 03:14:07.999999999 UTC|2038-01-19 03:14:07.500000000 UTC" \
    "y2038-first|2038-01-19 03:14:08.000000000 UTC|2038-01-19 03:14:08.000000001 UTC" \
    "min32|1901-12-13 20:45:52.000000000 UTC|1901-12-13 20:45:52.000000001 UTC" \
    "y2106|2106-02-07 06:28:16.000000000 UTC|2106-02-07 06:28:15.999999999 UTC" \
    "y2446|2446-05-10 22:38:55.999999999 UTC|2446-05-10 22:38:55.000000000 UTC" \
    "clamp-high-2500|2500-01-01 00:00:00.5 UTC|2500-01-01 00:00:00.5 UTC" \
    "clamp-low-1800|1800-01-01 00:00:00.25 UTC|1800-01-01 00:00:00.25 UTC"; do
    local name=${spec%%|*} rest=${spec#*|}
    local at=${rest%%|*} mt=${rest#*|}
    [ -e "$d/$name" ] || gen text "time-$name" 17 "$d/$name"
    touch -h -a -d "$at" "$d/$name"
    touch -h -m -d "$mt" "$d/$name"
  done
  mkdir -p "$d/moon-dir"
  # directory and symlink with pre-1970 times (applied after the generic pass by the caller)
  [ -L "$d/apollo-link" ] || ln -s apollo "$d/apollo-link"
}
apply_special_times_again() {
  # fixed_times() rewrote everything; re-apply the special ones on top.
  special_times
  touch -h -a -d "1969-07-21 02:56:15.000000001 UTC" "$MNT/times/moon-dir"
  touch -h -m -d "1969-07-20 20:17:40.000000000 UTC" "$MNT/times/moon-dir"
  touch -h -a -d "2242-03-16 00:00:00.000000000 UTC" "$MNT/times/apollo-link"
  touch -h -m -d "1969-07-20 20:17:40.5 UTC" "$MNT/times/apollo-link"
}

# finish: fixed times, manifest (kernel view, still mounted), unmount, fsck, debugfs dumps, gzip.
# $1 = newline-separated htree directories whose root header goes into the debugfs dump.
finish() {
  local extra=${1:-}
  fixed_times
  [ -d "$MNT/times" ] && apply_special_times_again
  sync
  local meta
  meta=$(node -e 'console.log(JSON.stringify({mkfsEnv: process.argv[1], fsType: process.argv[2], notes: process.argv[3] || undefined}))' "$MKFS_ENV" "$FSTYPE" "$NOTES")
  node "$MANIFEST_JS" "$MNT" --image "$IMG_NAME" --mkfs "$MKFS_CMD" --block-size "$IMG_BS" --meta "$meta" --out "$WORK/$IMG_NAME.manifest.json"
  umount "$MNT"
  finalize "$extra"
}

# After the image is unmounted (or copied): fsck, feature list, debugfs dumps, compress, install.
finalize() {
  local extra=${1:-}
  local fsck_out
  if ! fsck_out=$(e2fsck -fn "$IMG" 2>&1); then
    echo "$fsck_out" >&2
    echo "make-fixtures: e2fsck -fn is not clean for $IMG_NAME" >&2
    exit 1
  fi
  # debugfs never replays the journal: for replay-required images dump a replayed copy.
  local DUMP_IMG=$IMG
  if [ "${REPLAY_FOR_DUMPS:-0}" = 1 ]; then
    DUMP_IMG=$WORK/dump.img
    cp --sparse=always "$IMG" "$DUMP_IMG"
    e2fsck -E journal_only -y "$DUMP_IMG" >/dev/null 2>&1 || true
  fi
  local features
  features=$(dumpe2fs -h "$IMG" 2>/dev/null | sed -n 's/^Filesystem features: *//p')
  local isize
  isize=$(dumpe2fs -h "$IMG" 2>/dev/null | awk -F: '/^Inode size/ {gsub(/[ \t]/,"",$2); print $2}')
  node "$MANIFEST_JS" --patch "$WORK/$IMG_NAME.manifest.json" --meta "$(node -e 'console.log(JSON.stringify({imageBytes: Number(process.argv[3]), features: process.argv[1].trim().split(/\s+/), inodeSize: Number(process.argv[2])}))' "$features" "$isize" "$(stat -c %s "$IMG")")"
  # debugfs dumps: extents (or block maps for non-extent files) of every non-empty file and of
  # every directory, plus the root header of each listed htree dir.
  local cmds
  cmds=$(node -e '
    const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const q = (p) => `"${p}"`;
    const out = [];
    for (const e of m.entries) {
      if (e.path.startsWith("/lost+found")) continue;
      if ((e.type === "file" && e.size > 0) || e.type === "dir") out.push(`ex ${q(e.path)}`);
    }
    console.log(out.join("\n"));' "$WORK/$IMG_NAME.manifest.json")
  {
    if [ "$DUMP_IMG" = "$IMG" ]; then
      echo "# $(debugfs -V 2>&1 | head -1) on $IMG_NAME.img after unmount (debugfs does not replay journals)."
    else
      echo "# $(debugfs -V 2>&1 | head -1) on a copy of $IMG_NAME.img after 'e2fsck -E journal_only -y' (journal replayed)."
    fi
    echo "# 'ex' lists extents; for block-mapped inodes (no EXTENTS_FL) 'stat' is dumped instead."
    echo "# 'htree-root' sections hold only the root/index header lines of 'htree DIR'."
    while IFS= read -r c; do
      [ -n "$c" ] || continue
      local p=${c#ex }
      p=${p#\"}; p=${p%\"}
      local exout
      exout=$(debugfs -R "ex \"$p\"" "$DUMP_IMG" 2>&1 | grep -v '^debugfs [0-9]')
      if grep -q "does not uses extent block maps" <<<"$exout"; then
        echo "debugfs: stat \"$p\""
        debugfs -R "stat \"$p\"" "$DUMP_IMG" 2>/dev/null
      else
        echo "debugfs: ex \"$p\""
        printf '%s\n' "$exout"
      fi
    done <<<"$cmds"
    while IFS= read -r d; do
      [ -n "$d" ] || continue
      echo "debugfs: htree-root \"$d\""
      debugfs -R "htree \"$d\"" "$DUMP_IMG" 2>/dev/null | grep -E "Root node dump|Reserved zero|Indirect levels|Hash Version|Number of entries|^Entry #[0-9]+: Hash 0x[0-9a-f]+, block [0-9]+$" | head -400
    done <<<"$extra"
  } >"$WORK/$IMG_NAME.debugfs-ex.txt"
  gzip -9 -n -c "$IMG" >"$OUT/$IMG_NAME.img.gz"
  cp "$WORK/$IMG_NAME.manifest.json" "$OUT/$IMG_NAME.manifest.json"
  cp "$WORK/$IMG_NAME.debugfs-ex.txt" "$OUT/$IMG_NAME.debugfs-ex.txt"
  [ "$DUMP_IMG" = "$IMG" ] || rm -f "$DUMP_IMG"
  echo "   -> $(stat -c %s "$OUT/$IMG_NAME.img.gz") bytes compressed, $(grep -c '"path"' "$OUT/$IMG_NAME.manifest.json") entries"
  rm -f "$IMG"
}

# ---------------------------------------------------------------- verification helpers
# section FILE HEADER: the lines after "debugfs: HEADER" up to the next "debugfs:" line.
section() { awk -v h="debugfs: $2" '$0 == h {f=1; next} /^debugfs: / {f=0} f' "$1"; }
require() { if ! eval "$1"; then echo "make-fixtures: $IMG_NAME: check failed: $2" >&2; exit 1; fi; echo "   ok: $2"; }

# Builds a name of exactly LEN bytes from PREFIX padded with a letter.
padname() { local prefix=$1 len=$2 ch=${3:-x}; local n=$prefix; while [ ${#n} -lt "$len" ]; do n+=$ch; done; printf %s "${n:0:$len}"; }

# ---------------------------------------------------------------- common content
# A tree shared by several images (ext4-2k, oldcsum, features, needs-recovery): small files,
# a subdirectory, links, a symlink and one xattr.
common_small_tree() {
  local m=$MNT
  mkdir -p "$m/etc" "$m/home/user/docs"
  gen text common-hosts 187 "$m/etc/hosts"
  gen text common-readme 3000 "$m/home/user/docs/readme.txt"
  gen text common-notes 9000 "$m/home/user/notes"
  : >"$m/home/user/empty"
  ln -s ../etc/hosts "$m/home/hosts-link"
  ln "$m/home/user/notes" "$m/etc/notes-hardlink"
  setfattr -n user.origin -v "common tree" "$m/home/user/docs/readme.txt"
  chown -R 1000:1000 "$m/home/user"
  chmod 0700 "$m/home/user"
}

# ================================================================= ext4-4k
build_ext4_4k() {
  new_image ext4-4k 32 ext4 mkfs.ext4 -q -F -b 4096 -U 4b4b4b4b-0000-4000-8000-000000000001 -E hash_seed=4b4b4b4b-1111-4111-8111-000000000001
  NOTES="mkfs.ext4 defaults but -b 4096 explicit: the default mke2fs.conf would pick the 'small' type (1 KiB blocks) for 32 MiB."
  mount_img
  local m=$MNT

  # deep tree, 10 levels
  local p=$m/deep
  for i in 1 2 3 4 5 6 7 8 9 10; do p=$p/level$i; done
  mkdir -p "$p"
  gen text deep-leaf 333 "$p/leaf.txt"

  # sizes
  mkdir "$m/sizes"
  : >"$m/sizes/empty"
  for n in 1 4095 4096 4097 8191 8192 12289; do gen text "size-$n" "$n" "$m/sizes/s$n"; done
  gen rand size-rand-4097 4097 "$m/sizes/random-4097"
  gen text "size-1M+7" $((1048576 + 7)) "$m/sizes/one-mib-plus-7"

  # sparse: data at 0 and at 10 MiB, hole between; and one that is all hole (size only)
  mkdir "$m/sparse"
  gen text sparse-head 100 "$m/sparse/holey"
  gen text sparse-tail 5000 "$m/sparse/holey" $((10 * 1048576))
  truncate -s 3M "$m/sparse/all-hole"
  gen text sparse-mid 10 "$m/sparse/hole-then-data" $((64 * 1024 + 3))

  # fallocate: unwritten extents
  mkdir "$m/prealloc"
  fallocate -l 64K "$m/prealloc/unwritten-64k"
  fallocate -l 64K "$m/prealloc/partly-written"
  sync
  gen text partly-written 5000 "$m/prealloc/partly-written" 8192
  gen text keep-size 100 "$m/prealloc/keep-size"
  sync
  fallocate --keep-size -o 0 -l 32K "$m/prealloc/keep-size"
  sync

  # symlinks
  mkdir "$m/links"
  ln -s target-file "$m/links/fast"
  ln -s "$(padname ../sizes/ 59 a)" "$m/links/fast-59"
  ln -s "$(padname ../sizes/ 60 b)" "$m/links/slow-60"
  ln -s "$(padname /very/long/symlink/target/ 200 c)" "$m/links/slow-200"
  ln -s ../deep/level1/level2 "$m/links/to-dir"
  ln -s "/does/not/exist" "$m/links/dangling"
  ln -s "$(printf 'bad-\xff\xfe-utf8')" "$m/links/non-utf8-target"
  ln -s "$(padname /t/ 4000 z)" "$m/links/slow-4000"

  # hard links: 3 names for one inode in different dirs, and a 2-name pair
  gen text hardlinked 777 "$m/links/original"
  ln "$m/links/original" "$m/deep/level1/second-name"
  ln "$m/links/original" "$m/sizes/third-name"
  gen text pair 10 "$m/links/pair-a"
  ln "$m/links/pair-a" "$m/links/pair-b"

  # xattrs
  mkdir "$m/xattr"
  gen text xattr-small 64 "$m/xattr/small"
  setfattr -n user.comment -v "hello" "$m/xattr/small"
  setfattr -n trusted.secret -v 0x0102030405 "$m/xattr/small"
  setfattr -n security.label -v "system_u:object_r:x" "$m/xattr/small"
  setfattr -n user.empty "$m/xattr/small"
  gen text xattr-big 64 "$m/xattr/big"
  setfattr -n user.small -v "in-inode" "$m/xattr/big"
  setfattr -n user.big -v "0x$(genhex big-xattr-value 1500)" "$m/xattr/big"
  # identical large xattr on two files: the kernel shares one xattr block (refcount 2)
  local shared; shared=$(genhex shared-xattr 1200)
  : >"$m/xattr/shared-1"; : >"$m/xattr/shared-2"
  setfattr -n user.shared -v "0x$shared" "$m/xattr/shared-1"
  setfattr -n user.shared -v "0x$shared" "$m/xattr/shared-2"
  : >"$m/xattr/many"
  for i in $(seq -w 1 40); do setfattr -n "user.attr$i" -v "value-number-$i" "$m/xattr/many"; done
  mkdir "$m/xattr/dir-with-xattr"
  setfattr -n user.on-dir -v "dir value" "$m/xattr/dir-with-xattr"
  ln -s small "$m/xattr/symlink-with-xattr"
  setfattr -h -n trusted.on-link -v "link value" "$m/xattr/symlink-with-xattr"

  # special files
  mkdir "$m/special"
  mkfifo "$m/special/fifo"
  mknod "$m/special/chr-1-3" c 1 3
  mknod "$m/special/blk-8-1" b 8 1
  mknod "$m/special/chr-300-70000" c 300 70000
  mknod "$m/special/blk-259-1048575" b 259 1048575
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' "$m/special/socket"

  # names
  mkdir "$m/names"
  : >"$m/names/with space"
  : >"$m/names/ünïcödé-名前.txt"
  : >"$m/names/emoji-🙂"
  : >"$m/names/.hidden"
  : >"$m/names/-leading-dash"
  : >"$m/names/$(padname long255- 255 n)"
  local u=""; for i in $(seq 1 85); do u+="é"; done; u+=""   # 85 x 2 bytes = 170
  for i in $(seq 1 28); do u+="名"; done                          # + 28 x 3 bytes = 254
  u+="x"                                                             # = 255 bytes
  : >"$m/names/$u"
  gen text name-data 50 "$m/names/with space"

  # modes and owners
  mkdir "$m/modes"
  for spec in 4755:setuid 2755:setgid 6755:setuid-setgid 1777:sticky-file 0000:no-perms 0444:read-only 0600:private 0777:all; do
    gen text "mode-${spec#*:}" 20 "$m/modes/${spec#*:}"
    chmod "${spec%%:*}" "$m/modes/${spec#*:}"
  done
  mkdir "$m/modes/sticky-dir" "$m/modes/setgid-dir"
  chmod 1777 "$m/modes/sticky-dir"; chmod 2775 "$m/modes/setgid-dir"
  mkdir "$m/owners"
  for spec in 1000:1000 65534:65534 65535:65535 65536:65536 100000:200000 4294967294:4294967294; do
    : >"$m/owners/u${spec%%:*}"
    chown "$spec" "$m/owners/u${spec%%:*}"
  done
  chown -h 100000:200000 "$m/links/fast"
  chown 123456:654321 "$m/deep/level1"

  # htree directory, one level: ~300 entries with ~36-byte names
  mkdir "$m/bigdir"
  for i in $(seq -w 1 300); do : >"$m/bigdir/entry-$i-$(padname '' 24 q)"; done
  gen text bigdir-data 4000 "$m/bigdir/entry-150-$(padname '' 24 q)"
  mkdir "$m/emptydir"

  special_times
  finish "/bigdir"
  require '[ "$(grep -c "Indirect levels: 0" "$OUT/ext4-4k.debugfs-ex.txt")" = 1 ]' "/bigdir is an htree with indirect_levels 0"
  require 'grep -q "Uninit" "$OUT/ext4-4k.debugfs-ex.txt"' "unwritten extents present"
}

# ================================================================= ext4-1k
build_ext4_1k() {
  new_image ext4-1k 32 ext4 mkfs.ext4 -q -F -b 1024 -U 1b1b1b1b-0000-4000-8000-000000000001 -E hash_seed=1b1b1b1b-1111-4111-8111-000000000001
  mount_img
  local m=$MNT
  # two-level htree: 600 names of 240 bytes
  mkdir "$m/htree2"
  for i in $(seq -w 1 600); do : >"$m/htree2/$(padname "name-$i-" 240 w)"; done
  gen text htree2-data 2222 "$m/htree2/$(padname "name-300-" 240 w)"
  # extent tree depth 2: 1 MiB written, every other 1 KiB block punched -> 512 extents
  gen text frag-depth2 1048576 "$m/frag"
  sync
  for i in $(seq 1 2 1023); do fallocate --punch-hole -o $((i * 1024)) -l 1024 "$m/frag"; done
  # extent tree depth 1: 40 extents
  gen text frag-depth1 81920 "$m/frag-depth1"
  sync
  for i in $(seq 1 2 79); do fallocate --punch-hole -o $((i * 1024)) -l 1024 "$m/frag-depth1"; done
  # file spanning block groups (8192 blocks per group): 9 MiB of written zero bytes
  head -c $((9 * 1048576)) /dev/zero >"$m/zeros-9m"
  gen text zeros-9m-marks 64 "$m/zeros-9m" 0
  gen text zeros-9m-marks2 64 "$m/zeros-9m" $((9 * 1048576 - 64))
  # sub-block and small files
  mkdir "$m/small"
  : >"$m/small/empty"
  for n in 1 100 1023 1024 1025 2047 2048 3000; do gen text "small-$n" "$n" "$m/small/f$n"; done
  gen text xattr-1k 10 "$m/small/xattr-block"
  setfattr -n user.big -v "0x$(genhex xattr-1k-value 700)" "$m/small/xattr-block"
  ln -s f100 "$m/small/fast-link"
  ln -s "$(padname /slow/link/target/on/1k/ 300 s)" "$m/small/slow-link"
  special_times
  finish "/htree2"
  require '[ "$(grep -c "Indirect levels: 1" "$OUT/ext4-1k.debugfs-ex.txt")" = 1 ]' "/htree2 is an htree with indirect_levels 1 (two levels)"
  require 'section "$OUT/ext4-1k.debugfs-ex.txt" "ex \"/frag\"" | grep -q "^ 0/ 2 "' "/frag extent tree depth 2"
  require '[ "$(section "$OUT/ext4-1k.debugfs-ex.txt" "ex \"/frag\"" | grep -c "^ 2/ 2 ")" -ge 400 ]' "/frag has >= 400 leaf extents"
  require 'section "$OUT/ext4-1k.debugfs-ex.txt" "ex \"/frag-depth1\"" | grep -q "^ 0/ 1 "' "/frag-depth1 extent tree depth 1"
}

# ================================================================= ext4-2k
build_ext4_2k() {
  new_image ext4-2k 40 ext4 mkfs.ext4 -q -F -b 2048 -U 2b2b2b2b-0000-4000-8000-000000000001 -E hash_seed=2b2b2b2b-1111-4111-8111-000000000001
  NOTES="40 MiB so that it has two block groups (16384 blocks of 2 KiB per group)."
  mount_img
  local m=$MNT
  common_small_tree
  mkdir "$m/sizes"
  for n in 0 1 2047 2048 2049 4096 65537; do gen text "2k-size-$n" "$n" "$m/sizes/s$n"; done
  gen text 2k-sparse-a 10 "$m/sizes/sparse"
  gen text 2k-sparse-b 3000 "$m/sizes/sparse" $((20 * 1048576 + 100))
  fallocate -l 20K "$m/sizes/unwritten"
  gen text 2k-frag 61440 "$m/sizes/frag"
  sync
  for i in $(seq 1 2 29); do fallocate --punch-hole -o $((i * 2048)) -l 2048 "$m/sizes/frag"; done
  mkdir "$m/dir200"
  for i in $(seq -w 1 200); do : >"$m/dir200/$(padname "ent-$i-" 40 k)"; done
  ln -s "$(padname /two/k/slow/ 120 t)" "$m/slow-link"
  gen text 2k-xattr 1 "$m/xattr-file"
  setfattr -n user.big -v "0x$(genhex 2k-xattr-value 1800)" "$m/xattr-file"
  setfattr -n trusted.t -v 0xdeadbeef "$m/xattr-file"
  mkfifo "$m/fifo"
  special_times
  finish "/dir200"
}

# ================================================================= inline
build_inline() {
  new_image inline 16 ext4 mkfs.ext4 -q -F -b 4096 -O inline_data -U 1a1a1a1a-0000-4000-8000-000000000001 -E hash_seed=1a1a1a1a-1111-4111-8111-000000000001
  NOTES="256-byte inodes: files up to 60 bytes live in i_block, up to ~128 bytes also use system.data in the inode; 140+ bytes fall back to extents."
  mount_img
  local m=$MNT
  for n in 0 1 30 59 60 61 100 128 140 200 5000; do gen text "inline-$n" "$n" "$m/f$n"; done
  gen text inline-xattr 40 "$m/with-xattr"
  setfattr -n user.note -v "tiny" "$m/with-xattr"
  mkdir "$m/tiny-dir" "$m/empty-dir" "$m/medium-dir" "$m/grown-dir"
  : >"$m/tiny-dir/a"; gen text inline-b 12 "$m/tiny-dir/b"
  for i in 1 2 3 4 5; do gen text "inline-med-$i" 20 "$m/medium-dir/entry-$i"; done   # > 60 bytes of dirents: uses system.data
  for i in $(seq -w 1 40); do : >"$m/grown-dir/a-longer-name-$i"; done           # converted to a block
  ln -s f30 "$m/fast-link"
  ln -s "$(padname /inline/slow/ 90 i)" "$m/slow-link"
  special_times
  finish ""
  require 'section "$OUT/inline.debugfs-ex.txt" "stat \"/f128\"" | grep -q "Size of inline data: 128"' "/f128 is inline (system.data used)"
  require 'section "$OUT/inline.debugfs-ex.txt" "stat \"/f30\"" | grep -q "Size of inline data: 60"' "/f30 is inline (i_block only)"
  require 'section "$OUT/inline.debugfs-ex.txt" "ex \"/f140\"" | grep -q "^ 0/ 0 "' "/f140 uses extents"
}

# ================================================================= ext2 / ext3 (block-mapped)
blockmap_content() {
  local m=$MNT tag=$1
  mkdir -p "$m/maps"
  gen text "$tag-direct" 5000 "$m/maps/direct-only"                 # blocks 0..4
  gen text "$tag-single" $((100 * 1024)) "$m/maps/single-indirect"   # up to block 99
  gen text "$tag-double" $((300 * 1024 + 11)) "$m/maps/double-indirect"   # past block 268
  # triple indirect on 1 KiB blocks starts at block 12 + 256 + 65536 = 65804 (64 MiB + 268 KiB)
  gen text "$tag-triple-0" 1000 "$m/maps/triple-indirect-sparse"
  gen text "$tag-triple-1" 3000 "$m/maps/triple-indirect-sparse" $((65804 * 1024 + 512))
  gen text "$tag-triple-2" 100 "$m/maps/triple-indirect-sparse" $((70000 * 1024))
  gen text "$tag-dind-sparse" 2048 "$m/maps/holes-in-indirect" $((300 * 1024))
  truncate -s 200K "$m/maps/all-hole"
  gen text "$tag-hl" 1234 "$m/maps/hardlinked"
  mkdir "$m/other"
  ln "$m/maps/hardlinked" "$m/other/hardlink-2"
  ln "$m/maps/hardlinked" "$m/hardlink-3"
  ln -s maps/direct-only "$m/fast-link"
  ln -s "$(padname /block/mapped/slow/link/ 150 l)" "$m/slow-link"
  gen text "$tag-x" 10 "$m/other/xattr-file"
  setfattr -n user.k -v "v" "$m/other/xattr-file"
  setfattr -n user.big -v "0x$(genhex "$tag-xv" 600)" "$m/other/xattr-file"
  mknod "$m/other/chr" c 4 64
  mkfifo "$m/other/fifo"
  chown 100000:100000 "$m/other/xattr-file"
  mkdir "$m/dir300"
  for i in $(seq -w 1 300); do : >"$m/dir300/file-$i-$(padname '' 20 r)"; done
}
build_ext2() {
  new_image ext2 16 ext2 mkfs.ext2 -q -F -b 1024 -O ^dir_index -U e2e2e2e2-0000-4000-8000-000000000001 -E hash_seed=e2e2e2e2-1111-4111-8111-000000000001
  NOTES="dir_index disabled so /dir300 is a multi-block LINEAR directory (ext3 covers htree on block-mapped files). Mounted by the kernel's ext4 driver (it serves ext2). 256-byte inodes."
  mount_img
  blockmap_content ext2
  special_times
  finish ""
  require 'grep -q "(TIND)" "$OUT/ext2.debugfs-ex.txt"' "triple indirect block present"
  require 'grep -q "(DIND)" "$OUT/ext2.debugfs-ex.txt"' "double indirect block present"
}
build_ext3() {
  new_image ext3 16 ext3 mkfs.ext3 -q -F -b 1024 -I 128 -U e3e3e3e3-0000-4000-8000-000000000001 -E hash_seed=e3e3e3e3-1111-4111-8111-000000000001
  NOTES="-I 128: old 128-byte inodes (no crtime, no nanoseconds, no extra epoch bits: times outside 1901..2038 are clamped by the kernel). dir_index -> /dir300 is an htree."
  mount_img
  blockmap_content ext3
  special_times
  finish "/dir300"
  require 'grep -q "(TIND)" "$OUT/ext3.debugfs-ex.txt"' "triple indirect block present"
  require '[ "$(grep -c "Indirect levels: 0" "$OUT/ext3.debugfs-ex.txt")" = 1 ]' "/dir300 is an htree"
}

# ================================================================= oldcsum
build_oldcsum() {
  new_image oldcsum 16 ext4 mkfs.ext4 -q -F -b 1024 -O ^metadata_csum,^64bit,uninit_bg -U 0c0c0c0c-0000-4000-8000-000000000001 -E hash_seed=0c0c0c0c-1111-4111-8111-000000000001
  NOTES="crc16 group-descriptor checksums (uninit_bg = gdt_csum), 32-byte group descriptors, no metadata_csum."
  mount_img
  common_small_tree
  local m=$MNT
  gen text oldcsum-big 200000 "$m/big-file"
  mkdir "$m/dir150"
  for i in $(seq -w 1 150); do : >"$m/dir150/old-$i-$(padname '' 30 o)"; done
  ln -s "$(padname /old/csum/ 100 c)" "$m/slow-link"
  special_times
  finish "/dir150"
}

# ================================================================= hash variants
# NAME ALG FLAGS(1 signed, 2 unsigned)
build_hash() {
  local name=$1 alg=$2 flags=$3
  new_image "$name" 8 ext4 mkfs.ext4 -q -F -b 1024 -U 4a4a4a4a-0000-4000-8000-00000000000$flags -E hash_seed=4a4a4a4a-1111-4111-8111-000000000001
  tune2fs -E hash_alg="$alg" "$IMG" >/dev/null
  debugfs -w -R "ssv flags $flags" "$IMG" >/dev/null 2>&1
  MKFS_CMD="$MKFS_CMD; tune2fs -E hash_alg=$alg $name.img; debugfs -w -R 'ssv flags $flags' $name.img"
  local dh fl
  dh=$(dumpe2fs -h "$IMG" 2>/dev/null | sed -n 's/^Default directory hash: *//p')
  fl=$(dumpe2fs -h "$IMG" 2>/dev/null | sed -n 's/^Filesystem flags: *//p' | xargs)
  echo "   dumpe2fs: hash=$dh flags=$fl"
  [ "$dh" = "$alg" ] || { echo "hash alg not set" >&2; exit 1; }
  if [ "$flags" = 1 ]; then [ "$fl" = signed_directory_hash ] || exit 1; else [ "$fl" = unsigned_directory_hash ] || exit 1; fi
  NOTES="s_def_hash_version=$alg, s_flags=$flags ($fl). Names contain bytes >= 0x80 so signed and unsigned hashing differ."
  mount_img
  local m=$MNT
  mkdir "$m/h"
  # 150 names, most with non-ASCII (high-bit) bytes, so the signed/unsigned hash variants differ.
  local i w
  for i in $(seq -w 1 150); do
    case $((10#$i % 5)) in
      0) w="ascii-name-$i" ;;
      1) w="ünïcödé-$i-ñame" ;;
      2) w="名前-$i-ファイル" ;;
      3) w="$(printf 'é%.0s' 1 2 3 4 5 6)-$i" ;;
      4) w="ÿþý-$i-¡¢£€" ;;
    esac
    : >"$m/h/$w"
  done
  gen text "hash-$name" 100 "$m/h/ascii-name-100"
  special_times
  finish "/h"
  require '[ "$(grep -c "Indirect levels: 0" "$OUT/$name.debugfs-ex.txt")" = 1 ]' "/h is an htree"
  require 'grep -q "Hash Version: '"$(case $alg in legacy) echo 0;; half_md4) echo 1;; tea) echo 2;; esac)"'" "$OUT/$name.debugfs-ex.txt"' "dx_root hash version is $alg"
}

# ================================================================= features
build_features() {
  new_image features 16 ext4 mkfs.ext4 -q -F -b 1024 -O orphan_file,metadata_csum_seed,sparse_super2 -U fe0fe0fe-0000-4000-8000-000000000001 -E hash_seed=fe0fe0fe-1111-4111-8111-000000000001
  tune2fs -U fe0fe0fe-0000-4000-8000-0000000000ff "$IMG" >/dev/null
  MKFS_CMD="$MKFS_CMD; tune2fs -U fe0fe0fe-0000-4000-8000-0000000000ff features.img"
  NOTES="orphan_file + metadata_csum_seed + sparse_super2. The UUID was changed with tune2fs after mkfs, so s_checksum_seed (from the original UUID) differs from crc32c(s_uuid): checksums must use the stored seed."
  mount_img
  common_small_tree
  local m=$MNT
  gen text feat-data 50000 "$m/data"
  mkdir "$m/dir120"
  for i in $(seq -w 1 120); do : >"$m/dir120/feat-$i-$(padname '' 30 f)"; done
  special_times
  finish "/dir120"
}

# ================================================================= needs-recovery / journal-replay
# Both images are copies of the image file taken while it is still mounted, so the superblock
# has needs_recovery set and the journal holds committed transactions.
#   needs-recovery: copied after `sync`, which also wrote all metadata to its home locations:
#                   the image read WITHOUT replay equals the manifest, and replaying is harmless.
#   journal-replay: a late batch of changes is committed to the journal only (commit=1 timer and
#                   fsync, no sync(2)/syncfs, which would also write the home locations); the copy
#                   is taken before the block-device writeback (30 s) runs. Only after journal
#                   replay does the image equal the manifest.
# In both cases the manifest is compared with a kernel mount of a second copy (which
# replays the journal) before the fixture is accepted.

# remount_compare: mount a copy of $IMG (the kernel replays the journal), re-walk, compare.
remount_compare() {
  cp --sparse=always "$IMG" "$WORK/verify.img"
  # read-write (of a throw-away copy): a read-only loop device would forbid the replay
  mount -t "$FSTYPE" -o loop,noatime "$WORK/verify.img" "$MNT"
  node "$MANIFEST_JS" "$MNT" --entries-only --out "$WORK/verify.entries.json"
  umount "$MNT"
  rm -f "$WORK/verify.img"
  node -e '
    const fs = require("fs");
    const want = JSON.stringify(JSON.parse(fs.readFileSync(process.argv[1], "utf8")).entries);
    const got = JSON.stringify(JSON.parse(fs.readFileSync(process.argv[2], "utf8")));
    if (want !== got) { console.error("remount view differs from manifest"); process.exit(1); }' \
    "$WORK/$IMG_NAME.manifest.json" "$WORK/verify.entries.json"
}

write_manifest_mounted() {
  local extra_meta=$1 meta
  meta=$(node -e 'console.log(JSON.stringify({mkfsEnv: process.argv[1], fsType: process.argv[2], notes: process.argv[3], ...JSON.parse(process.argv[4])}))' "$MKFS_ENV" "$FSTYPE" "$NOTES" "$extra_meta")
  node "$MANIFEST_JS" "$MNT" --image "$IMG_NAME" --mkfs "$MKFS_CMD" --block-size "$IMG_BS" --meta "$meta" --out "$WORK/$IMG_NAME.manifest.json"
}

build_needs_recovery() {
  new_image needs-recovery 8 ext4 mkfs.ext4 -q -F -b 1024 -U 5e5e5e5e-0000-4000-8000-000000000001 -E hash_seed=5e5e5e5e-1111-4111-8111-000000000001
  NOTES="Image file copied (cp) while still mounted, after sync: the superblock has needs_recovery set and the journal holds committed transactions (see debugfs logdump). sync also wrote the metadata to its home locations, so the image read WITHOUT replay and the image after replay both equal this manifest, and e2fsck -fn (which skips replay) is clean."
  mount_img
  common_small_tree
  local m=$MNT
  gen text recovery-1 20000 "$m/journalled-file"
  mkdir "$m/dir"
  for i in $(seq -w 1 50); do gen text "rec-$i" 100 "$m/dir/r$i"; done
  special_times
  fixed_times
  apply_special_times_again
  sync; sync
  write_manifest_mounted '{"needsRecovery":true,"replayRequired":false}'
  sync; sync
  cp --sparse=always "$IMG" "$WORK/copy.img"
  umount "$MNT"
  mv "$WORK/copy.img" "$IMG"
  require 'dumpe2fs -h "$IMG" 2>/dev/null | grep -q "^Filesystem features:.*needs_recovery"' "needs_recovery set in the copy"
  require '[ "$(debugfs -R logdump "$IMG" 2>/dev/null | grep -c "commit block")" -ge 1 ]' "journal holds committed transactions"
  require 'remount_compare' "kernel mount of a copy (with replay) equals the manifest"
  finalize ""
}

build_journal_replay() {
  new_image journal-replay 8 ext4 mkfs.ext4 -q -F -b 1024 -U 7e7e7e7e-0000-4000-8000-000000000001 -E hash_seed=7e7e7e7e-1111-4111-8111-000000000001
  NOTES="Copied while mounted (commit=1): the last batch of changes (everything under /late, the append to /base/grow, the unlink of /base/victim, the rename to /late/renamed, chmod/chown/setfattr on /base entries, and the final timestamps) exists only in the journal. Read without replay the image is stale (no /late); after replay it equals this manifest. e2fsck -fn skips replay and is still clean (it only notices summary counts)."
  mount -t "$FSTYPE" -o loop,noatime,commit=1 "$IMG" "$MNT"
  local m=$MNT
  mkdir "$m/base"
  gen text jr-grow 3000 "$m/base/grow"
  gen text jr-victim 500 "$m/base/victim"
  gen text jr-old 700 "$m/base/old-name"
  gen text jr-mode 10 "$m/base/mode-change"
  gen text jr-xattr 10 "$m/base/xattr-target"
  gen text jr-stable 5000 "$m/base/stable"
  fixed_times
  sync; sync
  # ---- the late batch: journal only
  mkdir "$m/late"
  gen text jr-late-new 3000 "$m/late/new-file"
  mkdir "$m/late/sub"
  ln -s ../base/stable "$m/late/sub/link"
  gen text jr-grow-tail 2500 "$m/base/grow" 3000
  rm "$m/base/victim"
  mv "$m/base/old-name" "$m/late/renamed"
  chmod 0640 "$m/base/mode-change"
  chown 4242:4343 "$m/base/mode-change"
  setfattr -n user.late -v "added late" "$m/base/xattr-target"
  fixed_times
  sync "$m/late/new-file" "$m/base/grow"   # fsync: data + a journal commit, no home writeback
  sleep 3                                  # commit=1 timer commits anything left
  write_manifest_mounted '{"needsRecovery":true,"replayRequired":true}'
  cp --sparse=always "$IMG" "$WORK/copy.img"
  umount "$MNT"
  mv "$WORK/copy.img" "$IMG"
  require 'dumpe2fs -h "$IMG" 2>/dev/null | grep -q "^Filesystem features:.*needs_recovery"' "needs_recovery set in the copy"
  require '! debugfs -R "stat /late" "$IMG" 2>&1 | grep -q "^Inode:"' "without replay /late does not exist (home locations are stale)"
  require 'remount_compare' "kernel mount of a copy (with replay) equals the manifest"
  cp --sparse=always "$IMG" "$WORK/replayed.img"
  e2fsck -E journal_only -y "$WORK/replayed.img" >/dev/null 2>&1 || true
  require 'debugfs -R "stat /late" "$WORK/replayed.img" 2>&1 | grep -q "^Inode:"' "after e2fsck journal replay /late exists"
  require 'e2fsck -fn "$WORK/replayed.img" >/dev/null 2>&1' "after replay e2fsck -fn is clean"
  rm -f "$WORK/replayed.img"
  REPLAY_FOR_DUMPS=1 finalize ""
}

ALL="ext4-4k ext4-1k ext4-2k inline ext2 ext3 oldcsum hash-legacy hash-legacy-signed hash-tea hash-tea-signed hash-half_md4-unsigned features needs-recovery journal-replay"
TARGETS=${*:-$ALL}
for t in $TARGETS; do
  case $t in
    ext4-4k) build_ext4_4k ;;
    ext4-1k) build_ext4_1k ;;
    ext4-2k) build_ext4_2k ;;
    inline) build_inline ;;
    ext2) build_ext2 ;;
    ext3) build_ext3 ;;
    oldcsum) build_oldcsum ;;
    hash-legacy) build_hash hash-legacy legacy 2 ;;
    hash-legacy-signed) build_hash hash-legacy-signed legacy 1 ;;
    hash-tea) build_hash hash-tea tea 2 ;;
    hash-tea-signed) build_hash hash-tea-signed tea 1 ;;
    hash-half_md4-unsigned) build_hash hash-half_md4-unsigned half_md4 2 ;;
    features) build_features ;;
    needs-recovery) build_needs_recovery ;;
    journal-replay) build_journal_replay ;;
    *) echo "make-fixtures: unknown fixture $t (known: $ALL)" >&2; exit 1 ;;
  esac
done
echo "== done; corpus size: $(du -cb "$OUT"/*.img.gz | tail -1 | cut -f1) bytes of images"
