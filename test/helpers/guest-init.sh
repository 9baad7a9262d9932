#!/bin/busybox sh
# The guest's /init for TAP sandbox tests: busybox sh, run as PID 1 of a busybox-static
# initramfs. It configures eth0 from the kernel's `ip=ADDR::GW:MASK::eth0:off:DNS` argument
# (Debian's cloud kernel has no IP_PNP, so the script parses it), then runs the probes given
# as tn.probe=P1|P2|... and prints one `MARK ...` line per probe on the serial console, then
# powers off. Adapted from ../shared/tools/microvm (the recipe that found the traps):
# busybox-static's `wget -T` segfaults, so every wget runs under `timeout`.
#
# Probes (no spaces: they travel on the kernel command line):
#   dns:NAME              MARK dns NAME ADDR|none     (through the DNS server of ip=)
#   get:URL               MARK get URL ok BODY | MARK get URL fail
#   tcp:HOST:PORT         MARK tcp HOST:PORT ok|fail  (a TCP connect, 2 s at most)
#   send:HOST:PORT:KB     MARK send HOST:PORT KB T0 T1 (KB KiB written to a TCP sink; uptimes)
#   spoofip:ADDR          eth0 gets ADDR instead (same prefix), routes again
#   spoofmac:MAC          eth0 gets MAC instead
#   restore               eth0's own MAC and address again
#   loop:URL              forever: MARK tick ok|fail UPTIME every 0.2 s (for removal tests)
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_mmio failover net_failover virtio_net; do insmod /lib/modules/$m.ko 2>/dev/null; done
for i in $(seq 300); do [ -e /sys/class/net/eth0 ] && break; sleep 0.01; done
ipa=""; probes=""
for a in $(cat /proc/cmdline); do case $a in ip=*) ipa=${a#ip=};; tn.probe=*) probes=${a#tn.probe=};; esac; done
IFS=: read addr _ gw mask _ dev _ dns <<EOF2
$ipa
EOF2
bits=0; for o in $(echo $mask | tr . ' '); do while [ $o -gt 0 ]; do bits=$((bits + (o & 1))); o=$((o >> 1)); done; done
mac0=$(cat /sys/class/net/eth0/address)
routes() { ip route add $gw dev eth0 2>/dev/null; ip route add default via $gw 2>/dev/null; }
ip link set lo up; ip addr add $addr/$bits dev eth0; ip link set eth0 up; routes
[ -n "$dns" ] && echo "nameserver $dns" > /etc/resolv.conf
up() { cut -d' ' -f1 /proc/uptime; }
echo "MARK net-up $(up)"
IFS='|'; for p in $probes; do
  IFS=' '
  case $p in
    dns:*) n=${p#dns:}; a=$(nslookup -type=a $n $dns 2>/dev/null | awk '/^Address/ && !/#53/ && !/:53$/ {x=$NF} END {print x}'); echo "MARK dns $n ${a:-none}";;
    get:*) u=${p#get:}; if out=$(timeout 3 wget -q -O - "$u" 2>/dev/null); then echo "MARK get $u ok $out"; else echo "MARK get $u fail"; fi;;
    tcp:*) t=${p#tcp:}; if timeout 3 nc -w 2 ${t%:*} ${t##*:} </dev/null >/dev/null 2>&1; then echo "MARK tcp $t ok"; else echo "MARK tcp $t fail"; fi;;
    send:*) t=${p#send:}; kb=${t##*:}; hp=${t%:*}; t0=$(up); dd if=/dev/zero bs=1024 count=$kb 2>/dev/null | timeout 60 nc -w 3 ${hp%:*} ${hp##*:} >/dev/null 2>&1; echo "MARK send $hp $kb $t0 $(up)";;
    spoofip:*) ip addr flush dev eth0; ip addr add ${p#spoofip:}/$bits dev eth0; routes; echo "MARK spoofip ${p#spoofip:}";;
    spoofmac:*) ip link set eth0 down; ip link set eth0 address ${p#spoofmac:}; ip link set eth0 up; routes; echo "MARK spoofmac ${p#spoofmac:}";;
    restore) ip link set eth0 down; ip link set eth0 address $mac0; ip addr flush dev eth0; ip addr add $addr/$bits dev eth0; ip link set eth0 up; routes; echo "MARK restore";;
    loop:*) u=${p#loop:}; while :; do if timeout 1 wget -q -O - "$u" >/dev/null 2>&1; then echo "MARK tick ok $(up)"; else echo "MARK tick fail $(up)"; fi; sleep 0.2; done;;
  esac
done
echo "MARK done $(up)"
poweroff -f
