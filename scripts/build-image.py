"""Builds the install-cni OCI image from this checkout, without a container engine (`make image`).

    .venv/bin/python scripts/build-image.py [--out build/image]

Reproducible: the same checkout and machine give the same digest. Every layer is a tar written
here with sorted entries, one fixed mtime (SOURCE_DATE_EPOCH, else the commit's time), owner
root, no user or group names, gzip without a timestamp; JSON with sorted keys.

Three layers, least often changed first, so a new plugin ships as one small layer:
  system   glibc, iptables (nft and legacy) with its modules, iproute2's ip: what the node agent
           runs in pods' network namespaces; /etc/passwd and /etc/group (root, nobody)
  plugin   /opt/meshcni/bin: the self-contained istio-cni that install-cni copies to hosts
           (build/plugin-bundle, scripts/build-plugin-bundle.sh), with the nftables backend and
           libnftables, which the system layer links into the loader's default folder: the node
           agent programs native_nftables pods with no nft tooling in the image or on the node
  cli      /usr/bin/meshcni (scripts/image-entrypoint.c, on the bundle's interpreter) and the
           extensions only the image needs (platforms, repair policies) in /usr/lib/meshcni

Writes into --out: `oci/` (an OCI image layout), `install-cni.oci.tar` (the same as one archive,
for `ctr images import`), `digest` (the manifest's sha256, what a registry and kubelet pin),
`reference` (HUB/install-cni:VERSION@DIGEST) and `layers.txt` (size of each layer).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_IN_IMAGE = "/opt/meshcni/bin"
BUNDLE_NAME = "meshcni-istio-cni"
EXTRA_PACKAGES_IN_IMAGE = "/usr/lib/meshcni/site-packages"
IMAGE_ONLY_EXTENSIONS = ("extensions/platform_gke", "extensions/platform_openshift", "extensions/repair_delete")
# What the node agent executes (backends/iptables_restore.py): both flavours, both families.
SYSTEM_PROGRAMS = (
    "/usr/sbin/xtables-nft-multi", "/usr/sbin/xtables-legacy-multi", "/usr/bin/ip",
    *(f"/usr/sbin/{family}-{flavour}-{verb}" for family in ("iptables", "ip6tables")
      for flavour in ("nft", "legacy") for verb in ("save", "restore")),
)
SYSTEM_LIBRARIES = "/usr/lib/x86_64-linux-gnu"
XTABLES_MODULES = f"{SYSTEM_LIBRARIES}/xtables"
USR_MERGE = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Layer:
    name: str
    blob: bytes  # gzip
    diff_id: str  # sha256 of the uncompressed tar
    uncompressed_size: int


class LayerWriter:
    """A tar of image paths; every entry is normalised so the bytes depend on content only."""

    def __init__(self, mtime: int):
        self.mtime = mtime
        self.entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def _info(self, path: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path.strip("/"))
        info.type, info.mode, info.mtime = kind, mode, self.mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def directory(self, path: str, mode: int = 0o755) -> None:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent not in self.entries:
                self.entries[parent] = (self._info(parent, tarfile.DIRTYPE, mode), None)

    def file(self, path: str, data: bytes, mode: int) -> None:
        self.directory(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.entries[path.strip("/")] = (info, data)

    def symlink(self, path: str, target: str) -> None:
        self.directory(os.path.dirname(path))
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.entries[path.strip("/")] = (info, None)

    def copy_tree(self, source: Path, destination: str) -> None:
        """A folder of the build, as it is (links kept), under ``destination`` ("" for the top)."""
        if destination:
            self.directory(destination)
        for item in sorted(source.rglob("*")):
            target = f"{destination}/{item.relative_to(source)}".lstrip("/")
            if item.is_symlink():
                self.symlink(target, os.readlink(item))
            elif item.is_dir():
                self.directory(target)
            else:
                self.file(target, item.read_bytes(), _mode(item))

    def host_file(self, path: str) -> None:
        """A file of this machine at the same path, with every symlink on the way (usr-merged)."""
        directory, name = os.path.split(path)
        real = os.path.join(os.path.realpath(directory), name)
        if os.path.islink(real):
            link = os.readlink(real)
            self.symlink(real, link)
            self.host_file(os.path.normpath(os.path.join(os.path.dirname(real), link)))
        elif real.strip("/") not in self.entries:
            self.file(real, Path(real).read_bytes(), _mode(Path(real)))

    def write(self, target: io.BufferedIOBase | io.BytesIO) -> None:
        with tarfile.open(fileobj=target, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                info, data = self.entries[path]
                tar.addfile(info, io.BytesIO(data) if data is not None else None)

    def finish(self, name: str) -> Layer:
        raw = io.BytesIO()
        self.write(raw)
        uncompressed = raw.getvalue()
        blob = gzip.compress(uncompressed, compresslevel=6, mtime=0)
        return Layer(name, blob, _sha256(uncompressed), len(uncompressed))


def _mode(path: Path) -> int:
    return 0o755 if os.access(path, os.X_OK) else 0o644


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def shared_libraries(paths: list[str]) -> list[str]:
    """Every library the dynamic loader maps for these ELF files, the loader included."""
    found: set[str] = set()
    for path in paths:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            words = line.split()
            if "=>" in words and len(words) > words.index("=>") + 1 and words[words.index("=>") + 1].startswith("/"):
                found.add(words[words.index("=>") + 1])
            elif words and words[0].startswith("/"):
                found.add(words[0])  # the loader itself
    return sorted(found)


def system_layer(mtime: int, entrypoint: Path, bundle_libraries: Path) -> Layer:
    layer = LayerWriter(mtime)
    for link, target in USR_MERGE.items():
        layer.symlink(link, target)
    for path in ("tmp", "run", "proc", "sys", "dev", "etc"):
        layer.directory(path, 0o1777 if path == "tmp" else 0o755)
    layer.symlink("var/run", "../run")
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:"
                             b"/usr/sbin/nologin\n", 0o644)
    layer.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
    layer.host_file("/etc/protocols")  # iptables-restore resolves "-p tcp" through it
    modules = sorted(str(p) for p in Path(XTABLES_MODULES).glob("*.so"))
    programs = [os.path.realpath(p) for p in SYSTEM_PROGRAMS]
    # The bundle holds every library its modules need but the C library's own (librt, libm, ...).
    bundled = {p.name for p in bundle_libraries.glob("*.so*")}
    bundle_modules = [str(p) for p in bundle_libraries.parent.rglob("*.so*") if p.is_file()]
    for path in [*SYSTEM_PROGRAMS, *modules, *shared_libraries([*programs, *modules, str(entrypoint)]),
                 *(p for p in shared_libraries(bundle_modules) if os.path.basename(p) not in bundled)]:
        layer.host_file(path)
    # The bundle's extension modules carry the build's RUNPATH, which hides the launcher's RPATH
    # from their own libraries (libffi for ctypes, ...): the loader's default folder finds them.
    for library in sorted(bundle_libraries.glob("*.so*")):
        path = f"{SYSTEM_LIBRARIES}/{library.name}"
        if not library.name.startswith("libpython") and path.strip("/") not in layer.entries:
            layer.symlink(path, f"{BUNDLE_IN_IMAGE}/{BUNDLE_NAME}/lib/{library.name}")
    return layer.finish("system")


def build_entrypoint(work: Path) -> Path:
    python_dir = f"python{sysconfig.get_python_version()}"
    bundle = f"{BUNDLE_IN_IMAGE}/{BUNDLE_NAME}"
    out = work / "meshcni"
    subprocess.run([
        "gcc", "-O2", "-s", "-Wall", "-Werror", f'-DBUNDLE="{bundle}"', f'-DPYTHON_DIR="{python_dir}"',
        f'-DEXTRA_PACKAGES="{EXTRA_PACKAGES_IN_IMAGE}"', f"-I{sysconfig.get_path('include')}", "-o", str(out),
        str(ROOT / "scripts/image-entrypoint.c"), f"-L{sysconfig.get_config_var('LIBDIR')}",
        f"-lpython{sysconfig.get_python_version()}", f"-Wl,--disable-new-dtags,-rpath,{bundle}/lib",
    ], check=True)
    return out


def install_image_only_extensions(work: Path) -> Path:
    """The extensions only the image's CLI loads; their one dependency, meshcni-hooks, is in the bundle."""
    target = work / "site-packages"
    sources = []
    for package in IMAGE_ONLY_EXTENSIONS:  # built from copies: setuptools leaves build/ in a source tree
        copy = work / "src" / package
        shutil.copytree(ROOT / package, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "tests",
                                                                              "__pycache__"))
        sources.append(str(copy))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-compile", "--target", str(target), *sources], check=True)
    for distribution in target.glob("*.dist-info"):  # pip's record of this build's temp folder goes
        (distribution / "direct_url.json").unlink(missing_ok=True)
        record = distribution / "RECORD"
        entry = f"{distribution.name}/direct_url.json,"
        record.write_text("".join(line for line in record.read_text().splitlines(keepends=True)
                                  if not line.startswith(entry)))
    return target


