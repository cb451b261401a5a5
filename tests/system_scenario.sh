#!/bin/sh
# khib's hibernation scenario in the Debian system of tests/system.py, a systemd service
# (khib-scenario.service) its kernel command line starts. khib.scenario=report: say how
# the boot went, power off. Otherwise: a file on ext4 and a user process holding 32 MiB
# and a token; `systemctl hibernate`; once resumed, check them, say how the system is,
# power off cleanly. Every line it says starts with SCENARIO.
say() { echo "SCENARIO $*"; }
state() { systemctl is-system-running --wait; }
journal() { journalctl -b -o cat | grep -c "$1"; }

if grep -q 'khib\.scenario=report' /proc/cmdline; then
	say "booted state=$(state) cpus=$(cat /sys/devices/system/cpu/online) failed=$(systemctl --failed --no-legend --plain | cut -d ' ' -f 1 | tr '\n' ,)"
	say "journal khib=$(journal 'khib')"
	systemctl poweroff
	exit 0
fi

token=$(cat /proc/sys/kernel/random/uuid)
mkdir -p /var/lib/khib-scenario
echo "written by khib-scenario.service: $token" > /var/lib/khib-scenario/written
sync
setpriv --reuid=nobody --regid=nogroup --clear-groups \
	python3 /usr/local/lib/khib-scenario/holder.py "$token" > /run/holder.out 2>&1 &
holder=$!
for _ in $(seq 120); do grep -q '^HOLDER ' /run/holder.out && break; sleep 1; done
say "$(cat /run/holder.out)"
say "ready state=$(state) token=$token failed=$(systemctl --failed --no-legend --plain | cut -d ' ' -f 1 | tr '\n' ,)"
say "hibernating"
systemctl hibernate || say "systemctl hibernate exited $?"
for _ in $(seq 3600); do
	[ "$(journal 'khib: resumed from hibernation')" -gt 0 ] && break
	[ "$(systemctl show -p Result --value systemd-hibernate.service)" != success ] && break
	sleep 1
done
while [ -n "$(systemctl list-jobs --no-legend)" ]; do sleep 1; done
say "hibernate result=$(systemctl show -p Result --value systemd-hibernate.service)"
kill -USR1 "$holder"
for _ in $(seq 30); do grep -q '^HOLDER-AFTER' /run/holder.out && break; sleep 1; done
say "$(grep '^HOLDER-AFTER' /run/holder.out)"
say "file $(cat /var/lib/khib-scenario/written)"
say "after state=$(state) cpus=$(cat /sys/devices/system/cpu/online) failed=$(systemctl --failed --no-legend --plain | cut -d ' ' -f 1 | tr '\n' ,)"
say "journal hibernating=$(journal 'khib: hibernating to') resumed=$(journal 'khib: resumed from hibernation') hooks=$(journal 'sleep hook: pre hibernate'),$(journal 'sleep hook: post hibernate') boot_id=$(cat /proc/sys/kernel/random/boot_id)"
systemctl poweroff
