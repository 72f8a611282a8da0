#!/usr/bin/env bash
# The Node-version matrix: runs the test files that exercise the addon under other Node majors, each
# with the official binary from the npm registry (`npm pack node-<platform>-<arch>@<major>` holds it as
# package/bin/node). Binaries are cached in .cache/node/<major>/ (gitignored): a second run downloads
# nothing. `rm -rf .cache/node` to pick up newer patch releases.
#
#   bash scripts/node-matrix.sh                        # every major from 21 to 26, every test file
#   bash scripts/node-matrix.sh 22 24                  # chosen majors
#   bash scripts/node-matrix.sh 26 -- test/snapshot.test.ts   # chosen files
#   bash scripts/node-matrix.sh --repeat 4 --busy 20 21 # 4 rounds with every core kept busy: races
#
# Needs `npm install` first. The addon and the test fixture are the ones built by the system Node
# (one N-API binary for every major); they are built here only if missing.
# Node 21 runs vitest with scripts/vitest-on-node21.mjs (vitest 4 does not support 21 as it is).
# Every test file runs except test/package.test.ts, which packs and installs the package with the
# system npm and needs to run only once (`npm test` does).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

majors=()
files=()
rounds=1
busy=0
while (($#)); do
  case $1 in
    --) shift; files=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    --busy) busy=1; shift ;;
    --repeat)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "node-matrix: --repeat needs a count, got '${2:-}'" >&2; exit 2; }
      rounds=$2; shift 2 ;;
    *[!0-9]*|'') echo "node-matrix: not a Node major: '$1'" >&2; exit 2 ;;
    *) majors+=("$1"); shift ;;
  esac
done
((${#majors[@]})) || majors=(21 22 23 24 25 26)
if ((${#files[@]} == 0)); then
  mapfile -t files < <(find test -name '*.test.ts' -not -path '*/node_modules/*' -not -path '*/fixtures/*' \
    -not -path test/package.test.ts | LC_ALL=C sort)
fi
((${#files[@]})) || { echo "node-matrix: no test files found" >&2; exit 1; }

vitest=node_modules/vitest/vitest.mjs
[[ -f $vitest ]] || { echo "node-matrix: $vitest is missing: run 'npm install' first" >&2; exit 1; }

platform=$(node -p 'process.platform + "-" + process.arch')
if ! compgen -G "build/Release/*.node" >/dev/null && ! compgen -G "prebuilds/$platform/*.node" >/dev/null; then
  echo "node-matrix: building the addon with the system Node"
  npm run build:native
fi
if [[ ! -f test/fixtures/spawner/build/Release/spawner.node ]]; then
  echo "node-matrix: building the test fixture with the system Node"
  npm run build:fixture
fi

cache=$root/.cache/node
mkdir -p "$cache"

# Prints the path of the node binary for a major, downloading it once.
node_for() {
  local major=$1 dir=$cache/$1
  if [[ -x $dir/bin/node ]] && "$dir/bin/node" -v 2>/dev/null | grep -q "^v$major\."; then
    echo "$dir/bin/node"
    return
  fi
  echo "node-matrix: fetching node-$platform@$major from the npm registry" >&2
  local fetch_start=$SECONDS
  local tmp
  tmp=$(mktemp -d "$cache/.download-$major.XXXXXX")
  local tarball
  tarball=$(cd "$tmp" && npm pack "node-$platform@$major" --silent | tail -n 1)
  mkdir -p "$tmp/node/bin"
  tar -xzf "$tmp/$tarball" -C "$tmp/node" --strip-components=1 package/bin/node
  if ! "$tmp/node/bin/node" -v | grep -q "^v$major\."; then
    echo "node-matrix: $tarball does not hold Node $major" >&2
    rm -rf "$tmp"
    return 1
  fi
  rm -rf "$dir"
  mv "$tmp/node" "$dir" # whole or not at all: an interrupted download leaves no half binary
  rm -rf "$tmp"
  echo "node-matrix: fetched $("$dir/bin/node" -v) in $((SECONDS - fetch_start))s" >&2
  echo "$dir/bin/node"
}

if ((busy)); then
  # One spinning process per core, for as long as this script runs.
  hogs=()
  for ((i = 0; i < $(nproc); i++)); do node -e 'for (;;);' & hogs+=($!); done
  trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
  echo "node-matrix: ${#hogs[@]} busy loops compete for the CPUs"
fi

results=()
failed=0
total_passed=0
total_failed=0
for ((round = 1; round <= rounds; round++)); do
for major in "${majors[@]}"; do
  if ! node=$(node_for "$major"); then
    results+=("Node $major: FAILED (no binary)")
    failed=1
    continue
  fi
  version=$("$node" -v)
  report=$root/.cache/matrix/node-$major.json
  mkdir -p "$(dirname "$report")"
  rm -f "$report"
  echo
  echo "================================================================================"
  echo "== Node $version ($node)"
  echo "== vitest run ${files[*]}"
  echo "================================================================================"
  start=$(date +%s)
  shim=()
  [[ $major == 21 ]] && shim=(--import "$root/scripts/vitest-on-node21.mjs")
  # Its own bin first on PATH, so that anything a test starts as `node` is this version too.
  if PATH="$(dirname "$node"):$PATH" "$node" "${shim[@]}" "$vitest" run --reporter=default --reporter=json \
      --outputFile.json="$report" "${files[@]}" </dev/null; then
    status=passed
  else
    status=FAILED
    failed=1
  fi
  seconds=$(($(date +%s) - start))
  counts=$("$node" -e '
    try {
      const r = require(process.argv[1]);
      console.log(r.numPassedTests, r.numFailedTests);
    } catch { console.log(0, 0); }' "$report")
  read -r passed failed_tests <<<"$counts"
  # A file that failed to load fails no single test: never report "0 failed" for a failed run.
  if [[ $status == FAILED && $failed_tests == 0 ]]; then failed_tests=1; fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed_tests))
  label="Node $version"
  if ((rounds > 1)); then label+=" (round $round)"; fi
  results+=("$label: $status, $passed tests passed, $failed_tests failed, in ${seconds}s")
  echo "== Node $version: $status in ${seconds}s"
done
done

echo
echo "node-matrix summary:"
for line in "${results[@]}"; do echo "  $line"; done
echo "node-matrix: $total_passed passed, $total_failed failed"
exit "$failed"
