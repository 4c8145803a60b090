#!/usr/bin/env bash
# Makes a local Python 3.11 base image from Debian bookworm packages, for machines that reach
# package registries but no container registry (nothing can be pulled there):
#   bash images/base.sh            -> prints the image name, e.g. ct-base:bookworm-py3.11
#   docker build --build-arg BASE=$(bash images/base.sh | tail -n1) -f images/Dockerfile .
# The image has python3.11 with venv and pip (ensurepip), the host's CA certificates, the
# host's pip index settings and the host's apt sources, so pip and apt-get work in builds
# on this machine exactly as they do on the host. It is made once: if the image exists
# already, nothing is done (CT_BASE_REBUILD=1 makes it again).
# Needs root, debootstrap and a running Docker engine.
# Environment: CT_BASE_IMAGE (name), DEBIAN_MIRROR (default: the host's first Debian URI or
# http://deb.debian.org/debian), SOURCE_DATE_EPOCH (the latest date written into the image;
# default: the newest file the packages ship). Two runs against the same state of the Debian
# archive make the same image layer, byte for byte.
set -euo pipefail

image=${CT_BASE_IMAGE:-ct-base:bookworm-py3.11}
suite=bookworm

if [ "${CT_BASE_REBUILD:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image exists" >&2
  echo "$image"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "$0: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "$0: needs debootstrap (apt-get install -y debootstrap)" >&2; exit 1; }

# The mirror the host's apt uses (deb822 sources first, then one-line sources).
host_mirror() {
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
          | awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) {print $i; exit}}' || true)
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) {print $i; exit}}' || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}
mirror=${DEBIAN_MIRROR:-$(host_mirror)}

rootfs=$(mktemp -d /var/tmp/ct-base.XXXXXX)
cleanup() {
  umount -R "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" 2>/dev/null || true
  rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

echo "debootstrap $suite from $mirror into $rootfs" >&2
# python3 gives /usr/bin/python3; python3-venv brings ensurepip's pip and setuptools wheels.
debootstrap --variant=minbase \
  --include=python3,python3.11,python3-venv,python3.11-venv,ca-certificates \
  "$suite" "$rootfs" "$mirror" >&2

# The host's trust store: local CAs (a TLS-inspecting egress proxy's, for instance) are
# added the Debian way so that a later update-ca-certificates in a build keeps them, and the
# bundle itself is the host's, byte for byte.
if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
  cp -a /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null
fi
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"

# pip: the host's effective index settings, read as pip reads them (its config files in
# order, then PIP_* variables; the [install] section over [global]), written as the image's
# /etc/pip.conf. A local folder (find-links on the host) means nothing in a container and
# is left out; a CA or client-certificate file outside the image's bundle is copied in.
python3 - "$rootfs" <<'EOF'
import configparser, os, shutil, sys
rootfs = sys.argv[1]
keep = ("index-url", "extra-index-url", "trusted-host", "cert", "client-cert", "proxy",
        "default-timeout", "retries", "disable-pip-version-check", "find-links")
home = os.path.expanduser("~")
files = ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", f"{home}/.pip/pip.conf",
         os.path.join(os.environ.get("XDG_CONFIG_HOME", f"{home}/.config"), "pip", "pip.conf")]
if os.environ.get("PIP_CONFIG_FILE"):
    files.append(os.environ["PIP_CONFIG_FILE"])
settings = {}
for path in files:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except configparser.Error:
        continue
    for section in ("global", "install"):
        if parser.has_section(section):
            for key, value in parser.items(section):
                settings[{"timeout": "default-timeout"}.get(key, key)] = value.strip()
for name, value in os.environ.items():
    if name.startswith("PIP_"):
        key = {"timeout": "default-timeout"}.get(name[4:].lower().replace("_", "-"), name[4:].lower().replace("_", "-"))
        settings[key] = value.strip()
