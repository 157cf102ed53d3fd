#!/usr/bin/env bash
# Builds the self-contained istio-cni into build/plugin-bundle, laid out as install-cni's
# MESHCNI_PLUGIN_SOURCE_DIR expects:
#   meshcni-istio-cni/   the bundle        istio-cni -> meshcni-istio-cni/istio-cni
# The bundle is a relocatable copy of the venv's CPython: a small C launcher that asks the node
# agent (scripts/plugin-launcher.c) and, when Python must run, starts istio-cni-python, which
# embeds libpython (scripts/embedded-python.c); the standard library, our packages with their dependencies at the
# venv's versions, and every shared library those need except the C library's own. It needs
# nothing from a host but the kernel and glibc. It replaced a PyInstaller one-folder build, whose
# bootloader and importer made every plugin start about five times slower than the venv's script
# (VERSION: 125 ms against 23 ms; docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
out=build/plugin-bundle
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bundle="$work/meshcni-istio-cni"

read -r base version shared libdir include < <($py -c 'import sys, sysconfig as s
print(sys.base_prefix, s.get_python_version(), s.get_config_var("Py_ENABLE_SHARED"), s.get_config_var("LIBDIR"),
      s.get_path("include"))')
if [ "$shared" != 1 ]; then
  echo "build-plugin-bundle: the Python at $base has no shared libpython (built without --enable-shared)" >&2
  exit 1
fi
libpython=$(basename "$(readlink -f "$libdir/libpython$version.so")")
mkdir -p "$bundle/lib" "$bundle/site-packages"

# The launcher (no libpython: it answers from the node agent) and the interpreter it starts when
# Python must run, finding libpython (and the extension modules' libraries) in ./lib through DT_RPATH.
gcc -O2 -s -Wall -Wextra -Werror -o "$bundle/istio-cni" \
  scripts/plugin-launcher.c scripts/launcher-agent.c scripts/launcher-json.c
gcc -O2 -s -Wall -Wextra -Werror -DPYTHON_DIR="\"python$version\"" -I"$include" -o "$bundle/istio-cni-python" \
  scripts/embedded-python.c -L"$libdir" -lpython"$version" -Wl,--disable-new-dtags,-rpath,'$ORIGIN/lib'
cp -L "$libdir/$libpython" "$bundle/lib/"

# The standard library, without its tests, GUI toolkits, installers and databases (but sqlite3:
# importing pyroute2, as the node agent's repair does, imports it).
stdlib="$bundle/lib/python$version"
excluded=(test idlelib tkinter turtledemo ensurepip lib2to3 pydoc_data site-packages 'config-*')
tar -C "$base/lib" "${excluded[@]/#/--exclude=python$version/}" --exclude=__pycache__ -cf - "python$version" \
  | tar -C "$bundle/lib" -xf -
(cd "$stdlib/lib-dynload" && rm -f _tkinter.* _curses* readline.* nis.* _dbm.* _gdbm.* _crypt.* \
  ossaudiodev.* _test* xxlimited* _xxtestfuzz.* _ctypes_test.* _xxsubinterpreters.*)

# Our packages and what they need, at the versions the venv's tests ran with. They are built from
# a copy: setuptools builds in the source tree, and a build/ left there keeps deleted modules.
packages=(hooks core extensions/redirect_tproxy extensions/kubevirt extensions/backend_nftables)
for package in "${packages[@]}"; do
  mkdir -p "$work/src/$package"
  cp -r "$package"/. "$work/src/$package"
  rm -rf "$work/src/$package/build" "$work/src/$package"/src/*.egg-info
done
$py -m pip freeze --exclude-editable --disable-pip-version-check 2>/dev/null > "$work/constraints.txt"
$py -m pip install -q --disable-pip-version-check --no-compile --no-warn-script-location \
  --target "$bundle/site-packages" -c "$work/constraints.txt" \
  "${packages[@]/#/$work/src/}" 2> >(grep -v "^WARNING: Location" >&2)
# The kubernetes client's asyncio half and its HTTP stack: the plugin never imports them.
(cd "$bundle/site-packages" && rm -rf bin kubernetes/aio aiohttp* aiosignal* aiohappyeyeballs* multidict* yarl* \
  frozenlist* propcache*)

# libnftables for the nftables backend, whose ctypes binding loads libnftables.so.1 by name: a node
# whose netconf selects nftables needs neither nft nor Debian's libnftables1.
# awk reads ldconfig's whole output (an early exit would SIGPIPE it, failing the build under pipefail).
nftables_library=$(/sbin/ldconfig -p | awk '$1 == "libnftables.so.1" && !found {print $NF; found = 1}')
if [ -z "$nftables_library" ]; then
  echo "build-plugin-bundle: libnftables.so.1 not found: install Debian's libnftables1 (make install does)" >&2
  exit 1
fi
cp -L "$nftables_library" "$bundle/lib/libnftables.so.1"

# Every shared library an extension module, libpython or libnftables needs, except glibc's own.
find "$bundle" -name '*.so*' -type f -print0 | xargs -0 ldd 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}' \
  | sort -u | while read -r library; do
    case "$(basename "$library")" in
      libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libutil.so.*|libresolv.so.*|ld-linux*) ;;
      "$libpython") ;;
      *) cp -Ln "$library" "$bundle/lib/" ;;
    esac
  done

# The copied CPython's ELFs search its build prefix first (RUNPATH /root/.pyenv/...): on a host with
# something there, or none of ours beside, they would load the host's libssl, libz... Each now
# searches the bundle's lib/, relative to where it lies ($ORIGIN), wherever the bundle is copied.
find "$bundle" -type f -name '*.so*' -print0 | while IFS= read -r -d '' elf; do
  if [ -n "$(patchelf --print-rpath "$elf")" ]; then
    patchelf --set-rpath "\$ORIGIN/$(realpath --relative-to="$(dirname "$elf")" "$bundle/lib")" "$elf"
  fi
done

# Bytecode only: our own packages keep their sources (for tracebacks) with bytecode that is used
# without checking the sources' times (copies to hosts change them); everything else is sourceless.
# Paths in bytecode are the bundle's place in the install-cni image, not this build's temp folder,
# and pip's record of that folder goes: the same sources give the same bytes (make image's digest).
in_image=(-s "$work" -p /opt/meshcni/bin)
$py -m compileall -q -j0 "${in_image[@]}" --invalidation-mode unchecked-hash "$bundle"/site-packages/meshcni_* >/dev/null
$py -m compileall -q -j0 "${in_image[@]}" --invalidation-mode unchecked-hash -b -x '/meshcni_' "$stdlib" "$bundle/site-packages" >/dev/null
find "$bundle/site-packages" -path '*.dist-info/direct_url.json' -delete
sed -i '/\.dist-info\/direct_url\.json,/d' "$bundle"/site-packages/*.dist-info/RECORD
find "$stdlib" "$bundle/site-packages" -name '*.py' -not -path '*/meshcni_*' -delete
find "$bundle" -name '*.so*' -type f -exec strip --strip-unneeded {} +

version_reply=$(echo '{}' | env -i CNI_COMMAND=VERSION "$bundle/istio-cni")
case "$version_reply" in *supportedVersions*) ;; *) echo "the bundle's VERSION answered: $version_reply" >&2; exit 1 ;; esac

rm -rf "$out"
mkdir -p "$out"
mv "$bundle" "$out/meshcni-istio-cni"
ln -s meshcni-istio-cni/istio-cni "$out/istio-cni"
echo "built $out ($(du -sh "$out/meshcni-istio-cni" | cut -f1))" >&2
