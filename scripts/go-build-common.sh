# Sourced by the scripts that build Go programs from the module proxy (build-control-plane.sh,
# build-istio-cni.sh): a local Go toolchain, and one build per machine at a time.

# Puts the machine's Go on PATH and exits unless it is at least 1.$2 ($1 names the caller).
# The machines' Go lives in /usr/local/go, which a non-interactive shell (CI) may not have on PATH.
# A local toolchain only: nothing is downloaded behind our back (GOTOOLCHAIN=local below).
require_go() {
  local caller=$1 minimum_minor=$2 go_minor
  command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || PATH=/usr/local/go/bin:$PATH
  go_minor=$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
  if [ -z "$go_minor" ] || [ "$go_minor" -lt "$minimum_minor" ]; then
    echo "$caller: needs Go 1.$minimum_minor or newer on PATH (found: $(go env GOVERSION 2>/dev/null || echo none))" >&2
    exit 1
  fi
  export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
}

# Takes the cache directory $1's lock (held until the script exits): a second caller waits for the
# first build and then finds its result.
lock_cache() {
  mkdir -p "$1"
  exec 9>"$1/.lock"
  flock 9
}
