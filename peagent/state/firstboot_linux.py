r"""The first-boot program peagent leaves in a deployed Linux OS, and the systemd units that run it.

A deployment ends in the PE, before the new OS has ever run; whether that OS came up, got its
address and its SSH keys, is only known at its first boot. So :func:`files` puts a small POSIX
shell program into the new OS (``usr/local/lib/peagent/firstboot``) with two oneshot units:

* ``peagent-ssh-keygen.service`` (before sshd) runs ``firstboot keys``: ``ssh-keygen -A`` when sshd
  is installed and the deployment left no host key (it removes the image's shared ones);
* ``peagent-firstboot.service`` (after ``network-online.target`` and sshd, only while
  ``/var/lib/peagent/firstboot.env`` exists) POSTs one status event (schema 1, docs/status.md):
  ``{"schema": 1, "id": "<deployment id>:complete", "deployment_id", "seq": 1, "source": "firstboot",
  "phase": "complete", "message": "first boot complete", "level", "machine": {"hostname", "macs",
  "uuid", "serial", "vendor", "model"}, "retries": 0, "warnings", "data": {"machine_id", "ssh",
  "addresses", "commands"}, "time", ...}``. Its id is the same on every try, so a retried post that
  did arrive the first time is recognised as a duplicate; ``level`` is "warning" (with a warning)
  when the task's first-boot commands failed. It goes to ``STATUS_URL`` (with ``Authorization:
  Bearer $TOKEN`` when a token is set) using curl, else wget, else python3, else bash's ``/dev/tcp``
  (plain http only: the demo OS has nothing else), retrying for up to ``PEAGENT_FIRSTBOOT_WAIT``
  seconds (60). Then it prints one line to the consoles (``\r\n`` first: a getty prompt may be
  waiting there)::

      peagent-firstboot: complete deployment=<id> hostname=<name> machine-id=<id> ssh=<SHA256:...|none>
      addresses=<global CIDRs, comma-joined|none> status=<posted|not posted: reason|no status url>

  and deletes ``firstboot.env`` (it holds the token) and both units' enabling symlinks: once, whether
  the POST got through or its retries ran out.

``PEAGENT_FIRSTBOOT_ROOT`` prefixes the OS's files (``etc/``, ``var/``) so that a test can run the
program on a temporary tree; ``/proc``, ``/sys`` and ``/dev`` are the running system's either way.
``PEAGENT_FIRSTBOOT_CONSOLES`` replaces the console devices (default: ttyS0, and /dev/console when
that is not ttyS0).
"""

from __future__ import annotations

import re

from peagent.errors import TaskError, describe

SCRIPT_PATH = "usr/local/lib/peagent/firstboot"
ENV_PATH = "var/lib/peagent/firstboot.env"
COMMANDS_PATH = "var/lib/peagent/first-boot-commands"
RECORD_PATH = "var/lib/peagent/deployment.json"
UNIT = "peagent-firstboot.service"
KEYGEN_UNIT = "peagent-ssh-keygen.service"
WANTS = "etc/systemd/system/multi-user.target.wants"

