# Sourced by scripts/test-wine.sh and scripts/test-arm64.sh: the test suites run by another
# platform's Node (Windows Node under wine, arm64 Node under qemu-user) need that platform's
# node_modules and a copy of the package that holds no build output of this machine.

# Sets `modules` to a node_modules installed for <os> <cpu> (`npm ci --os --cpu`, without scripts),
# cached under <cache>/modules-<package-lock hash>/ and redone when package-lock.json changes.
foreign_node_modules() {
  local cache=$1 os=$2 cpu=$3 lock_key tmp
  lock_key=$(sha256sum <package-lock.json | cut -c1-16)
  modules=$cache/modules-$lock_key/node_modules
  [[ -d $modules ]] && return
  echo "installing the $os-$cpu node_modules (npm ci --os=$os --cpu=$cpu)"
  rm -rf "$cache"/modules-*
  tmp=$(mktemp -d "$cache/.modules.XXXXXX")
  cp package.json package-lock.json "$tmp/"
  (cd "$tmp" && npm ci --os="$os" --cpu="$cpu" --ignore-scripts --no-audit --no-fund --prefer-offline >npm.log 2>&1) \
    || { cat "$tmp/npm.log"; rm -rf "$tmp"; return 1; }
  mkdir -p "$cache/modules-$lock_key"
  mv "$tmp/node_modules" "$modules"
  rm -rf "$tmp"
}

# Copies the package (sources, dist/, tests) to <stage> with the prebuilds of <platform-arch> only,
# and links <modules> as its node_modules. No build/ folder and no other platform's fixture prebuild
# goes along: node-gyp-build and the test fixture loader would take this machine's build first.
stage_package() {
  local stage=$1 target=$2 modules=$3
  rm -rf "$stage"
  mkdir -p "$stage/prebuilds"
  cp package.json vitest.config.ts tsconfig.json binding.gyp README.md "$stage/"
  cp -r src dist scripts test "$stage/"
  cp -r "prebuilds/$target" "$stage/prebuilds/"
  find "$stage/test" -type d -name build -prune -exec rm -rf {} +
  if [[ -d $stage/test/fixtures/spawner/prebuilds ]]; then
    find "$stage/test/fixtures/spawner/prebuilds" -mindepth 1 -maxdepth 1 -not -name "$target" -exec rm -rf {} +
  fi
  ln -s "$modules" "$stage/node_modules"
}

# Leaves out of the environment what an npm or vitest run we are inside put there (this machine's
# paths and options), so the other platform's Node starts clean.
clean_child_env() {
  local name
  unset NODE_OPTIONS INIT_CWD
  for name in $(compgen -e); do
    case $name in npm_*|VITEST*|NODE_PATH|NODE_V8_COVERAGE) unset "$name" ;; esac
  done
}
