#!/usr/bin/env bash
# The Debian package, end to end, as an admin meets it (issue 29): build it (cargo-deb),
# install it with apt-get, score its systemd unit, run `postern check` as installed, start the
# installed binary as the unit would (user postern, CAP_NET_BIND_SERVICE and no other
# capability, no new privileges), send a message to port 25 with swaks and see it queued,
# stop it gracefully, then `apt-get remove` (data, config and user stay) and `apt-get purge`
# (nothing left, listed). systemd is not PID 1 on the CI machine, so setpriv stands in for
# the unit's User= and capability lines; `systemd-analyze security --offline` reads the unit.
#
# Runs on a fresh Debian machine as root; installs what it needs. Needs ports 25 and 8443
# free on 127.0.0.1 (the packaged configuration's listeners).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "package-test: must run as root (dpkg, setpriv)"; exit 1; }
say() { echo "package-test: $*"; }
fail() { echo "package-test: FAILED: $*"; exit 1; }

need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
perl -MNet::SSLeay -e1 >/dev/null 2>&1 || need+=(libnet-ssleay-perl libio-socket-ssl-perl)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
# systemd-analyze, for the unit's score; systemd need not run.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v deb-systemd-helper >/dev/null 2>&1 || need+=(init-system-helpers)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# cargo-deb is a build tool, not a dependency: installed once, pinned.
if ! cargo deb --version 2>/dev/null | grep -q ' 3\.8\.0$'; then
  say "installing cargo-deb 3.8.0"
  cargo install cargo-deb --locked --version 3.8.0 --quiet
fi

for port in 25 8443; do
  if [ -n "$(ss -Hltn "sport = :$port")" ]; then
    fail "port $port is in use on this machine; the packaged configuration listens there"
  fi
done
if dpkg -s postern >/dev/null 2>&1 || getent passwd postern >/dev/null; then
  fail "postern is already installed here (or its user exists): this test installs and purges it"
fi

work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then kill -KILL "$server"; fi
  # A failed run leaves nothing installed either.
  if dpkg -s postern >/dev/null 2>&1 || [ -e /etc/postern ]; then
    apt-get -o DPkg::Lock::Timeout=600 -y -q purge postern >/dev/null 2>&1 || dpkg --purge postern >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

say "cargo deb"
cargo deb --output "$work/" -- --locked
deb=$(ls "$work"/postern_*.deb)
say "built $(basename "$deb")"
dpkg-deb --field "$deb" Package Version Architecture Depends
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles 2>/dev/null || true)
echo "conffiles: $conffiles"
[ "$conffiles" = /etc/postern/postern.toml ] || fail "the package's conffiles are not /etc/postern/postern.toml"
dpkg-deb --contents "$deb" | awk '{print $1, $2, $6}'

# apt-get, as an admin installs; it waits for the dpkg lock rather than failing at once.
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q "$@"; }
say "apt-get install ./$(basename "$deb")"
cp "$deb" "$work/pkg.deb"
chmod 0644 "$work/pkg.deb"
chmod 0755 "$work"
apt_get install "$work/pkg.deb"
unit=$(dpkg -L postern | grep '/systemd/system/postern.service$')
getent passwd postern
stat -c '%A %U:%G %n' /var/lib/postern /etc/postern/postern.toml /usr/sbin/postern "$unit"
[ "$(stat -c '%a %U %G' /var/lib/postern)" = "700 postern postern" ] || fail "/var/lib/postern is not 0700 postern:postern"
[ "$(stat -c '%a %U %G' /etc/postern/postern.toml)" = "640 root postern" ] || fail "/etc/postern/postern.toml is not 0640 root:postern"
[ -s /usr/share/man/man8/postern.8.gz ] || fail "no man page"

say "systemd-analyze verify $unit"
verified=$(systemd-analyze verify --man=no "$unit" 2>&1) || { echo "$verified"; fail "the unit does not verify"; }
[ -z "$verified" ] || { echo "$verified"; fail "systemd-analyze verify warns about the unit"; }

say "systemd-analyze security --offline=yes $unit"
analysis=$(systemd-analyze security --offline=yes "$unit" 2>&1) || true
echo "$analysis" | grep -E '^✗' || true
exposure=$(echo "$analysis" | sed -n 's/.*Overall exposure level for postern.service: \([0-9.]*\).*/\1/p')
echo "$analysis" | grep 'Overall exposure level'
[ -n "$exposure" ] || fail "systemd-analyze gave no exposure level"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "exposure $exposure is above 2.0"

