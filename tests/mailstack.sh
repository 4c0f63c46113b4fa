#!/bin/bash
# The test mail system: a loopback-only Postfix (SMTP in) delivering over LMTP (unix socket) into
# Dovecot (Maildir, IMAP out), all state in DIR. Used by the integration tests (tests/smtp.rs).
# Postfix offers STARTTLS with a certificate for 127.0.0.1 from a test CA written to DIR/ca.pem.
# Beside SMTP_PORT it listens on SMTP_PORT+1 (submission: STARTTLS and login required) and
# SMTP_PORT+2 (implicit TLS, login required); logins are the Dovecot users, checked by Dovecot.
# Mail for gone@example.test is accepted by Postfix, refused by Dovecot (no such user) and
# bounced with a real DSN (5.1.1) to its sender: a server that accepts first and bounces later.
# Usage:  tests/mailstack.sh up   DIR SMTP_PORT IMAP_PORT user1 [user2 ...]
#             (users are local parts @example.test, password "secret")
#         tests/mailstack.sh down DIR   (graceful)   |   tests/mailstack.sh kill DIR   (instant)
#         tests/mailstack.sh restart-imap DIR   (Dovecot only: SIGKILL, then started again)
#         tests/mailstack.sh stop-imap DIR | start-imap DIR   (Dovecot only: SIGKILL | start)
#         tests/mailstack.sh stop-smtp DIR SMTP_PORT | start-smtp DIR   (Postfix only)
#         NO_IDLE=1 tests/mailstack.sh up ...   (Dovecot does not announce IDLE: clients must poll)
# Needs root (the Postfix master starts as root) and the Debian packages postfix, dovecot-imapd
# and dovecot-lmtpd (.ci/run installs them). No systemd, no syslog; nothing outside DIR is written.
set -eu
cmd=$1 D=$2

if [ "$cmd" = up ]; then
  SMTP_PORT=$3 IMAP_PORT=$4; shift 4
  mkdir -p "$D"/pf/conf "$D"/pf/queue "$D"/pf/data "$D"/dv/run "$D"/mail
  chmod 755 "$D"                     # mail uid and postfix's lmtp client must traverse DIR (mktemp -d gives 0700)
  chown mail:mail "$D"/mail
  chown postfix "$D"/pf/data
  # A test CA and a certificate for 127.0.0.1 signed by it, for STARTTLS (clients trust ca.pem).
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=nurture-test-ca -keyout "$D"/pf/ca.key -out "$D"/ca.pem 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
    -keyout "$D"/pf/key.pem -out "$D"/pf/req.pem 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$D"/pf/ext.cnf
  openssl x509 -req -in "$D"/pf/req.pem -CA "$D"/ca.pem -CAkey "$D"/pf/ca.key -CAcreateserial \
    -days 2 -extfile "$D"/pf/ext.cnf -out "$D"/pf/cert.pem 2>/dev/null
  : > "$D"/dv/users
  echo "gone@example.test OK" > "$D"/pf/mailboxes
  for u in "$@"; do
    echo "$u@example.test:{PLAIN}secret" >> "$D"/dv/users
    echo "$u@example.test OK" >> "$D"/pf/mailboxes
  done

  cat > "$D"/dv/dovecot.conf <<EOF
