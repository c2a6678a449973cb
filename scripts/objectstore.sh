#!/usr/bin/env bash
# A real S3 object store for the tests and benchmarks: a one-node Ceph cluster from Debian's
# packages (a monitor, one BlueStore OSD on a sparse file, the RADOS Gateway), on loopback.
#
#   scripts/objectstore.sh start DIR RGW_PORT [MON_PORT]   # prints the S3 endpoint URL
#   scripts/objectstore.sh stop DIR
#
# Access key "portal", secret key "portal-test-secret" (a test cluster on loopback only).
# Installs ceph-mon, ceph-osd and radosgw when they are missing (apt, as root).
set -euo pipefail

cmd="${1:?start or stop}"; dir="${2:?a work folder}"
stop() {
  for name in rgw osd mon; do
    if [ -f "$dir/$name.pid" ]; then
      kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
    fi
  done
  for name in rgw osd mon; do
    if [ -f "$dir/$name.pid" ]; then
      pid="$(cat "$dir/$name.pid")"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
  done
}
if [ "$cmd" = stop ]; then stop; exit 0; fi

rgw_port="${3:?the S3 port}"; mon_port="${4:-$((rgw_port + 1))}"
if ! command -v radosgw >/dev/null || ! command -v ceph-osd >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    ceph-mon ceph-osd radosgw ceph-common uuid-runtime >/dev/null
fi
mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
rm -rf "${dir:?}"/{mon,osd,run,log}; mkdir -p "$dir"/{mon,osd,run,log}
fsid="$(uuidgen)"
conf="$dir/ceph.conf"
cat > "$conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
# a test cluster on loopback: no cephx, one copy of everything, small placement groups
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
ms cluster mode = crc
ms service mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms bind ipv6 = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
mon data = $dir/mon
osd data = $dir/osd
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 64424509440
bluestore fsck on mkfs = false
bluestore cache size = 268435456
osd memory target = 939524096
osd max object name len = 460
osd max object namespace len = 64

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
EOF
rm -f "$dir/monmap"
monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap"
ceph-mon -c "$conf" -i a -f >/dev/null 2>&1 & echo $! > "$dir/mon.pid"
osd_id="$(timeout 60 ceph -c "$conf" --connect-timeout 30 osd create)"
ceph-osd -c "$conf" -i "$osd_id" --mkfs >/dev/null 2>&1
ceph-osd -c "$conf" -i "$osd_id" -f >/dev/null 2>&1 & echo $! > "$dir/osd.pid"
radosgw -c "$conf" -n client.rgw -f >/dev/null 2>&1 & echo $! > "$dir/rgw.pid"
# the gateway makes its pools on first start: it listens once they are there
for _ in $(seq 1 240); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$rgw_port") 2>/dev/null; then break; fi
  if ! kill -0 "$(cat "$dir/rgw.pid")" 2>/dev/null; then
    echo "radosgw exited; see $dir/log" >&2; stop; exit 1
  fi
  sleep 0.25
done
timeout 60 radosgw-admin -c "$conf" user create --uid=portal --display-name=portal \
  --access-key=portal --secret-key=portal-test-secret >/dev/null
echo "http://127.0.0.1:$rgw_port"
