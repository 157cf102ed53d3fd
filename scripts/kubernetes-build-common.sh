# Sourced by the scripts that build programs of k8s.io/kubernetes (build-control-plane.sh,
# build-kube-node.sh): one pinned release for the control plane and the node, and the generated
# module each is built from.
#
# k8s.io/kubernetes' go.mod replaces every k8s.io/* staging module with a directory of its own
# checkout, and replace directives of a dependency do not apply to the module that requires it. So
# each program is built from a small generated module that requires the upstream module and pins
# every staging module it replaces at the matching v0.x release (the list is read from that go.mod,
# not written here).

KUBERNETES_VERSION=v1.37.2
STAGING_VERSION=v0.37.2 # k8s.io/* staging modules are tagged v0.<minor>.<patch> with v1.<minor>.<patch>

# Writes a module in $1 that requires $2@$3 (plus the extra lines in $4) and names the tools $5...
write_module() {
  local dir=$1 main_module=$2 version=$3 extra=$4
  shift 4
  rm -rf "$dir" && mkdir -p "$dir"
  {
    printf 'module meshcni.test/kubernetes\n\ngo 1.26.0\n\ngodebug default=go1.26\n\n'
    printf 'tool %s\n' "$@"
    printf '\nrequire %s %s\n%s\n' "$main_module" "$version" "$extra"
  } > "$dir/go.mod"
}

# The staging modules k8s.io/kubernetes replaces with local directories, each pinned at its release.
staging_pins() {
  local gomod modules
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || { echo "no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION" >&2; exit 1; }
  modules=$(sed -n 's#^\t\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$gomod")
  [ -n "$modules" ] || { echo "found no staging replaces in $gomod" >&2; exit 1; }
  echo "replace ("
  for m in $modules; do echo "	$m => $m $STAGING_VERSION"; done
  echo ")"
}

# Writes a module in $1 for the k8s.io/kubernetes commands $2... and builds each into $1/bin, with
# the version the programs report (/version, skew checks) set as Kubernetes' own build sets it.
build_kubernetes_commands() {
  local src=$1 minor ldflags
  shift
  write_module "$src" k8s.io/kubernetes "$KUBERNETES_VERSION" "$(staging_pins)" "${@/#/k8s.io/kubernetes/cmd/}"
  (cd "$src" && go mod tidy)
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  (cd "$src" && nice -n 10 go build -trimpath -ldflags "$ldflags" -o bin/ "${@/#/k8s.io/kubernetes/cmd/}")
}