SCRIPT = r"""#!/bin/sh
# peagent first boot: written into this OS by peagent at deployment; see peagent/state/firstboot_linux.py.
#   firstboot        report the deployment complete (peagent-firstboot.service), then disable itself
#   firstboot keys   make SSH host keys if sshd is installed and there are none (peagent-ssh-keygen.service)
# PEAGENT_FIRSTBOOT_ROOT prefixes this OS's files (tests); PEAGENT_FIRSTBOOT_WAIT is the seconds to retry
# (60); PEAGENT_FIRSTBOOT_CONSOLES the devices the line goes to.
set -u
R=${PEAGENT_FIRSTBOOT_ROOT:-}
ENV_FILE=$R/var/lib/peagent/firstboot.env
COMMANDS_FILE=$R/var/lib/peagent/first-boot-commands
WAIT=${PEAGENT_FIRSTBOOT_WAIT:-60}

have() { command -v "$1" >/dev/null 2>&1; }
now() { date +%s; }

ssh_keys() {
    for k in "$R"/etc/ssh/ssh_host_*_key; do
        [ -e "$k" ] && return 0
    done
    { [ -x "$R/usr/sbin/sshd" ] && have ssh-keygen; } || return 0
    if [ -n "$R" ]; then ssh-keygen -A -f "$R"; else ssh-keygen -A; fi
}

json_str() {
    printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

json_opt() {  # a string, or null when empty
    if [ -n "$1" ]; then json_str "$1"; else printf null; fi
}

dmi() {  # an SMBIOS field of this machine (root reads them all), trailing blanks dropped
    v=$(cat "/sys/class/dmi/id/$1" 2>/dev/null | tr -d '\000-\037')
    printf '%s' "${v%"${v##*[! ]}"}"
}

addresses() {
    out=
    if have ip; then
        while read -r _ _ _ cidr _; do
            [ -n "$cidr" ] && out="$out${out:+,}$cidr"
        done <<EOF
$(ip -o addr show scope global 2>/dev/null)
EOF
    fi
    echo "${out:-none}"
}

macs_json() {  # Ethernet MACs only (aa:bb:cc:dd:ee:ff): the event's schema takes no other kind
    out=
    h='[0-9a-f][0-9a-f]'
    for d in /sys/class/net/*; do
        [ -e "$d/device" ] && [ -r "$d/address" ] || continue
        a=$(cat "$d/address")
        case $a in 00:00:00:00:00:00) continue ;; $h:$h:$h:$h:$h:$h) ;; *) continue ;; esac
        out="$out${out:+,}$(json_str "$a")"
    done
    printf '[%s]' "$out"
}

event_json() {  # the schema-1 "complete" event (docs/status.md)
    uuid=$(dmi product_uuid | tr 'A-F' 'a-f')
    machine="{\"hostname\":$(json_str "$host"),\"macs\":$(macs_json),\"uuid\":$(json_opt "$uuid")"
    machine="$machine,\"serial\":$(json_opt "$(dmi product_serial)"),\"vendor\":$(json_opt "$(dmi sys_vendor)")"
    machine="$machine,\"model\":$(json_opt "$(dmi product_name)")}"
    level=info warnings=
    case $commands in failed:*)
        level=warning
        warnings=$(json_str "the task's first-boot commands failed (exit status ${commands#failed:})") ;;
    esac
    data="{\"machine_id\":$(json_opt "${mid:-}"),\"ssh\":$(json_str "$(fingerprint)")"
    data="$data,\"addresses\":$(json_str "$(addresses)"),\"commands\":$(json_str "$commands")}"
    printf '{"schema":1,"id":%s,"deployment_id":%s,"seq":1,"source":"firstboot","time":%s,' \
        "$(json_str "${DEPLOYMENT_ID:-}:complete")" "$(json_str "${DEPLOYMENT_ID:-}")" "$(now)"
    printf '"phase":"complete","step":null,"message":"first boot complete","level":"%s","machine":%s,' \
        "$level" "$machine"
    printf '"done":null,"total":null,"rate":null,"eta":null,"retries":0,"warnings":[%s],"error":null,' "$warnings"
    printf '"dp":null,"data":%s}' "$data"
}

fingerprint() {
    f=$R/etc/ssh/ssh_host_ed25519_key.pub
    if [ -r "$f" ] && have ssh-keygen && fp=$(ssh-keygen -l -f "$f" 2>/dev/null); then
        set -- $fp
        echo "$2"
    else
        echo none
    fi
}

one_line() { printf '%s' "$1" | tr '\r\n' '  ' | cut -c1-160; }

post_curl() {
    set -- -fsS -m 15 -o /dev/null -H 'Content-Type: application/json' --data-binary "$BODY"
    [ -n "${TOKEN:-}" ] && set -- "$@" -H "Authorization: Bearer $TOKEN"
    curl "$@" "$STATUS_URL"
}

post_wget() {
    set -- -q -O /dev/null -T 15 --header='Content-Type: application/json' --post-data="$BODY"
    [ -n "${TOKEN:-}" ] && set -- "$@" --header="Authorization: Bearer $TOKEN"
    wget --version 2>/dev/null | grep -q GNU && set -- "$@" -t 1  # GNU wget retries 20 times by default
    wget "$@" "$STATUS_URL"
}

post_python3() {
    PEAGENT_BODY=$BODY PEAGENT_TOKEN=${TOKEN:-} python3 -c '
import os, sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=os.environ["PEAGENT_BODY"].encode(), method="POST",
                             headers={"Content-Type": "application/json"})
if os.environ["PEAGENT_TOKEN"]:
    req.add_header("Authorization", "Bearer " + os.environ["PEAGENT_TOKEN"])
urllib.request.urlopen(req, timeout=15).close()
' "$STATUS_URL"
}

post_bash() {  # plain HTTP/1.0 through bash's /dev/tcp: no TLS, no redirects
    case $STATUS_URL in
        http://*) ;;
        *) echo "only curl, wget or python3 can post to ${STATUS_URL%%://*}:// (none is installed)"; return 2 ;;
    esac
    rest=${STATUS_URL#http://}
    hostport=${rest%%/*}
    case $rest in */*) path=/${rest#*/} ;; *) path=/ ;; esac
    case $hostport in *:*) port=${hostport##*:}; host=${hostport%:*} ;; *) port=80; host=$hostport ;; esac
    host=${host#[}; host=${host%]}
    t=; have timeout && t="timeout 20"
    PEAGENT_HOST=$host PEAGENT_PORT=$port PEAGENT_PATH=$path PEAGENT_BODY=$BODY PEAGENT_TOKEN=${TOKEN:-} \
    LC_ALL=C $t bash -c '
        exec 3<>"/dev/tcp/$PEAGENT_HOST/$PEAGENT_PORT" 2>/dev/null ||
            { echo "cannot connect to $PEAGENT_HOST:$PEAGENT_PORT"; exit 1; }
        {
            printf "POST %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\n" "$PEAGENT_PATH" "$PEAGENT_HOST"
            [ -n "$PEAGENT_TOKEN" ] && printf "Authorization: Bearer %s\r\n" "$PEAGENT_TOKEN"
            printf "Content-Length: %d\r\nConnection: close\r\n\r\n%s" "${#PEAGENT_BODY}" "$PEAGENT_BODY"
        } >&3
        read -r proto code rest <&3 || { echo "no answer from $PEAGENT_HOST:$PEAGENT_PORT"; exit 1; }
        case $code in 2??) exit 0 ;; *) echo "HTTP $code"; exit 1 ;; esac
    '
}

post_once() {  # 0 posted; 1 failed, 2 cannot ever post (both with REASON)
    if have curl; then tool=curl
    elif have wget; then tool=wget
    elif have python3; then tool=python3
    elif have bash; then tool=bash
    else REASON="no curl, wget, python3 or bash to post with"; return 2
    fi
    out=$(post_$tool 2>&1)
    rc=$?
    [ $rc -eq 0 ] && return 0
    REASON="$tool: $(one_line "$(printf '%s\n' "${out:-failed}" | tail -n 1)")"
    [ $rc -eq 2 ] && return 2
    return 1
}

if [ "${1:-}" = keys ]; then
    ssh_keys
    exit 0
fi
[ -r "$ENV_FILE" ] || { echo "peagent-firstboot: nothing to do ($ENV_FILE is gone)"; exit 0; }
. "$ENV_FILE"
ssh_keys

commands=none
if [ -r "$COMMANDS_FILE" ]; then  # the task's first_boot_commands, once; their output goes to the journal
    sh "$COMMANDS_FILE" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then commands=ok; else commands=failed:$rc; fi
    rm -f "$COMMANDS_FILE"
fi
host=$(uname -n)
mid=$(cat "$R/etc/machine-id" 2>/dev/null)
status="no status url"
if [ -n "${STATUS_URL:-}" ]; then
    deadline=$(( $(now) + WAIT ))
    while have ip && [ "$(addresses)" = none ] && [ "$(now)" -lt "$deadline" ]; do
        sleep 2
    done
    REASON="not tried"
    while :; do
        BODY=$(event_json)
        post_once
        rc=$?
        if [ $rc -eq 0 ]; then status=posted; break; fi
        [ $rc -eq 2 ] || [ "$(now)" -ge "$deadline" ] && break
        sleep 3
    done
    [ "$status" = posted ] || status="not posted: $REASON"
fi

line="peagent-firstboot: complete deployment=${DEPLOYMENT_ID:-none} hostname=$host machine-id=${mid:-none}"
line="$line ssh=$(fingerprint) addresses=$(addresses) commands=$commands status=$status"
echo "$line"
if [ -n "${PEAGENT_FIRSTBOOT_CONSOLES+set}" ]; then
    for c in $PEAGENT_FIRSTBOOT_CONSOLES; do
        { printf '\r\n%s\r\n' "$line" >>"$c"; } 2>/dev/null
    done
else
    { printf '\r\n%s\r\n' "$line" >/dev/ttyS0; } 2>/dev/null
    if ! grep -qw ttyS0 /sys/class/tty/console/active 2>/dev/null; then
        { printf '\r\n%s\r\n' "$line" >/dev/console; } 2>/dev/null
    fi
fi

# Once: the env file holds the token, and a report on every boot would be noise.
rm -f "$ENV_FILE" "$R/etc/systemd/system/multi-user.target.wants/peagent-firstboot.service" \
    "$R/etc/systemd/system/multi-user.target.wants/peagent-ssh-keygen.service"
exit 0
"""