lines = ["# Written by images/base.sh from the host's pip configuration.", "[global]"]
for key in keep:
    value = settings.get(key)
    if not value:
        continue
    if key == "find-links":
        value = " ".join(v for v in value.split() if v.startswith(("http://", "https://")))
        if not value:
            continue
    if key in ("cert", "client-cert") and os.path.isfile(value):
        target = rootfs + value
        if not os.path.exists(target) or key == "client-cert":
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(value, target)
    lines.append(f"{key} = {value}")
if not settings.get("cert"):
    lines.append("cert = /etc/ssl/certs/ca-certificates.crt")
with open(os.path.join(rootfs, "etc/pip.conf"), "w") as out:
    out.write("\n".join(lines) + "\n")
EOF

# apt: the host's enabled sources and its Acquire settings (proxy, snapshot validity).
rm -f "$rootfs/etc/apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  grep -qE '^(deb|Types:)' "$f" || continue
  mkdir -p "$rootfs$(dirname "$f")"
  cp "$f" "$rootfs$f"
done
cat /etc/apt/apt.conf /etc/apt/apt.conf.d/* 2>/dev/null \
  | grep -E '^[[:space:]]*Acquire::([a-z]+::)?(Proxy|Check-Valid-Until|Check-Date|Retries)' \
  | sort -u >"$rootfs/etc/apt/apt.conf.d/80ct-host" || true
[ -s "$rootfs/etc/apt/apt.conf.d/80ct-host" ] || rm -f "$rootfs/etc/apt/apt.conf.d/80ct-host"
# The keyrings the sources name.
grep -rhoE 'Signed-By: *[^ ]+|signed-by=[^] ]+' "$rootfs/etc/apt/sources.list"* 2>/dev/null \
  | sed -E 's/^(Signed-By: *|signed-by=)//' | sort -u | while read -r key; do
    [ -f "$rootfs$key" ] || { [ -f "$key" ] && mkdir -p "$rootfs$(dirname "$key")" && cp "$key" "$rootfs$key"; } || true
  done
# Like the official images: no recommends, no documentation, apt cleans after itself.
cat >"$rootfs/etc/apt/apt.conf.d/90ct-base" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90ct-base-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF

# Small and free of this run's traces.
find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
       "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/etc/hostname" "$rootfs/etc/resolv.conf" "$rootfs/var/cache/ldconfig/aux-cache"
# The same bytes for the same state of the Debian archive: every date this run would write
# becomes SOURCE_DATE_EPOCH, by default the newest file the packages ship under /usr (so it
# only moves when a package does). Never older than a Python source: the stdlib's .pyc
# files record their source's mtime, and a clamped source would make them all stale.
newest=$(python3 - "$rootfs" <<'EOF'
import glob, os, sys
root, newest = sys.argv[1], 0
for listing in glob.glob(f"{root}/var/lib/dpkg/info/*.list"):
    for line in open(listing):
        path = root + line.rstrip("\n")
        if line.startswith("/usr/") and os.path.isfile(path) and not os.path.islink(path):
            newest = max(newest, int(os.lstat(path).st_mtime))
print(newest)
EOF
)
epoch=${SOURCE_DATE_EPOCH:-$newest}
[ "$epoch" -gt "$newest" ] || epoch=$newest
# The accounts' "last password change" day is the one date debootstrap writes into a file.
day=$((epoch / 86400))
sed -i -E "s/^([^:]*:[^:]*:)[0-9]*:/\1$day:/" "$rootfs/etc/shadow"
[ ! -f "$rootfs/etc/shadow-" ] || sed -i -E "s/^([^:]*:[^:]*:)[0-9]*:/\1$day:/" "$rootfs/etc/shadow-"

tar_opts=(--sort=name --numeric-owner --xattrs --one-file-system
          "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"
          --mtime="@$epoch" --clamp-mtime)
tar -C "$rootfs" "${tar_opts[@]}" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase $suite + python3.11, venv, host CA/pip/apt settings" \
  - "$image" >&2
echo "$image"
