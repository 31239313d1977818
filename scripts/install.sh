#!/bin/sh
# Production install of the suite (docs/install.md):
#
#   sudo ./scripts/install.sh              install or upgrade (run it again to upgrade)
#   sudo ./scripts/install.sh --uninstall  remove the program, units and links; keep data and config
#   sudo ./scripts/install.sh --purge      also remove data, config and the service users
#
# `make install` / `make uninstall` run this script. Variables (environment or VAR=value args):
#   PREFIX=/opt/suite        the venv goes to $PREFIX/venv (docs in $PREFIX/venv/share/doc/suite)
#   DESTDIR=                 staging root prepended to every path (packaging, tests)
#   BINDIR=/usr/local/bin    command links (spacecomms, constellation-agent, goop2, ...)
#   UNITDIR=/etc/systemd/system
#   CREATE_USERS=auto        yes | no | auto (= yes when root and DESTDIR is empty)
#   PYTHON=python3           interpreter for the venv
#   WHEEL=                   install this wheel instead of building one from the checkout
#   PIP_ARGS=                extra pip arguments (e.g. --no-index --find-links DIR)
#
# Configuration files are installed only when absent (never overwritten); the shipped
# example is always refreshed next to them as NAME.example.
set -eu

PREFIX=/opt/suite
DESTDIR=
BINDIR=/usr/local/bin
UNITDIR=/etc/systemd/system
CREATE_USERS=auto
PYTHON=python3
WHEEL=
PIP_ARGS=
ACTION=install
for arg in "$@"; do
	case "$arg" in
	--uninstall) ACTION=uninstall ;;
	--purge) ACTION=purge ;;
	--help | -h)
		sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*=*) eval "$(printf '%s' "$arg" | sed 's/^\([A-Z_]*\)=\(.*\)$/\1='"'"'\2'"'"'/')" ;;
	*)
		echo "install.sh: error: unknown argument $arg (see --help)" >&2
		exit 2
		;;
	esac
done
# Environment variables of the same names win over defaults but not over arguments.
SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${DESTDIR%/}
VENV="$PREFIX/venv"

# Daemons: user, console script, link names.
USERS="spacecomms goop constellation ceptra clustor"
LINKS="specter spacecomms ceptra clustor-cp constellation goop2"

log() { printf 'install.sh: %s\n' "$*"; }

if [ "$CREATE_USERS" = auto ]; then
	if [ "$(id -u)" = 0 ] && [ -z "$ROOT" ]; then CREATE_USERS=yes; else CREATE_USERS=no; fi
fi

have_user() { getent passwd "$1" >/dev/null 2>&1; }

# owner USER:GROUP PATH -- chown only when the user exists and we are root.
owner() {
	if [ "$(id -u)" = 0 ] && have_user "${1%%:*}" && getent group "${1##*:}" >/dev/null 2>&1; then
		chown "$1" "$2"
	fi
}

# dir MODE OWNER PATH
dir() {
	mkdir -p "$ROOT$3"
	chmod "$1" "$ROOT$3"
	owner "$2" "$ROOT$3"
}

# conffile MODE OWNER SOURCE TARGET -- copy when absent; always refresh TARGET.example.
conffile() {
	install -m "$1" "$3" "$ROOT$4.example"
	if [ ! -e "$ROOT$4" ]; then
		install -m "$1" "$3" "$ROOT$4"
		owner "$2" "$ROOT$4"
		log "installed $4"
	fi
}

# unit SOURCE -- a unit file with the venv path rewritten to $PREFIX.
unit() {
	sed -e "s|/opt/suite/venv|$VENV|g" -e "s|/opt/goop/venv|$VENV|g" "$1" >"$ROOT$UNITDIR/$(basename "$1").tmp"
	chmod 0644 "$ROOT$UNITDIR/$(basename "$1").tmp"
	mv "$ROOT$UNITDIR/$(basename "$1").tmp" "$ROOT$UNITDIR/$(basename "$1")"
}

UNITS="$SRC/conf/systemd/*.service $SRC/conf/spacecomms/spacecomms.service $SRC/conf/goop/*.service $SRC/conf/specter/*.service"

reload_systemd() {
	if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
}

uninstall() {
	for u in $UNITS; do rm -f "$ROOT$UNITDIR/$(basename "$u")"; done
	for l in $LINKS constellation-agent; do
		if [ -L "$ROOT$BINDIR/$l" ]; then rm -f "$ROOT$BINDIR/$l"; fi
	done
	rm -rf "$ROOT$VENV" "$ROOT$PREFIX/docs"
	rmdir "$ROOT$PREFIX" 2>/dev/null || true
	reload_systemd
	log "removed $PREFIX, units and command links (data and configuration kept)"
}

if [ "$ACTION" != install ]; then
	uninstall
	if [ "$ACTION" = purge ]; then
		rm -rf "$ROOT/etc/suite" "$ROOT/etc/spacecomms" "$ROOT/var/lib/spacecomms" "$ROOT/var/lib/suite" \
			"$ROOT/var/lib/ceptra" "$ROOT/var/lib/clustor-cp" "$ROOT/opt/goop" "$ROOT/opt/constellation"
		if [ "$CREATE_USERS" = yes ]; then
			for u in $USERS; do if have_user "$u"; then userdel "$u" || true; fi; done
		fi
		log "purged data, configuration and service users"
	fi
	exit 0
fi

