#!/bin/bash
# Runs etcdctl 3.4 against ENDPOINT (default 127.0.0.1:23790) on a FRESH, EMPTY single-member store.
# Each command line is echoed as "$ etcdctl ..." followed by its stdout+stderr and "[rc=N]".
# etcdctl's client-side retry warnings (JSON lines with "level":"warn") are filtered out.
EP=${ENDPOINT:-127.0.0.1:23790}
export ETCDCTL_API=3
c(){ echo "\$ etcdctl $*"; etcdctl --endpoints "$EP" "$@" 2>&1 | grep -v '"level":"warn"'; echo "[rc=${PIPESTATUS[0]}]"; }
t(){ echo "\$ etcdctl txn $1 <<< $(printf %q "$2")"; printf '%b' "$2" | etcdctl --endpoints "$EP" txn $1 2>&1 | grep -v '"level":"warn"'; echo "[rc=${PIPESTATUS[1]}]"; }
c get nothing -w json
c put foo bar
c put foo bar2 --prev-kv
c put foo1 v1
c put foo2 v2
c put goo v3
c get foo -w json
c get --prefix foo
c get foo foo2
c get --from-key foo1
c get --prefix foo --limit 2 -w json
c get --prefix foo --keys-only
c get --prefix foo --sort-by=KEY --order=DESCEND
c get --prefix foo --sort-by=CREATE --order=DESCEND --limit 2 -w json
c get foo --rev 2 -w json
c get foo --rev 99
c get "" 
c put "" x
c del nothing
c get nothing -w json
c del foo1 --prev-kv
c del foo --prefix -w json
c put foo again
c get foo -w json
t "" 'value("goo") = "v3"\n\nput a 1\nput b 2\n\nput a fail\n\n'
c get a -w json
t "-w json" 'value("goo") = "nomatch"\n\nput a x\n\nget a\nget b\n\n'
c get x -w json
t "" '\nput d 1\nput d 2\n\n\n'
c compaction 3
c compaction 3
c compaction 999
c get foo --rev 2
c endpoint hashkv -w json
c endpoint health -w json
c endpoint status -w json
c member list -w json
c member list