FIRSTBOOT_UNIT = f"""[Unit]
Description=peagent: report the deployment complete (first boot only)
Wants=network-online.target
After=network-online.target {KEYGEN_UNIT} sshd-keygen.target ssh.service sshd.service
ConditionPathExists=/{ENV_PATH}

[Service]
Type=oneshot
ExecStart=/{SCRIPT_PATH}
TimeoutStartSec=5min

[Install]
WantedBy=multi-user.target
"""

KEYGEN_UNIT_TEXT = f"""[Unit]
Description=peagent: make the SSH host keys the deployment removed
Before=ssh.service sshd.service
After=sshd-keygen.target

[Service]
Type=oneshot
ExecStart=/{SCRIPT_PATH} keys

[Install]
WantedBy=multi-user.target
"""

_KEY = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def env_text(env: dict[str, str]) -> str:
    """``KEY='value'`` lines that ``.`` reads back verbatim (single quotes; a ``'`` as ``'\\''``)."""
    lines = []
    for key, value in env.items():
        if not _KEY.match(key):
            raise TaskError("firstboot_env", "upper-case shell variable names", describe(key))
        if "\0" in value:
            raise TaskError(f"firstboot_env.{key}", "a value without NUL bytes", "a NUL byte")
        lines.append(f"{key}='" + value.replace("'", "'\\''") + "'")
    return "".join(line + "\n" for line in lines)


def files(env: dict[str, str], *, ssh_server: bool, commands: tuple[str, ...] = ()) -> dict[str, tuple[bytes, int]]:
    """{relpath: (content, mode)} of the program, its units, the env file and the task's first-boot commands
    (run once by sh, stopping at the first that fails; the wants links are apart)."""
    out = {
        SCRIPT_PATH: (SCRIPT.encode(), 0o755),
        f"etc/systemd/system/{UNIT}": (FIRSTBOOT_UNIT.encode(), 0o644),
        ENV_PATH: (env_text(env).encode(), 0o600),
    }
    if commands:
        out[COMMANDS_PATH] = (("set -e\n" + "".join(f"{c}\n" for c in commands)).encode(), 0o600)
    if ssh_server:
        out[f"etc/systemd/system/{KEYGEN_UNIT}"] = (KEYGEN_UNIT_TEXT.encode(), 0o644)
    return out
