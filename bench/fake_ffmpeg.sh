#!/bin/sh
# fake_ffmpeg.sh ID FIFO PERIOD [ignored...]
#
# A stand-in for one FFmpeg process in the benchmarks (POSIX sh; runs under dash).
#
#   ID      the stream / program name, echoed back so the bench knows who started
#   FIFO    a named pipe the bench holds open for reading
#   PERIOD  seconds between two progress reports (whole or fractional)
#   ...     anything else is ignored (the agent's "{progress}" -> "pipe:1", and the
#           "gen=K" marker reload.py edits to change a stream's command)
#
# First thing it does: write "ID PID\n" into FIFO.  One short write to a pipe is
# atomic (< PIPE_BUF), so concurrent children never interleave, and the bench
# learns the instant a (re)spawned child is running and which PID it has ($$ is
# the shell itself, i.e. the process the supervisor spawned and the leader of
# its process group).  Opening FIFO blocks until a reader exists: the bench
# opens it before starting anything.
#
# Then, forever: one FFmpeg "-progress pipe:1" style block on stdout with growing
# counters (frame, total_size, out_time_us), then sleep PERIOD.  sleep gets its
# own stdin/stdout/stderr so that if only the shell is killed, an orphaned sleep
# does not keep the supervisor's stdout/stderr pipes open (real FFmpeg is one
# process: its death closes the pipes at once).  The benches kill the whole
# process group anyway.
ID=$1
FIFO=$2
PERIOD=$3
printf '%s %s\n' "$ID" "$$" > "$FIFO"
n=0
while :; do
    n=$((n + 1))
    printf 'frame=%d\nfps=25.00\ntotal_size=%d\nout_time_us=%d\nprogress=continue\n' \
        $((n * 25)) $((n * 48128)) $((n * 1000000))
    # shellcheck disable=SC2217  # on purpose: see above, sleep must not hold our pipes
    sleep "$PERIOD" </dev/null >/dev/null 2>&1
done
