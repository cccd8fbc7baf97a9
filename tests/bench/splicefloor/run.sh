#!/bin/sh
# Usage: run.sh BEDID [ROUNDS] [MB]  (as root, while `go run . -hold plain`
# holds the bench bed whose namespaces are BEDID-cli, BEDID-gw, BEDID-srv).
# Prints one line per round: the kernel path (DNAT + forwarding, IPv4) and
# trivial relays on the gateway (IPv6 in, IPv4 out), MB/s.
set -eu
id=$1 rounds=${2:-5} mb=${3:-2000}
cd "$(dirname "$0")"
go build -o /tmp/splicefloor .
f=/tmp/splicefloor
ip netns exec "$id-gw" ip6tables -I INPUT -p tcp --dport 9001:9004 -j ACCEPT
ip netns exec "$id-gw" iptables -t nat -A PREROUTING -d 192.0.2.1 -p tcp --dport 9000 -j DNAT --to-destination 198.51.100.20:9000
ip netns exec "$id-srv" $f srv 198.51.100.20:9000 & pids=$!
GOMAXPROCS=1 ip netns exec "$id-gw" $f relay '[2001:db8:1::1]:9001' 198.51.100.20:9000 & pids="$pids $!"
GOMAXPROCS=2 ip netns exec "$id-gw" $f relay '[2001:db8:1::1]:9002' 198.51.100.20:9000 & pids="$pids $!"
GOMAXPROCS=1 ip netns exec "$id-gw" $f -sockbuf 4194304 relay '[2001:db8:1::1]:9003' 198.51.100.20:9000 & pids="$pids $!"
GOMAXPROCS=1 ip netns exec "$id-gw" $f -raw relay '[2001:db8:1::1]:9004' 198.51.100.20:9000 & pids="$pids $!"
trap 'kill $pids' EXIT
sleep 1
echo "round kernel relay-p1 relay-p2 relay-sockbuf4M relay-rawsplice"
for r in $(seq "$rounds"); do
	line=$r
	for t in 192.0.2.1:9000 '[2001:db8:1::1]:9001' '[2001:db8:1::1]:9002' '[2001:db8:1::1]:9003' '[2001:db8:1::1]:9004'; do
		line="$line $(ip netns exec "$id-cli" $f cli "$t" "$mb")"
	done
	echo "$line"
done
