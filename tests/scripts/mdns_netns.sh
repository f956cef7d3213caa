#!/bin/sh
# Run by tests/mdns.rs inside `unshare -rn` (a user and network namespace the
# test makes): two network namespaces joined by a veth link, a `fieldsync
# serve --mdns --live` in each, and a wait (at most 40 s) for A's record to
# reach B, which was never told A's address. Prints `found=yes|no`.
set -e
BIN=$1; A=$2; B=$3
ip link set lo up
ip link add va type veth peer name vb
ip addr add 10.77.0.1/24 dev va
ip link set va up
unshare -n sleep 60 &
NS=$!
sleep 0.2
ip link set vb netns $NS
nsenter -t $NS -n sh -c 'ip link set lo up; ip addr add 10.77.0.2/24 dev vb; ip link set vb up; ip route add 224.0.0.0/4 dev vb'
ip route add 224.0.0.0/4 dev va
$BIN --store $A serve --listen /ip4/10.77.0.1/tcp/0 --mdns --live >/dev/null 2>$A.err &
SA=$!
nsenter -t $NS -n $BIN --store $B serve --listen /ip4/10.77.0.2/tcp/0 --mdns --live >/dev/null 2>$B.err &
SB=$!
found=no
end=$(( $(date +%s) + 40 ))
while [ "$(date +%s)" -lt "$end" ]; do
  if $BIN --store $B get customer m1 2>/dev/null; then found=yes; break; fi
  sleep 0.2
done
$BIN --store $B id
$BIN --store $A id
kill $SA $SB $NS
echo "found=$found"