def cli_layer(mtime: int, entrypoint: Path, extra_packages: Path) -> Layer:
    layer = LayerWriter(mtime)
    layer.file("usr/bin/meshcni", entrypoint.read_bytes(), 0o755)
    layer.copy_tree(extra_packages, EXTRA_PACKAGES_IN_IMAGE)
    return layer.finish("cli")


def plugin_layer(mtime: int, bundle_build: Path) -> Layer:
    if not (bundle_build / "istio-cni").is_symlink():
        raise SystemExit(f"build-image: no plugin bundle in {bundle_build} (make plugin-bundle)")
    layer = LayerWriter(mtime)
    layer.directory(BUNDLE_IN_IMAGE)
    layer.symlink(f"{BUNDLE_IN_IMAGE}/istio-cni", os.readlink(bundle_build / "istio-cni"))
    layer.copy_tree(bundle_build / BUNDLE_NAME, f"{BUNDLE_IN_IMAGE}/{BUNDLE_NAME}")  # not make's .stamp
    return layer.finish("plugin")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def source_revision() -> str:
    dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD"]).returncode != 0
    return git("rev-parse", "HEAD") + ("-dirty" if dirty else "")


def write_blob(blobs: Path, data: bytes) -> dict[str, object]:
    digest = _sha256(data)
    (blobs / digest.split(":")[1]).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def canonical_json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "build/image"))
    parser.add_argument("--bundle", default=str(ROOT / "build/plugin-bundle"))
    parser.add_argument("--hub", default="ghcr.io/meshcni")
    parser.add_argument("--source", default="https://github.com/meshcni/meshcni",
                        help="org.opencontainers.image.source")
    args = parser.parse_args()
    out = Path(args.out)
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct"))
    image_version = version("meshcni-core")
    name = f"{args.hub}/install-cni:{image_version}"
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        entrypoint = build_entrypoint(work)
        bundle = Path(args.bundle)
        layers = [system_layer(mtime, entrypoint, bundle / BUNDLE_NAME / "lib"), plugin_layer(mtime, bundle),
                  cli_layer(mtime, entrypoint, install_image_only_extensions(work))]
    created = datetime.datetime.fromtimestamp(mtime, datetime.UTC)
    config = {
        "architecture": GO_ARCH.get(platform.machine(), platform.machine()), "os": "linux",
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": {
            "Entrypoint": ["/usr/bin/meshcni"], "Cmd": ["install-cni"], "Env": [f"PATH={PATH}"],
            "Labels": {"org.opencontainers.image.version": image_version,
                       "org.opencontainers.image.revision": source_revision(),
                       "org.opencontainers.image.source": args.source,
                       "org.opencontainers.image.title": "meshcni install-cni"},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": created.strftime("%Y-%m-%dT%H:%M:%SZ"), "created_by": f"build-image.py: {layer.name}"}
                    for layer in layers],
    }
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    blobs = partial / "oci/blobs/sha256"
    blobs.mkdir(parents=True)
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **write_blob(blobs, canonical_json(config))},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **write_blob(blobs, layer.blob)}
                   for layer in layers],
    }
    manifest_descriptor = write_blob(blobs, canonical_json(manifest))
    # Named twice, as a pull leaves it on a node: by tag, and by digest (what a pinned manifest asks for).
    pinned = f"{args.hub}/install-cni@{manifest_descriptor['digest']}"
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_descriptor,
         "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": image_version}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_descriptor,
         "annotations": {"io.containerd.image.name": pinned}},
    ]}
    (partial / "oci/index.json").write_bytes(canonical_json(index))
    (partial / "oci/oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    archive = LayerWriter(mtime)
    archive.copy_tree(partial / "oci", "")
    with open(partial / "install-cni.oci.tar", "wb") as archive_file:
        archive.write(archive_file)
    digest = str(manifest_descriptor["digest"])
    (partial / "digest").write_text(digest + "\n")
    (partial / "reference").write_text(f"{name}@{digest}\n")
    (partial / "layers.txt").write_text("".join(
        f"{layer.name}\t{len(layer.blob)} bytes compressed\t{layer.uncompressed_size} bytes\n" for layer in layers))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    total = sum(len(layer.blob) for layer in layers)
    print(f"built {name}@{digest} ({total / 1e6:.1f} MB compressed in {len(layers)} layers)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