# The unit's identity and capabilities, for the commands it runs (ExecStartPre, ExecStart).
as_unit=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin POSTERN_CONFIG=/etc/postern/postern.toml
  setpriv --reuid=postern --regid=postern --init-groups --no-new-privs
  --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service
  --bounding-set=-all,+net_bind_service)

say "postern check (the unit's ExecStartPre), as installed"
"${as_unit[@]}" /usr/sbin/postern check || fail "postern check failed on a fresh installation"

say "postern serve as user postern with CAP_NET_BIND_SERVICE alone"
"${as_unit[@]}" /usr/sbin/postern serve >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 600); do
  grep -q 'daemon started' "$work/serve.log" && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; fail "postern serve exited"; }
  sleep 0.1
done
grep 'daemon started' "$work/serve.log" || { cat "$work/serve.log"; fail "no start line within 60 s"; }
grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' "/proc/$server/status"
# CAP_NET_BIND_SERVICE is capability 10: 0x400, the only bit in every set.
for set in CapPrm CapEff CapBnd CapAmb; do
  grep -q "^$set:[[:space:]]*0000000000000400$" "/proc/$server/status" || fail "$set is not CAP_NET_BIND_SERVICE alone"
done
[ "$(awk '/^Uid:/ {print $2}' "/proc/$server/status")" = "$(id -u postern)" ] || fail "not running as postern"
ss -Hltn 'sport = :25'

say "postern check while it runs"
"${as_unit[@]}" /usr/sbin/postern check || fail "postern check failed beside the running server"

say "swaks to port 25"
swaks --server 127.0.0.1:25 --tls --from root@localhost --to someone@example.net \
  --header 'Subject: package test' >"$work/swaks.log" 2>&1 || { cat "$work/swaks.log"; fail "swaks"; }
id=$(sed -n 's/.*250 2\.0\.0 Ok: queued as \([0-9A-F]*\).*/\1/p' "$work/swaks.log")
[ -n "$id" ] || { cat "$work/swaks.log"; fail "no queue ID in swaks' transcript"; }
say "queued as $id"
# As root, on the packaged config found by default: the API token in /var/lib/postern.
for _ in $(seq 1 100); do
  postern queue list >"$work/queue.txt" 2>&1 && grep -q "^$id" "$work/queue.txt" && break
  sleep 0.1
done
cat "$work/queue.txt"
grep -q "^$id" "$work/queue.txt" || fail "$id is not in postern queue list"
grep -q 'someone@example.net' "$work/queue.txt" || fail "the recipient is not in the queue listing"
# The container's HEALTHCHECK command.
"${as_unit[@]}" /usr/sbin/postern node status

say "SIGTERM"
kill -TERM "$server"
code=0
wait "$server" || code=$?
server=
grep -E 'terminating|stopped' "$work/serve.log"
[ "$code" = 0 ] || { cat "$work/serve.log"; fail "postern serve exited with $code after SIGTERM"; }

say "apt-get remove: the data, the configuration and the user stay"
apt_get remove postern
[ ! -e /usr/sbin/postern ] || fail "/usr/sbin/postern is still there after remove"
[ -s /var/lib/postern/postern.redb ] || fail "the settings store went with remove"
[ -f /etc/postern/postern.toml ] || fail "the configuration went with remove"
getent passwd postern >/dev/null || fail "the user went with remove"
ls -la /var/lib/postern /etc/postern

say "apt-get purge: nothing is left"
apt_get purge postern
left=0
for path in /etc/postern /var/lib/postern /usr/sbin/postern "$unit" /usr/share/doc/postern \
  /usr/share/man/man8/postern.8.gz /etc/systemd/system/multi-user.target.wants/postern.service \
  /etc/systemd/system/postern.service /var/lib/systemd/deb-systemd-helper-enabled/postern.service.dsh-also \
  /var/lib/systemd/deb-systemd-helper-masked/postern.service; do
  if [ -e "$path" ] || [ -L "$path" ]; then echo "left: $path"; left=1; else echo "gone: $path"; fi
done
if getent passwd postern; then echo "left: user postern"; left=1; else echo "gone: user postern"; fi
if getent group postern; then echo "left: group postern"; left=1; else echo "gone: group postern"; fi
if dpkg -s postern >/dev/null 2>&1; then echo "left: package postern ($(dpkg-query -W -f='${Status}' postern))"; left=1; else echo "gone: package postern"; fi
[ "$left" = 0 ] || fail "the purge left something behind"
say "ok"
