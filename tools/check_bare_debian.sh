#!/usr/bin/env bash
# By-hand check (not CI) that the README's two commands work as written on a bare Debian 12:
# debootstrap minbase + ca-certificates, git, python3, sudo -- what a stock server image has --, then, as
# root inside that root, `git clone` of this repository and README command 1 or 2 exactly.
#   sudo bash tools/check_bare_debian.sh demo|test [ROOT_DIR]
# Needs debootstrap and network access to Debian's and PyPI's mirrors; takes 30-90 min on 2 cores.
# The machine's own extra CA certificates (a TLS-inspecting egress proxy, if any) are copied into the
# root, as a site image would carry them; nothing else of the host is used.  The SLURM tests start
# daemons on fixed ports: run `test` only when no other SLURM/MariaDB runs on the host.
set -euo pipefail
what="${1:?demo or test}"
root="${2:-/tmp/kappaflow-bare-debian}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
if [ ! -x "$root/usr/bin/python3" ]; then
  debootstrap --variant=minbase --include=ca-certificates,git,python3,sudo bookworm "$root" \
    http://deb.debian.org/debian
fi
# --rbind: slurmd needs the cgroup hierarchy below /sys, the SLURM tests /dev/pts and /dev/shm.
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
for d in sys dev; do mountpoint -q "$root/$d" || { mount --rbind "/$d" "$root/$d"; mount --make-rslave "$root/$d"; }; done
trap 'for d in dev sys proc; do umount -R -l "$root/$d" 2>/dev/null || true; done' EXIT
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
fi
rm -rf "$root/root/kappaflow"
git clone -q "$repo" "$root/root/kappaflow"
cmd="bash scripts/demo.sh"
[ "$what" = "test" ] && cmd="bash scripts/setup_and_test.sh"
echo "[bare-debian] $(chroot "$root" cat /etc/debian_version): cd /root/kappaflow && $cmd"
chroot "$root" env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  TERM=xterm LANG=C.UTF-8 bash -c "cd /root/kappaflow && $cmd"