base_dir = $D/dv/run
state_dir = $D/dv/run
log_path = $D/dv/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
first_valid_uid = 8
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $D/dv/users
}
userdb {
  driver = static
  args = uid=mail gid=mail home=$D/mail/%d/%n
}
service imap-login {
  inet_listener imap {
    port = $IMAP_PORT
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
EOF
  if [ "${NO_IDLE:-}" = 1 ]; then
    echo "imap_capability = IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE" >> "$D"/dv/dovecot.conf
  fi

  cat > "$D"/pf/conf/main.cf <<EOF
compatibility_level = 3.6
queue_directory = $D/pf/queue
data_directory = $D/pf/data
maillog_file = $D/pf/postfix.log
maillog_file_prefixes = $D
myhostname = mail.example.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
virtual_mailbox_domains = example.test
# Unknown users are refused at RCPT (550 5.1.1), as a real provider does, rather than bounced.
virtual_mailbox_maps = texthash:$D/pf/mailboxes
# STARTTLS offered, not required.
smtpd_tls_security_level = may
smtpd_tls_cert_file = $D/pf/cert.pem
smtpd_tls_key_file = $D/pf/key.pem
smtpd_tls_received_header = yes
virtual_transport = lmtp:unix:$D/dv/run/lmtp
# Logins (on the submission and implicit-TLS ports) are checked by Dovecot.
smtpd_sasl_type = dovecot
smtpd_sasl_path = $D/dv/run/auth-postfix
smtpd_sasl_authenticated_header = yes
EOF

  cat > "$D"/pf/conf/master.cf <<EOF
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
127.0.0.1:$((SMTP_PORT + 1)) inet n - n - - smtpd -o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes -o smtpd_client_restrictions=permit_sasl_authenticated,reject
127.0.0.1:$((SMTP_PORT + 2)) inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_sasl_auth_enable=yes -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup    unix n - n 60 1 pickup
cleanup   unix n - n -  0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n -  - trivial-rewrite
bounce    unix - - n -  0 bounce
defer     unix - - n -  0 bounce
trace     unix - - n -  0 bounce
verify    unix - - n -  1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n -  - proxymap
showq     unix n - n -  - showq
error     unix - - n -  - error
retry     unix - - n -  - error
discard   unix - - n -  - discard
smtp      unix - - n -  - smtp
lmtp      unix - - n -  - lmtp
anvil     unix - - n -  1 anvil
tlsmgr    unix - - n 1000? 1 tlsmgr
scache    unix - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF

  touch -d "-1 min" "$D"/pf/conf/main.cf "$D"/pf/conf/master.cf "$D"/pf/*.pem  # postfix start stalls ~2 s if main.cf is < 2 s old
  rm -f "$D"/dv/run/master.pid                                     # stale pid (zombie not yet reaped) blocks a restart
  dovecot -c "$D"/dv/dovecot.conf </dev/null >/dev/null 2>>"$D"/dv/start.log   # dovecot keeps fd 2 open: never leave it on a pipe
  postfix -c "$D"/pf/conf start </dev/null >/dev/null 2>>"$D"/pf/start.log
  # wait until both listeners answer (max ~10 s)
  for i in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$SMTP_PORT && head -c3 <&3 | grep -q 220) 2>/dev/null &&
       (exec 3<>/dev/tcp/127.0.0.1/$IMAP_PORT && head -c4 <&3 | grep -q '\* OK') 2>/dev/null; then
      exit 0
    fi
    sleep 0.1
  done
  echo "mailstack: not up; see $D/dv/dovecot.log $D/pf/postfix.log $D/pf/start.log" >&2; exit 1
fi

if [ "$cmd" = restart-imap ] || [ "$cmd" = stop-imap ]; then
  p=$(sed -n '1{s/ //g;p}' "$D"/dv/run/master.pid)
  kill -KILL -- -"$p"
  for i in $(seq 500); do ps -o stat= -p "$p" 2>/dev/null | grep -qv '^Z' || break; sleep 0.01; done
  rm -f "$D"/dv/run/master.pid
  [ "$cmd" = stop-imap ] && exit 0
  dovecot -c "$D"/dv/dovecot.conf </dev/null >/dev/null 2>>"$D"/dv/start.log
  exit 0
fi

if [ "$cmd" = stop-smtp ]; then
  postfix -c "$D"/pf/conf stop </dev/null >/dev/null 2>>"$D"/pf/start.log
  for i in $(seq 500); do (exec 3<>/dev/tcp/127.0.0.1/"$3") 2>/dev/null || exit 0; sleep 0.01; done
  echo "mailstack: Postfix still listens after 5 s" >&2; exit 1
fi

if [ "$cmd" = start-smtp ]; then
  postfix -c "$D"/pf/conf start </dev/null >/dev/null 2>>"$D"/pf/start.log
  exit 0
fi

if [ "$cmd" = start-imap ]; then
  dovecot -c "$D"/dv/dovecot.conf </dev/null >/dev/null 2>>"$D"/dv/start.log
  exit 0
fi

if [ "$cmd" = down ] || [ "$cmd" = kill ]; then      # down: graceful SIGTERM (~1.1 s), kill: SIGKILL (~20 ms)
  sig=TERM; [ "$cmd" = kill ] && sig=KILL
  pg=""
  for f in "$D"/pf/queue/pid/master.pid "$D"/dv/run/master.pid; do
    p=$(sed -n '1{s/ //g;p}' "$f" 2>/dev/null) && [ -n "$p" ] || continue
    if [ $sig = TERM ]; then kill -TERM "$p"; else kill -KILL -- -"$p"; fi 2>/dev/null && pg="$pg $p"
  done
  for i in $(seq 500); do         # both masters lead their own process group; wait until no live member is left
    ps -eo pgid=,stat= | awk -v g="$pg" 'BEGIN{split(g,a," ");for(i in a)w[a[i]]=1} ($1 in w) && $2 !~ /^Z/{f=1} END{exit !f}' || exit 0
    sleep 0.01
  done
  echo "mailstack: still running after 5 s" >&2; exit 1
fi
echo "usage: $0 up DIR SMTP_PORT IMAP_PORT users... | down DIR | kill DIR | restart-imap DIR | stop-imap DIR | start-imap DIR | stop-smtp DIR SMTP_PORT | start-smtp DIR" >&2; exit 2
