#!/bin/sh
# A three-process ring on loopback (15 vnodes, R=3, mTLS), for trying the
# KV by hand:  sh conf/specter/local-ring.sh  then
#   specter kv --rpc tcp://127.0.0.1:11181 --data ./specter-demo/n1 put a b
# Stop with Ctrl-C: every process hands its keys on and exits.
set -e
BIN=${BIN:-.venv/bin}
DIR=${DIR:-./specter-demo}
mkdir -p "$DIR"
[ -f "$DIR/tls/ca.crt" ] || "$BIN/specter" pki init "$DIR/tls" --node 127.0.0.1
trap 'kill $P0 $P1 $P2 2>/dev/null; wait' INT TERM
"$BIN/specter" server --data "$DIR/n0" --cert "$DIR/tls" --listen-tcp 127.0.0.1:7440 \
    --listen-rpc tcp://127.0.0.1:11180 --listen-internal tcp://127.0.0.1:9990 & P0=$!
sleep 2
"$BIN/specter" server --data "$DIR/n1" --cert "$DIR/tls" --listen-tcp 127.0.0.1:7441 --join 127.0.0.1:7440 \
    --listen-rpc tcp://127.0.0.1:11181 --listen-internal tcp://127.0.0.1:9991 & P1=$!
"$BIN/specter" server --data "$DIR/n2" --cert "$DIR/tls" --listen-tcp 127.0.0.1:7442 --join 127.0.0.1:7440 \
    --listen-rpc tcp://127.0.0.1:11182 --listen-internal tcp://127.0.0.1:9992 & P2=$!
echo "ring up: RPC on tcp://127.0.0.1:11180-11182, health on http://127.0.0.1:9990-9992/readyz"
wait
