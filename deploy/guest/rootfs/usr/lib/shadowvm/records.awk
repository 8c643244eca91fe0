# records.awk: the format of the writer's records in /data/records.log, in one place.
#
# A record is one line:  R <seq> <unix_time> <payload> <sum>
#   payload: 48 hex digits derived from seq (a MINSTD sequence seeded by seq)
#   sum:     (seq*1000003 + time*31 + last MINSTD state) mod 2^31-1, as 10 decimal digits
# so any changed, swapped, zeroed or truncated byte in a record is detected without per-byte
# loops (busybox awk under TCG is slow). All arithmetic stays below 2^53 (exact in doubles).
#
# mode=append start=S n=N   print records S..S+N-1 stamped with the current time
# mode=last                 print "<last valid seq> <bytes up to and including it>"
# mode=verify synced=K      print shell assignments: V_records V_bad V_gaps V_missing V_torn
#                           V_first V_last V_missing_synced (K: last seq known to be fdatasync'ed)

function payload(seq,   x, i, out) {
  x = (seq * 7919 + 12345) % 2147483647
  if (x == 0) x = 1
  out = ""
  for (i = 0; i < 6; i++) {
    x = (x * 48271) % 2147483647
    out = out sprintf("%08x", x)
  }
  LASTX = x
  return out
}
function checksum(seq, t, x) { return (seq * 1000003 + t * 31 + x) % 2147483647 }
function record(seq, t,   p) {
  p = payload(seq)
  return sprintf("R %d %d %s %010d", seq, t, p, checksum(seq, t, LASTX))
}
function valid(   p) {
  if (NF != 5 || $1 != "R" || $2 !~ /^[1-9][0-9]*$/ || $3 !~ /^[1-9][0-9]*$/ || $5 !~ /^[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]$/) return 0
  if (length($0) != 2 + length($2) + 1 + length($3) + 1 + 48 + 1 + 10) return 0
  p = payload($2 + 0)
  if ($4 != p) return 0
  # compare as strings: busybox awk reads numbers with a leading 0 as octal
  if ($5 != sprintf("%010d", checksum($2 + 0, $3 + 0, LASTX))) return 0
  return 1
}

BEGIN {
  if (mode == "append") {
    srand()
    now = srand()
    for (i = 0; i < n; i++) print record(start + i, now)
    exit 0
  }
  last = 0; bytes = 0; pos = 0
  records = 0; bad = 0; gaps = 0; missing = 0; first = 0; lastbad = 0
}
mode == "last" {
  pos += length($0) + 1
  if (valid()) { last = $2 + 0; bytes = pos }
}
mode == "verify" {
  if (valid()) {
    s = $2 + 0
    if (records == 0) first = s
    else if (s != last + 1) {
      gaps++
      if (s > last + 1) missing += s - last - 1
    }
    records++
    last = s
    lastbad = 0
  } else {
    bad++
    lastbad = 1
  }
}
END {
  if (mode == "last") {
    printf "%d %d\n", last, bytes
  } else if (mode == "verify") {
    # an invalid final line is a torn tail (a write cut short), not corruption in the middle
    torn = 0
    if (lastbad) { torn = 1; bad-- }
    ms = 0
    if (synced + 0 > last) ms = synced - last
    printf "V_records=%d V_bad=%d V_gaps=%d V_missing=%d V_torn=%d V_first=%d V_last=%d V_missing_synced=%d\n", records, bad, gaps, missing, torn, first, last, ms
  }
}
