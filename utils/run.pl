#!/usr/bin/env perl
# utils/run.pl: run a command, or an array of jobs, on this machine; the
# interface of Kaldi's run.pl, so cmd.sh can swap it for utils/slurm.pl.
#
#   utils/run.pl [options] [JOB=1:N] LOGFILE COMMAND...
#   utils/run.pl JOB=1:4 exp/log/infer.JOB.log tsekit infer --job JOB --nj 4
#
# Every occurrence of the job variable's name (JOB here; any NAME=a:b works) in
# LOGFILE and in the command is replaced by the job's index. The jobs run in
# parallel, at most --max-jobs-run K at a time (default: the number of CPUs).
# Each job runs `bash -c COMMAND` with stdin from /dev/null and stdout + stderr
# appended to its log, which starts with the command and "# Started at ..."
# and ends with "# Accounting: time=SECONDS threads=N" and "# Ended (code C) at ...".
# Several COMMAND arguments are quoted for bash one by one (bare |, >, && ...
# stay shell syntax); a single argument is run as a shell command line.
#
# Options --mem, --gpu, --time, --config and any other `--name value` are
# accepted and ignored (they are for utils/slurm.pl); --num-threads N is only
# shown in the accounting line. Exit status 0 when every job succeeded,
# otherwise 1 with "run.pl: F / N failed, log is in LOG..." on stderr. On
# SIGINT/SIGTERM/SIGHUP the running jobs (their whole process groups) get the
# signal, no new job starts, and run.pl exits with 128 + the signal number.
#
# No orphans: each job is watched by a small process of its own (outside
# run.pl's process group, so that a kill of the launcher's whole group, as a
# scheduler's time limit or the OOM killer does, cannot take the watcher with
# it). When run.pl dies, whatever the signal (SIGKILL included), the watcher
# sees its parent change within 0.1 s and SIGKILLs the job's whole process
# group: the command and everything it started (a training job's data
# workers too). A rerun then never meets a job of the killed run still writing.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use POSIX qw(setpgid :sys_wait_h);
use queue_common qw(parse_command_line command_string substitute_job failure_message timestamp);

my $PROG = 'run.pl';
my %SIGNAL_NUMBER = (HUP => 1, INT => 2, TERM => 15);

$| = 1;
my $job = parse_command_line($PROG, \@ARGV);
my %option = map { $_->[0] => $_->[1] } @{$job->{options}};
my $threads = $option{num_threads} // 1;
my $max_jobs_run = $job->{max_jobs_run} // cpu_count();

my %running;    # pid of the process that runs one job -> job index
my %exit_code;  # job index -> exit code
my $caught;     # name of the signal that stops us

for my $signal (keys %SIGNAL_NUMBER) {
  $SIG{$signal} = sub {
    $caught //= $signal;
    kill $signal, keys %running;
  };
}

for my $index ($job->{first} .. $job->{last}) {
  last if $caught;
  reap_one() while keys %running >= $max_jobs_run;
  last if $caught;
  my $pid = fork // die "$PROG: cannot fork: $!\n";
  if ($pid == 0) {
    exit run_job($index);
  }
  $running{$pid} = $index;
}
reap_one() while %running;

my $total = $job->{last} - $job->{first} + 1;
my @failed_logs = map { log_of($_) } grep { $exit_code{$_} != 0 } sort { $a <=> $b } keys %exit_code;
print STDERR failure_message($PROG, $total, @failed_logs) if @failed_logs;
if ($caught) {
  my $not_started = $total - keys %exit_code;
  print STDERR "$PROG: stopped by SIG$caught; $not_started of $total jobs not started\n";
  exit 128 + $SIGNAL_NUMBER{$caught};
}
exit(@failed_logs ? 1 : 0);

sub cpu_count {
  my $count = `nproc 2> /dev/null`;
  return ($count && $count =~ /^\s*([1-9][0-9]*)/) ? $1 : 1;
}

sub log_of {
  my ($index) = @_;
  return substitute_job($job->{log}, $job->{job_name}, $index);
}

# Wait for one job process; record its exit code.
sub reap_one {
  my $pid = waitpid(-1, 0);
  return if $pid <= 0;
  my $index = delete $running{$pid};
  return unless defined $index;
  $exit_code{$index} = $? == 0 ? 0 : (($? >> 8) || 1);
}

# Runs in the forked process (the job's watcher): write the log header, run the
# command in its own process group (so a signal reaches its whole pipeline),
# wait for it while watching run.pl (see the header), write the footer.
# Returns the exit code for the parent.
sub run_job {
  my ($index) = @_;
  my $launcher = getppid();
  setpgid(0, 0);  # out of run.pl's group: a kill of that group leaves the watcher to clean up
  my $command_pid;
  for my $signal (keys %SIGNAL_NUMBER) {
    $SIG{$signal} = sub { kill $signal, -$command_pid, $command_pid if $command_pid };
  }
  my $log = log_of($index);
  my $command = command_string(map { substitute_job($_, $job->{job_name}, $index) } @{$job->{command}});
  my $log_dir = dirname($log);
  eval { make_path($log_dir) unless -d $log_dir; 1 } or do {
    print STDERR "$PROG: cannot create log directory $log_dir: $@";
    return 1;
  };
  my $log_fh;
  unless (open $log_fh, '>', $log) {
    print STDERR "$PROG: cannot write log file $log: $!\n";
    return 1;
  }
  print $log_fh "# $command\n# Started at ", timestamp(), "\n#\n";
  close $log_fh;

  my $start = time;
  $command_pid = fork // do { print STDERR "$PROG: cannot fork: $!\n"; return 1 };
  if ($command_pid == 0) {
    setpgid(0, 0);
    open STDIN, '<', '/dev/null';
    open STDOUT, '>>', $log or POSIX::_exit(127);
    open STDERR, '>&', \*STDOUT or POSIX::_exit(127);
    { exec 'bash', '-c', $command };
    print STDERR "$PROG: cannot run bash: $!\n";
    POSIX::_exit(127);
  }
  setpgid($command_pid, $command_pid);
  my $status;
  while (1) {
    my $done = waitpid($command_pid, WNOHANG);
    if ($done == $command_pid || $done < 0) { $status = $?; last; }
    kill 'KILL', -$command_pid if getppid() != $launcher;  # run.pl is gone: so is its job
    select(undef, undef, undef, 0.1);
  }
  my $code = $status & 127 ? 128 + ($status & 127) : $status >> 8;
  my $elapsed = time - $start;

  if (open $log_fh, '+<', $log) {
    # The footer starts on a line of its own even when the output did not end with one.
    seek $log_fh, -1, 2;
    read $log_fh, my $last_byte, 1;
    seek $log_fh, 0, 2;
    print $log_fh "\n" if defined $last_byte && $last_byte ne "\n";
    print $log_fh "# Accounting: time=$elapsed threads=$threads\n";
    print $log_fh "# Ended (code $code) at ", timestamp(), "\n";
    close $log_fh;
  }
  return $code;
}