# 1. Service users (system accounts, no login, no home).
if [ "$CREATE_USERS" = yes ]; then
	for u in $USERS; do
		if ! have_user "$u"; then
			useradd --system --user-group --no-create-home --home-dir /nonexistent \
				--shell /usr/sbin/nologin "$u"
			log "created user $u"
		fi
	done
	if getent group docker >/dev/null 2>&1; then usermod -a -G docker constellation; fi
else
	log "service users not created (CREATE_USERS=no); create them before starting units: $USERS"
fi

# 2. The program: a wheel from this checkout in a fresh venv beside the old one, then swapped in.
mkdir -p "$ROOT$PREFIX"
if [ -z "$WHEEL" ]; then
	build=$(mktemp -d)
	trap 'rm -rf "$build"' EXIT
	log "building the wheel"
	# shellcheck disable=SC2086
	"$PYTHON" -m pip wheel -q --no-deps $PIP_ARGS -w "$build" "$SRC"
	WHEEL=$(ls "$build"/*.whl)
fi
new="$ROOT$VENV.new"
rm -rf "$new"
log "creating $VENV"
"$PYTHON" -m venv "$new"
# shellcheck disable=SC2086
"$new/bin/python" -m pip install -q $PIP_ARGS "$WHEEL"
"$new/bin/python" -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
# A venv's scripts carry its absolute path: point them at the final name after the swap.
rm -rf "$ROOT$VENV.old"
if [ -e "$ROOT$VENV" ]; then mv "$ROOT$VENV" "$ROOT$VENV.old"; fi
mv "$new" "$ROOT$VENV"
for f in "$ROOT$VENV"/bin/*; do
	if [ -f "$f" ] && head -c 2 "$f" | grep -q '#!'; then
		sed -i "1,3s|$new/bin/python|$VENV/bin/python|" "$f"
	fi
done
sed -i "s|$new|$VENV|g" "$ROOT$VENV/pyvenv.cfg" "$ROOT$VENV"/bin/activate* 2>/dev/null || true
rm -rf "$ROOT$VENV.old"
chmod -R u=rwX,go=rX "$ROOT$PREFIX"

# 3. Command links, including the names the guides use.
mkdir -p "$ROOT$BINDIR"
for l in $LINKS; do ln -sfn "$VENV/bin/$l" "$ROOT$BINDIR/$l"; done
ln -sfn "$VENV/bin/constellation-agent" "$ROOT$BINDIR/constellation-agent"

# 4. Configuration (root-owned, readable by the daemon's group), secrets, data.
dir 0755 root:root /etc/suite
dir 0750 root:spacecomms /etc/spacecomms
dir 0750 root:spacecomms /etc/spacecomms/tls
conffile 0640 root:spacecomms "$SRC/conf/spacecomms/config.yaml" /etc/spacecomms/config.yaml
conffile 0640 root:spacecomms "$SRC/conf/spacecomms/spacecomms.env" /etc/suite/spacecomms.env
dir 0750 spacecomms:spacecomms /var/lib/spacecomms
conffile 0640 root:constellation "$SRC/conf/constellation/constellation.env" /etc/suite/constellation.env
dir 0755 constellation:constellation /opt/constellation
dir 0750 constellation:constellation /opt/constellation/data
dir 0750 constellation:constellation /opt/constellation/volumes
dir 0700 constellation:constellation /opt/constellation/secrets
dir 0750 root:ceptra /etc/suite/ceptra
dir 0750 root:ceptra /etc/suite/ceptra/tls
conffile 0640 root:ceptra "$SRC/conf/ceptra/ceptra.env" /etc/suite/ceptra/ceptra.env
dir 0750 root:clustor /etc/suite/clustor-cp
conffile 0640 root:clustor "$SRC/conf/clustor-cp/clustor-cp.env" /etc/suite/clustor-cp/main.env
conffile 0640 root:clustor "$SRC/conf/clustor-cp/state.yaml" /etc/suite/clustor-cp/state.yaml
conffile 0640 root:root "$SRC/conf/specter/seed.env" /etc/suite/specter.env
conffile 0640 root:root "$SRC/conf/specter/dns.env" /etc/suite/specter-dns.env
dir 0755 goop:goop /opt/goop
dir 0750 goop:goop /opt/goop/peers
dir 0750 goop:goop /opt/goop/peers/blog
conffile 0640 goop:goop "$SRC/conf/goop/goop.json" /opt/goop/peers/blog/goop.json
dir 0750 goop:goop /opt/goop/peer
conffile 0640 goop:goop "$SRC/conf/goop/rendezvous.goop.json" /opt/goop/peer/goop.json
dir 0750 goop:goop /opt/goop/rendezvous
dir 0770 goop:goop /opt/goop/shared
for i in 8787 8788 8789; do
	dir 0750 goop:goop "/opt/goop/rendezvous/$i"
	sed -e "s|\"rendezvous_port\": *[0-9]*|\"rendezvous_port\": $i|" \
		-e "s|127.0.0.1:9090|127.0.0.1:$((i + 303))|" "$SRC/conf/goop/rendezvous-instance.goop.json" \
		>"$ROOT/opt/goop/rendezvous/$i/goop.json.example"
	if [ ! -e "$ROOT/opt/goop/rendezvous/$i/goop.json" ]; then
		install -m 0640 "$ROOT/opt/goop/rendezvous/$i/goop.json.example" "$ROOT/opt/goop/rendezvous/$i/goop.json"
		owner goop:goop "$ROOT/opt/goop/rendezvous/$i/goop.json"
	fi
done

# 5. Units.
mkdir -p "$ROOT$UNITDIR"
for u in $UNITS; do unit "$u"; done
reload_systemd
log "installed $VENV, units in $UNITDIR, commands in $BINDIR; next: docs/install.md"
