#!/usr/bin/env bash
# A three-member ZooKeeper ensemble on loopback ports, from Debian's `zookeeper` package
# (apt-get install zookeeper), for trying a strom cluster on a real quorum.
#
# Usage: bash scripts/zk-ensemble.sh start|stop|status [DIR]
#   DIR (default ./zk-ensemble) holds each member's zoo.cfg, data, myid, log and pid.
#   Client ports 2181, 2182, 2183; peer ports 2881-2883; election ports 3881-3883.
#   Brokers then use --override zookeeper.connect=127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183/strom
# Stop one member (kill "$(cat DIR/2/pid)") and the cluster goes on; stop two and controller
# work waits for the quorum to return (docs/reliability.md).
set -euo pipefail
action="${1:-status}"
dir="${2:-zk-ensemble}"
cp="/usr/share/java/zookeeper.jar"
[ -e /usr/share/java/slf4j-simple.jar ] && cp="$cp:/usr/share/java/slf4j-simple.jar"

start() {
    command -v java >/dev/null || { echo "java is not installed (apt-get install zookeeper)"; exit 1; }
    [ -e /usr/share/java/zookeeper.jar ] || { echo "apt-get install zookeeper"; exit 1; }
    for i in 1 2 3; do
        mkdir -p "$dir/$i/data"
        echo "$i" > "$dir/$i/data/myid"
        cat > "$dir/$i/zoo.cfg" <<CFG
tickTime=500
initLimit=10
syncLimit=5
dataDir=$(cd "$dir/$i/data" && pwd)
clientPort=218$i
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok,stat,mntr
server.1=127.0.0.1:2881:3881
server.2=127.0.0.1:2882:3882
server.3=127.0.0.1:2883:3883
CFG
        nohup java -Xmx256m -cp "$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain \
            "$dir/$i/zoo.cfg" > "$dir/$i/zookeeper.log" 2>&1 &
        echo $! > "$dir/$i/pid"
    done
    for _ in $(seq 1 60); do
        n=0
        for i in 1 2 3; do
            if (exec 3<>/dev/tcp/127.0.0.1/218$i && printf srvr >&3 && grep -q "Mode:" <&3) 2>/dev/null; then
                n=$((n + 1))
            fi
        done
        [ "$n" -eq 3 ] && { echo "ensemble serving on 127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183"; return; }
        sleep 1
    done
    echo "the ensemble did not form in 60 s; see $dir/*/zookeeper.log"; exit 1
}

stop() {
    for i in 1 2 3; do
        [ -e "$dir/$i/pid" ] && kill "$(cat "$dir/$i/pid")" 2>/dev/null || true
        rm -f "$dir/$i/pid"
    done
}

status() {
    for i in 1 2 3; do
        mode=$( (exec 3<>/dev/tcp/127.0.0.1/218$i && printf srvr >&3 && grep "Mode:" <&3) 2>/dev/null || echo "down")
        echo "member $i (127.0.0.1:218$i): $mode"
    done
}

case "$action" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status [DIR]"; exit 2 ;;
esac
